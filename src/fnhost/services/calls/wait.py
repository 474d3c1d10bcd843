"""Waiting for a call to end (the server-side long poll), without re-reading the database.

A request registers *before* the call can end, so an end in between still wakes it; the end
recorded in this process hands the ended call to its waiters. Calls run by another replica
are seen by a re-read every ``REREAD_S``.

Two ways to wait: a worker thread blocks on an event (``until_ended``), or a request on the
event loop awaits a future (``until_ended_async``), which holds no thread while the call
runs: the call endpoint's way, so that a call costs no thread hops while it waits.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from fnhost.services.calls.view import CallLike
from fnhost.statuses import CallStatus

MAX_WAIT_SECONDS = 60.0
REREAD_S = 0.5


@dataclass
class Waiting:
    ended: threading.Event = field(default_factory=threading.Event)
    count: int = 0
    # the call as this process recorded its end (None: ended elsewhere, or not recorded)
    view: CallLike | None = None
    # requests awaiting on event loops, woken there
    futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = field(default_factory=list)


class Waiters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # one wake-up per waiter of the call that ended, not one of every waiter per end
        self._by_call: dict[int, Waiting] = {}

    @contextmanager
    def waiting_for(self, call_id: int) -> Iterator[Waiting]:
        """Be woken when this process records the end of ``call_id``."""
        waiting = self.register(call_id)
        try:
            yield waiting
        finally:
            self.release(call_id, waiting)

    def register(self, call_id: int) -> Waiting:
        """``waiting_for`` in two halves, for a wait that starts on one thread and goes on
        on another: every ``register`` needs its ``release``."""
        with self._lock:
            waiting = self._by_call.setdefault(call_id, Waiting())
            waiting.count += 1
        return waiting

    def release(self, call_id: int, waiting: Waiting) -> None:
        with self._lock:
            waiting.count -= 1
            if waiting.count == 0:
                self._by_call.pop(call_id, None)

    def ended(self, call_id: int, view: CallLike | None) -> None:
        with self._lock:
            waiting = self._by_call.get(call_id)
            if waiting is None:
                return
            waiting.view = view
            waiting.ended.set()
            futures, waiting.futures = waiting.futures, []
        for loop, future in futures:
            loop.call_soon_threadsafe(_wake, future)

    def _future(self, waiting: Waiting) -> asyncio.Future[None] | None:
        """A future woken by the end, or None if it has ended already."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if waiting.ended.is_set():
                return None
            waiting.futures.append((loop, future))
        return future

    @staticmethod
    def until_ended(
        call: CallLike, wait_seconds: float, waiting: Waiting, reread: Callable[[], CallLike]
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

    async def until_ended_async(
        self,
        call: CallLike,
        wait_seconds: float,
        waiting: Waiting,
        reread: Callable[[], Awaitable[CallLike]],
    ) -> CallLike:
        """``until_ended`` for a request on the event loop: it awaits, holding no thread."""
        deadline = time.monotonic() + min(max(wait_seconds, 0.0), MAX_WAIT_SECONDS)
        while True:
            remaining = deadline - time.monotonic()
            if call.status != CallStatus.RUNNING or remaining <= 0:
                return call
            future = self._future(waiting)
            if future is not None:  # ours end with the future; others' by the re-read
                with suppress(TimeoutError):
                    await asyncio.wait_for(future, min(remaining, REREAD_S))
            elif waiting.view is None:  # ended here but not recorded (an error): poll, do not spin
                await asyncio.sleep(min(remaining, REREAD_S))
            if waiting.view is not None:
                return waiting.view
            call = await reread()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():  # a wait that timed out has cancelled it
        future.set_result(None)
