"""Live log lines of running calls: a small in-memory publish/subscribe per call id.

The executor's log collector publishes each line as it reads it; the calls service ends a
call's channel after recording the outcome. Subscribers (``GET …/logs/stream``) get the
lines printed so far, then each new line, then the end. Only calls running in *this*
process are live here; the stream endpoint falls back to the database for the others.
Thread-safe: lines arrive on the executor's thread, subscribers read on request threads.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any

# what a subscriber's queue holds
Line = tuple[int, str]  # (ms timestamp, message)


@dataclass(frozen=True)
class Ended:
    status: str


@dataclass
class _Channel:
    lines: list[Line] = field(default_factory=list)
    ended: Ended | None = None
    published: bool = False  # lines or an end came from this process
    subscribers: set[Subscription] = field(default_factory=set)


class Subscription:
    def __init__(self, hub: LiveLogs, call_id: int, channel: _Channel) -> None:
        self.hub = hub
        self.call_id = call_id
        self.channel = channel
        self.queue: queue.SimpleQueue[Line | Ended] = queue.SimpleQueue()

    @property
    def live(self) -> bool:
        """Whether this process runs (or ran) the call, so lines come through here."""
        return self.channel.published

    def get(self, timeout: float) -> Line | Ended | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.hub._unsubscribe(self)


class LiveLogs:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[int, _Channel] = {}

    def publisher(self, call_id: int) -> Any:
        """A callable ``(timestamp_ms, line)`` for the executor's log collector."""

        def publish(timestamp: int, line: str) -> None:
            self.publish(call_id, timestamp, line)

        return publish

    def publish(self, call_id: int, timestamp: int, line: str) -> None:
        with self._lock:
            channel = self._channels.setdefault(call_id, _Channel())
            channel.published = True
            channel.lines.append((timestamp, line))
            for sub in channel.subscribers:
                sub.queue.put((timestamp, line))

    def end(self, call_id: int, status: str) -> None:
        """The call's outcome is recorded: tell subscribers and forget the lines."""
        with self._lock:
            channel = self._channels.pop(call_id, None)
            if channel is None:
                return
            channel.ended = Ended(status)
            channel.published = True
            for sub in channel.subscribers:
                sub.queue.put(channel.ended)

    def subscribe(self, call_id: int) -> Subscription:
        """Lines so far are queued at once, then new ones as they come."""
        with self._lock:
            channel = self._channels.setdefault(call_id, _Channel())
            sub = Subscription(self, call_id, channel)
            for line in channel.lines:
                sub.queue.put(line)
            channel.subscribers.add(sub)
            return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            sub.channel.subscribers.discard(sub)
            # a channel made only by subscribers (call queued, or on another replica) goes
            # with its last subscriber; a running call's channel stays until it ends
            channel = sub.channel
            if not channel.subscribers and not channel.published and self._channels.get(sub.call_id) is channel:
                del self._channels[sub.call_id]

    def active(self) -> int:
        with self._lock:
            return len(self._channels)
