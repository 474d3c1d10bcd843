"""The executor interface: run one call of a prepared function, in its own process.

Backends: ``local.py`` (forked zygotes on this machine) and ``ray.py`` (calls on a Ray cluster). Every backend
passes the same contract suite (``tests/test_executor.py``).

An executor knows nothing of HTTP or SQL: it gets a ``CallJob`` with everything a call
needs and answers with a ``CallOutcome``. Persisting outcomes, sessions and queueing are
the calls service's business.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from fnhost.run.protocol import CallLimits, Usage

__all__ = [
    "CallJob", "CallLimits", "CallOutcome", "EnvironmentLike", "Executor", "PrepareResult", "Status", "Usage",
]

Status = Literal["Completed", "Failed", "Timeout"]


class EnvironmentLike(Protocol):
    """A Python environment built by the builder (``build.Environment`` satisfies it)."""

    @property
    def hash(self) -> str: ...

    @property
    def python(self) -> Path | str: ...

    @property
    def site_dirs(self) -> Any: ...  # a sequence of paths put on sys.path (may be empty)


@dataclass
class CallJob:
    call_id: int
    function_id: int
    project: str
    env: EnvironmentLike
    code_dir: Path
    function_path: str
    data: Any = None
    secrets: dict[str, str] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)
    base_url: str = ""
    # Called only when the handler declares ``client``: minting a token costs a signature.
    token: Callable[[], str] | None = None
    schedule_id: int | None = None
    scheduled_time: int | None = None
    limits: CallLimits = field(default_factory=CallLimits)
    # called with (ms timestamp, line) as each log line is read, for live log streams
    on_log: Callable[[int, str], None] | None = None
    # the call id the function sees (function_call_info) when ``call_id`` is an executor's own
    # key instead, as on a Ray node's host, which serves calls of several servers
    info_call_id: int | None = None
    # the function's version the call runs (in ``function_call_info``)
    function_version: int | None = None


@dataclass
class CallOutcome:
    status: Status
    # the handler's return value as JSON text (only when Completed)
    response: str | None = None
    error: dict[str, str] | None = None  # {"message", "trace"}
    logs: list[tuple[int, str]] = field(default_factory=list)  # (ms timestamp, line)
    start_ms: int = 0  # when the call's process started
    end_ms: int = 0  # when it ended
    # how the process was made: "fork" (warm zygote), "fork-spare" (forked ahead by the warm
    # zygote, before the call came), "fork-cold" (zygote started for it),
    # "spawn" (fresh interpreter, for handlers that cannot be forked)
    mode: str = ""
    usage: Usage | None = None  # what the call used (None: it never ran)


@dataclass(frozen=True)
class PrepareResult:
    ok: bool
    message: str = ""
    trace: str = ""
    fork_safe: bool = False
    args: tuple[str, ...] = ()


class Executor(ABC):
    """Runs calls. Every method is thread-safe and may be called from any thread."""

    @abstractmethod
    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Get ready to run calls. ``loop``: an event loop already running in another thread
        (the server's), which a backend may run on instead of a thread of its own, so that a
        call crosses no thread between the request that accepts it and its end. Then the
        blocking methods (``prepare``, ``drop``, ``retire``, ``stats``) must not be called
        from that loop: they would wait for the loop they hold."""

    @abstractmethod
    def stop(self) -> None:
        """End every call and helper process, and reap them. No orphan survives."""

    @abstractmethod
    def prepare(
        self,
        env: EnvironmentLike,
        code_dir: Path,
        function_path: str,
        env_vars: dict[str, str] | None = None,
        *,
        limits: CallLimits | None = None,
    ) -> PrepareResult:
        """Import the handler in its environment and keep it warm for calls (blocking).

        Any warm process of the same code is replaced. ``env_vars`` are set before the import.
        ``limits``: those of the function's calls, for a backend that readies a process for
        the first call ahead of it (which then starts as fast as the next ones).
        """

    @abstractmethod
    def submit(self, job: CallJob) -> Future[CallOutcome]:
        """Start a call now; the future always ends with an outcome, never an exception."""

    @abstractmethod
    def cancel(self, call_id: int, message: str) -> None:
        """End a running call: it fails with ``message``."""

    @abstractmethod
    def drop(self, code_dir: Path, message: str = "The function was deleted.") -> None:
        """Forget a function: end its running calls with ``message`` and its warm process."""

    def retire(self, code_dir: Path) -> None:  # noqa: B027 (optional: a backend may keep it warm)
        """Code no longer current: its warm process may go once its running calls end (a
        later call of it starts one again). Running calls are not touched."""

    def stats(self) -> dict[str, Any]:
        return {}
