"""Request rate limits per principal: a token bucket each, refilled continuously."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

MAX_TRACKED = 100_000  # principals remembered at once; idle full buckets are forgotten first


class RateLimiter:
    """``take(key)`` spends one token of ``key``'s bucket (``burst`` tokens, ``rate``/s).

    Returns 0 when the request may go ahead, else the seconds until a token is free.
    A ``rate`` of 0 turns the limit off.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: Hashable) -> float:
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > MAX_TRACKED:
                    self._forget_idle(now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        full_after = self.burst / self.rate
        for key, (_, at) in list(self._buckets.items()):
            if now - at >= full_after:
                del self._buckets[key]
