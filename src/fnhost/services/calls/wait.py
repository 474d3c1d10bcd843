"""Waiting for a call to end (the server-side long poll), without re-reading the database.

A request registers *before* the call can end, so an end in between still wakes it; the end
recorded in this process hands the ended call to its waiters. Calls run by another replica
are seen by a re-read every ``REREAD_S``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fnhost.services.calls.view import CallLike
from fnhost.statuses import CallStatus

MAX_WAIT_SECONDS = 60.0
REREAD_S = 0.5


@dataclass
class _Waiting:
    ended: threading.Event = field(default_factory=threading.Event)
    count: int = 0
    # the call as this process recorded its end (None: ended elsewhere, or not recorded)
    view: CallLike | None = None


class Waiters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # one wake-up per waiter of the call that ended, not one of every waiter per end
        self._by_call: dict[int, _Waiting] = {}

    @contextmanager
    def waiting_for(self, call_id: int) -> Iterator[_Waiting]:
        """Be woken when this process records the end of ``call_id``."""
        with self._lock:
            waiting = self._by_call.setdefault(call_id, _Waiting())
            waiting.count += 1
        try:
            yield waiting
        finally:
            with self._lock:
                waiting.count -= 1
                if waiting.count == 0:
                    self._by_call.pop(call_id, None)

    def ended(self, call_id: int, view: CallLike | None) -> None:
        with self._lock:
            waiting = self._by_call.get(call_id)
            if waiting is not None:
                waiting.view = view
                waiting.ended.set()

    @staticmethod
    def until_ended(
        call: CallLike, wait_seconds: float, waiting: _Waiting, reread: Callable[[], CallLike]
    ) -> CallLike:
        """``call``, or the call once it has ended, waiting up to ``wait_seconds``."""
        deadline = time.monotonic() + min(max(wait_seconds, 0.0), MAX_WAIT_SECONDS)
        while True:
            remaining = deadline - time.monotonic()
            if call.status != CallStatus.RUNNING or remaining <= 0:
                return call
            # ours end with the event; other replicas' are seen by the periodic re-read
            if not waiting.ended.is_set():
                waiting.ended.wait(min(remaining, REREAD_S))
            elif waiting.view is None:  # ended here but not recorded (an error): poll, do not spin
                time.sleep(min(remaining, REREAD_S))
            if waiting.view is not None:
                return waiting.view
            call = reread()
