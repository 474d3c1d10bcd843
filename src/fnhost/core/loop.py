"""Background services: small loops started and stopped by the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod

log = logging.getLogger("fnhost")


class Service(ABC):
    """A loop that calls ``run_once`` every ``interval`` seconds or when woken."""

    name = "service"
    interval = 1.0

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name=self.name)

    def wake(self) -> None:
        """Run the next iteration now. Safe to call from the event loop thread only."""
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # one failing iteration must not end the loop; it is logged with its trace
                log.exception("%s: iteration failed", self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            self._wake.clear()

    @abstractmethod
    async def run_once(self) -> None: ...
