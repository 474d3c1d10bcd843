"""The event loop thread an executor runs its processes and sockets from."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable


def start_loop_thread(
    name: str, on_start: Callable[[asyncio.AbstractEventLoop], None] | None = None
) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """A new event loop running in a daemon thread; returns once it runs. ``on_start`` is
    called in that thread, before anything else the loop does."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        if on_start is not None:
            on_start(loop)
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=main, name=name, daemon=True)
    thread.start()
    ready.wait()
    return loop, thread
