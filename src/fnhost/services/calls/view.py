"""A call as the domain hands it out: what the API and the web page show of it.

Rows read from the database satisfy ``CallLike`` as they are; the call path builds
``CallView`` values from what it already knows (the accepted call, the executor's outcome),
so answering a call that just ended reads nothing back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from fnhost.statuses import CallStatus


class CallLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def function_id(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def start_time(self) -> int: ...
    @property
    def end_time(self) -> int | None: ...
    @property
    def scheduled_time(self) -> int | None: ...
    @property
    def schedule_id(self) -> int | None: ...
    @property
    def error(self) -> dict[str, Any] | None: ...
    # what it used (None until it ended, and for calls that never ran)
    @property
    def dispatch_time(self) -> int | None: ...
    @property
    def run_start_time(self) -> int | None: ...
    @property
    def cpu_user_ms(self) -> int | None: ...
    @property
    def cpu_system_ms(self) -> int | None: ...
    @property
    def peak_memory_bytes(self) -> int | None: ...
    # the function's version it was accepted on (None for calls from before versions)
    @property
    def function_version(self) -> int | None: ...


@dataclass(frozen=True)
class CallView:
    id: int
    project: str
    function_id: int
    status: str
    start_time: int
    end_time: int | None = None
    scheduled_time: int | None = None
    schedule_id: int | None = None
    error: dict[str, Any] | None = None
    dispatch_time: int | None = None
    run_start_time: int | None = None
    cpu_user_ms: int | None = None
    cpu_system_ms: int | None = None
    peak_memory_bytes: int | None = None
    function_version: int | None = None

    def ended(
        self, status: CallStatus, end_time: int, error: dict[str, Any] | None, **usage: int | None
    ) -> CallView:
        """The call once it ended; ``usage``: ``run_start_time``, ``dispatch_time``, the
        ``cpu_*_ms`` and ``peak_memory_bytes`` (the calls table's names)."""
        ended: CallView = replace(self, status=status, end_time=end_time, error=error, **usage)  # type: ignore[arg-type]
        return ended


@dataclass
class InFlight:
    """An accepted call on its way: waiting for its turn, running, or being recorded."""

    call: CallView
    session_id: int | None
    data: Any
    accepted: float  # time.monotonic() when accepted
    submitted: float | None = None  # when it left the waiting line for the executor
    function: Any = None  # the function row it was accepted with (at the version it runs)
    submitted_ms: int | None = None  # the same, as a timestamp (ms) to record

    @property
    def id(self) -> int:
        return self.call.id
