"""Calls: accept, queue, run and record function calls.

A call is written ``Running`` before anything runs and always ends ``Completed``,
``Failed`` or ``Timeout``. Between the two it may wait: for its function to become Ready,
or for a free slot (per function and per project, FIFO per function). The executor runs
it; this module records the outcome, its logs and ``lastCalled``.
"""

from __future__ import annotations

import builtins
import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session

from fnhost.auth.capabilities import Principal
from fnhost.clock import now_ms
from fnhost.core.livelogs import LiveLogs
from fnhost.core.loop import Service
from fnhost.core.replicas import owner_is_dead
from fnhost.errors import InvalidRequest, NotFound, PayloadTooLarge
from fnhost.metrics import Metrics
from fnhost.run.abc import CallJob, CallLimits, CallOutcome, Executor
from fnhost.services.access import Access
from fnhost.services.functions import Functions
from fnhost.services.sessions import Sessions
from fnhost.settings import Settings
from fnhost.store import calls as store
from fnhost.store import functions as function_store
from fnhost.store import replicas as replica_store
from fnhost.store.calls import CallLogRow, CallRow
from fnhost.store.db import Database
from fnhost.store.functions import FunctionRow

log = logging.getLogger("fnhost.calls")

STATUSES = ("Running", "Completed", "Failed", "Timeout")
CALL_SESSION_LIFETIME_MS = 24 * 3600 * 1000
MAX_WAIT_SECONDS = 60.0


class CodeSource(Protocol):
    """Where a function's code and environment are made on this machine (the builder)."""

    def ensure_local(self, row: FunctionRow) -> Any: ...  # .code_dir, .env

    def code_dir(self, function_id: int) -> Path: ...


@dataclass
class _Pending:
    call_id: int
    project: str
    function_id: int
    session_id: int | None
    data: Any
    schedule_id: int | None = None
    scheduled_time: int | None = None
    accepted: float = field(default_factory=time.monotonic)
    submitted: float | None = None  # when it left the queue for the executor


@dataclass
class _FunctionState:
    status: str
    row: FunctionRow
    prepared: Any = None  # build.builder.PreparedFunction once Ready and local
    error: str | None = None


@dataclass
class _Waiters:
    """Requests waiting for one call to end (see ``Calls._until_ended``)."""

    ended: threading.Event = field(default_factory=threading.Event)
    count: int = 0
    # the row as this process recorded the call's end: the waiters answer with it instead of
    # each reading it back (None if the end was recorded elsewhere, or not at all)
    row: CallRow | None = None


class Calls:
    def __init__(
        self,
        *,
        db: Database,
        access: Access,
        sessions: Sessions,
        functions: Functions,
        executor: Executor,
        settings: Settings,
        replica_id: str,
        public_url: str,
        code: CodeSource | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        self.access = access
        self.sessions = sessions
        self.functions = functions
        self.executor = executor
        self.settings = settings
        self.replica_id = replica_id
        self.public_url = public_url
        self.code = code
        self.metrics = metrics
        self._lock = threading.Lock()
        self._waiting: deque[_Pending] = deque()
        self._by_function: Counter[int] = Counter()
        self._by_project: Counter[str] = Counter()
        self._states: dict[int, _FunctionState] = {}
        # one wake-up per waiter of the call that ended, not a wake-up (and a database read)
        # of every waiter at every call's end
        self._end_events: dict[int, _Waiters] = {}
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="fnhost-calls")
        self.live = LiveLogs()  # running calls' log lines, for GET …/logs/stream

    # -- accept --------------------------------------------------------------------------------
    def call(
        self, project: str, caller: Principal, function_id: int, body: Any, wait_seconds: float = 0
    ) -> CallRow:
        """Accept a call; with ``wait_seconds``, answer once it ends if that is sooner."""
        self.access.require(caller, project, "functionsAcl", "RUN")
        if not isinstance(body, dict):
            raise InvalidRequest("The body must be an object with 'data' and 'nonce'.")
        data = body.get("data")
        if data is not None and not isinstance(data, dict):
            raise InvalidRequest("data must be a JSON object.", field="data")
        size = len(json.dumps(data))
        if size > self.settings.call_data_max_bytes:
            raise PayloadTooLarge(
                f"data is {size} bytes of JSON, more than the limit of "
                f"{self.settings.call_data_max_bytes} bytes.",
                field="data",
            )
        row = self._function(project, function_id)
        with self.db.write() as s:  # the nonce is spent only if the call is recorded
            session = self.sessions.redeem(
                project, body.get("nonce"), lifetime_ms=CALL_SESSION_LIFETIME_MS, session=s
            )
            accepted = self._insert(row, session.id, data, session=s)
        # waiting before the executor has it: a call that ends at once still wakes us
        with self._waiting_for(accepted.id) as waiting:
            self._enqueue(row, accepted)
            return self._until_ended(project, function_id, accepted, wait_seconds, waiting)

    def start_scheduled_call(
        self,
        project: str,
        function_id: int,
        session_id: int | None,
        data: Any,
        schedule_id: int,
        scheduled_time: int,
    ) -> CallRow:
        """For the scheduler: everything after the nonce was redeemed (when the schedule was made)."""
        row = self._function(project, function_id)
        with self.db.write() as s:
            accepted = self._insert(
                row, session_id, data, schedule_id=schedule_id, scheduled_time=scheduled_time, session=s
            )
        self._enqueue(row, accepted)
        return accepted

    def _function(self, project: str, function_id: int) -> FunctionRow:
        with self.db.read() as s:
            row = function_store.get(project, function_id, session=s)
        if row is None:
            raise NotFound(f"Function {function_id} does not exist.", missing=[{"id": function_id}])
        if row.status == "Failed":
            message = (row.error or {}).get("message") or "unknown error"
            raise InvalidRequest(
                f"Function {function_id} failed to deploy and cannot be called: {message}"
            )
        return row

    def _insert(
        self,
        function: FunctionRow,
        session_id: int | None,
        data: Any,
        *,
        schedule_id: int | None = None,
        scheduled_time: int | None = None,
        session: Session,
    ) -> CallRow:
        """The call's row, Running, written before anything runs."""
        return store.add(
            CallRow(
                project=function.project,
                function_id=function.id,
                status="Running",
                start_time=now_ms(),
                session_id=session_id,
                data=data,
                schedule_id=schedule_id,
                scheduled_time=scheduled_time,
                owner=self.replica_id,
            ),
            session=session,
        )

    def _enqueue(self, function: FunctionRow, row: CallRow) -> None:
        """Hand a recorded call to the executor, now or when its function and limits allow."""
        if self.metrics is not None:
            self.metrics.call_started(function.project, function.id)
        pending = _Pending(
            row.id, function.project, function.id, row.session_id, row.data, row.schedule_id, row.scheduled_time
        )
        with self._lock:
            if function.id not in self._states or self._states[function.id].status != "Ready":
                self._states[function.id] = _FunctionState(function.status, function)
            self._waiting.append(pending)
        self._pump()

    # -- dispatch ------------------------------------------------------------------------------
    def _pump(self) -> None:
        s = self.settings
        start: list[tuple[_Pending, _FunctionState]] = []
        with self._lock:
            if not self._waiting:
                return
            keep: deque[_Pending] = deque()
            for p in self._waiting:
                state = self._states.get(p.function_id)
                if (
                    state is None
                    or state.status != "Ready"
                    or self._by_function[p.function_id] >= s.max_running_calls_per_function
                    or self._by_project[p.project] >= s.max_running_calls_per_project
                ):
                    keep.append(p)
                    continue
                self._by_function[p.function_id] += 1
                self._by_project[p.project] += 1
                start.append((p, state))
            self._waiting = keep
        for p, state in start:
            try:
                self._start(p, state)
            except Exception as exc:
                log.exception("call %s could not start", p.call_id)
                self._finish(
                    p,
                    CallOutcome(
                        "Failed",
                        error={"message": f"The call could not start: {exc}", "trace": ""},
                        start_ms=now_ms(),
                        end_ms=now_ms(),
                    ),
                )

    def limits_for(self, row: FunctionRow) -> CallLimits:
        s = self.settings
        return CallLimits(
            timeout_s=float(s.call_timeout_seconds),
            memory_bytes=int(row.memory * 1024**3),
            cpu=row.cpu,
            max_processes=s.call_max_processes,
            max_file_bytes=s.call_max_file_bytes,
            max_open_files=s.call_max_open_files,
            response_max_bytes=s.response_max_bytes,
            log_max_bytes=s.log_max_bytes,
            cpu_time_s=s.call_cpu_seconds,
        )

    def _start(self, p: _Pending, state: _FunctionState) -> None:
        row = state.row
        if state.prepared is None:
            if self.code is None:
                raise RuntimeError("no builder to prepare the function's code")
            state.prepared = self.code.ensure_local(row)
        prepared = state.prepared
        session_id = p.session_id
        lifetime = int(self.settings.call_timeout_seconds) + 600

        def token() -> str:
            if session_id is None:
                raise RuntimeError("the call has no session")
            return self.sessions.mint_token(session_id, lifetime)

        job = CallJob(
            call_id=p.call_id,
            function_id=p.function_id,
            project=p.project,
            env=prepared.env,
            code_dir=Path(prepared.code_dir),
            function_path=row.function_path,
            data=p.data,
            secrets=self.functions.secrets_of(row),
            env_vars=dict(row.env_vars or {}),
            base_url=self.public_url,
            token=token if session_id is not None else None,
            schedule_id=p.schedule_id,
            scheduled_time=p.scheduled_time,
            limits=self.limits_for(row),
            on_log=self.live.publisher(p.call_id),
        )
        p.submitted = time.monotonic()
        future = self.executor.submit(job)

        def done(f: Future[CallOutcome]) -> None:
            self._pool.submit(self._finish, p, f.result())

        future.add_done_callback(done)

    def _finish(self, p: _Pending, outcome: CallOutcome) -> None:
        ended: CallRow | None = None
        try:
            with self.db.write() as s:
                row = store.get_any(p.call_id, session=s)
                if row is not None and row.status == "Running":
                    row.status = outcome.status
                    row.end_time = max(outcome.end_ms or now_ms(), row.start_time)
                    row.run_start_time = outcome.start_ms or None
                    row.error = outcome.error
                    row.response = outcome.response
                    if outcome.logs:
                        store.add_logs(p.call_id, 0, outcome.logs, session=s)
                    function_store.mark_called(p.function_id, row.start_time, session=s)
                    ended = row
        except Exception:
            ended = None
            log.exception("the outcome of call %s could not be recorded", p.call_id)
        finally:
            self.live.end(p.call_id, outcome.status)  # after the outcome is recorded
            with self._lock:
                self._by_function[p.function_id] -= 1
                self._by_project[p.project] -= 1
                waiting = self._end_events.get(p.call_id)
                if waiting is not None:
                    waiting.row = ended
                    waiting.ended.set()
            if self.metrics is not None:
                self._record_metrics(p, outcome)
            self._pump()

    def _record_metrics(self, p: _Pending, outcome: CallOutcome) -> None:
        ran = outcome.start_ms and outcome.end_ms  # a call failed before it ran has no duration
        self.metrics.call_finished(
            p.project,
            p.function_id,
            outcome.status,
            (outcome.end_ms - outcome.start_ms) / 1000 if ran else None,
            p.submitted - p.accepted if p.submitted is not None else None,
        )
        # "spawn" (a fresh interpreter for code that cannot be forked) uses no zygote
        if outcome.mode in ("fork", "fork-spare", "fork-cold"):
            self.metrics.zygote(hit=outcome.mode != "fork-cold")

    def _fail_pending(self, p: _Pending, message: str) -> None:
        with self._lock:
            self._by_function[p.function_id] += 1
            self._by_project[p.project] += 1
        self._finish(p, CallOutcome("Failed", error={"message": message, "trace": ""}, end_ms=now_ms()))

    def check_waiting(self) -> None:
        """Follow functions that calls wait for: Ready → run them; Failed or gone → fail them."""
        with self._lock:
            ids = {p.function_id for p in self._waiting}
            ids = {i for i in ids if self._states.get(i) is None or self._states[i].status != "Ready"}
        if not ids:
            return
        with self.db.read() as s:
            rows = {i: function_store.get_any(i, session=s) for i in ids}
        failed: list[_Pending] = []
        with self._lock:
            for fid, row in rows.items():
                if row is None:
                    self._states.pop(fid, None)
                    continue
                self._states[fid] = _FunctionState(row.status, row)
            keep: deque[_Pending] = deque()
            for p in self._waiting:
                row = rows.get(p.function_id, ...)  # type: ignore[arg-type]
                if p.function_id in rows and (row is None or row.status == "Failed"):
                    failed.append(p)
                else:
                    keep.append(p)
            self._waiting = keep
        for p in failed:
            row = rows.get(p.function_id)
            if row is None:
                message = "The function was deleted before the call could run."
            else:
                reason = (row.error or {}).get("message") or "unknown error"
                message = f"The function failed to deploy, so the call could not run: {reason}"
            self._fail_pending(p, message)
        self._pump()

    def function_deleted(self, project: str, function_id: int) -> None:
        with self._lock:
            state = self._states.pop(function_id, None)
            dropped = [p for p in self._waiting if p.function_id == function_id]
            self._waiting = deque(p for p in self._waiting if p.function_id != function_id)
        for p in dropped:
            self._fail_pending(p, "The function was deleted before the call could run.")
        code_dir = None
        if state is not None and state.prepared is not None:
            code_dir = Path(state.prepared.code_dir)
        elif self.code is not None:
            code_dir = Path(self.code.code_dir(function_id))
        if code_dir is not None:
            self.executor.drop(code_dir, "The function was deleted while the call ran.")

    def heartbeat(self) -> None:
        """Tell the other replicas this one is alive (see ``store.replicas``)."""
        with self.db.write() as s:
            replica_store.beat(self.replica_id, now_ms(), session=s)

    def leave(self) -> None:
        """A clean stop: this replica's calls are recorded, so it leaves no orphans."""
        with self.db.write() as s:
            replica_store.remove([self.replica_id], session=s)

    def recover(self) -> int:
        """Calls left Running by a replica that is gone fail with a message saying so.

        Gone: no heartbeat for ``replica_dead_after_seconds`` (or no row at all), or, on this
        host, its process no longer exists. Every replica checks periodically, so a replica
        killed mid-call (SIGKILL, lost machine) has its calls failed by the others.
        """
        now = now_ms()
        since = now - int(self.settings.replica_dead_after_seconds * 1000)
        count = 0
        gone: set[str] = set()
        with self.db.write() as s:
            live = replica_store.live_ids(since, session=s)
            for row in store.running_owned_by(None, session=s):
                owner = row.owner
                if owner == self.replica_id:
                    continue
                # on this host a missing process is a dead replica at once; elsewhere, its heartbeat tells
                if owner is not None and owner in live and not owner_is_dead(owner, shared_with_other_hosts=True):
                    continue
                row.status = "Failed"
                row.end_time = max(now, row.start_time)
                row.error = {
                    "message": "The server running this call stopped before the call ended.",
                    "trace": "",
                }
                count += 1
                if owner is not None:
                    gone.add(owner)
            gone |= replica_store.stale_ids(since, session=s)
            gone.discard(self.replica_id)
            replica_store.remove(gone, session=s)
        if count:
            log.warning(
                "failed %d call(s) left Running by stopped replica(s) %s", count, ", ".join(sorted(gone))
            )
        return count

    def prewarm(self) -> None:
        """Start zygotes for the Ready functions this server may run (after a restart)."""
        if self.code is None:
            return
        with self.db.read() as s:
            rows = function_store.ready_functions(session=s)
        for row in sorted(rows, key=lambda r: r.last_called or 0, reverse=True)[:20]:
            try:
                prepared = self.code.ensure_local(row)
                self.executor.prepare(prepared.env, Path(prepared.code_dir), row.function_path)
                with self._lock:
                    self._states.setdefault(row.id, _FunctionState("Ready", row, prepared))
            except Exception as exc:
                log.warning("could not prewarm function %s: %s", row.id, exc)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- read ------------------------------------------------------------------------------------
    def _call_row(self, project: str, function_id: int, call_id: int) -> CallRow:
        with self.db.read() as s:
            row = store.get(project, function_id, call_id, session=s)
        if row is None:
            raise NotFound(f"Call {call_id} of function {function_id} does not exist.", missing=[{"id": call_id}])
        return row

    def get(
        self, project: str, caller: Principal, function_id: int, call_id: int, wait_seconds: float = 0
    ) -> CallRow:
        """One call; with ``wait_seconds``, wait up to that long for it to end (long poll)."""
        self.access.require(caller, project, "functionsAcl", "READ")
        with self._waiting_for(call_id) as waiting:  # before the read: an end after it wakes us
            row = self._call_row(project, function_id, call_id)
            return self._until_ended(project, function_id, row, wait_seconds, waiting)

    @contextmanager
    def _waiting_for(self, call_id: int) -> Iterator[_Waiters]:
        """Be woken when this process records the end of ``call_id``."""
        with self._lock:
            waiting = self._end_events.setdefault(call_id, _Waiters())
            waiting.count += 1
        try:
            yield waiting
        finally:
            with self._lock:
                waiting.count -= 1
                if waiting.count == 0:
                    self._end_events.pop(call_id, None)

    def _until_ended(
        self, project: str, function_id: int, row: CallRow, wait_seconds: float, waiting: _Waiters
    ) -> CallRow:
        """``row``, or the call re-read once it has ended, waiting up to ``wait_seconds``."""
        wait_seconds = min(max(wait_seconds, 0.0), MAX_WAIT_SECONDS)
        deadline = time.monotonic() + wait_seconds
        while True:
            remaining = deadline - time.monotonic()
            if row.status != "Running" or remaining <= 0:
                return row
            # ours end with the event; other replicas' are seen by the periodic re-read
            if not waiting.ended.is_set():
                waiting.ended.wait(min(remaining, 0.5))
            elif waiting.row is None:  # ended here but not recorded (an error): poll, do not spin
                time.sleep(min(remaining, 0.5))
            if waiting.row is not None:
                return waiting.row
            row = self._call_row(project, function_id, row.id)

    def by_ids(
        self, project: str, caller: Principal, function_id: int, ids: list[int], ignore_unknown: bool
    ) -> list[CallRow]:
        self.access.require(caller, project, "functionsAcl", "READ")
        with self.db.read() as s:
            rows = [store.get(project, function_id, i, session=s) for i in ids]
        missing = [{"id": i} for i, r in zip(ids, rows, strict=True) if r is None]
        if missing and not ignore_unknown:
            raise NotFound("Calls not found.", missing=missing)
        return [r for r in rows if r is not None]

    def list(
        self, project: str, caller: Principal, function_id: int, *, limit: int, cursor: int, filt: dict[str, Any]
    ) -> tuple[list[CallRow], int | None]:
        self.access.require(caller, project, "functionsAcl", "READ")
        status = filt.get("status")
        if status is not None and status not in STATUSES:
            raise InvalidRequest(f"Unknown call status {status!r}; one of {', '.join(STATUSES)}.")
        ranges: dict[str, dict[str, Any]] = {}
        for key in ("startTime", "endTime"):
            value = filt.get(key) or {}
            if not isinstance(value, dict):
                raise InvalidRequest(f"{key} must be an object with min and/or max.")
            ranges[key] = value
        with self.db.read() as s:
            if function_store.get(project, function_id, session=s) is None:
                raise NotFound(f"Function {function_id} does not exist.", missing=[{"id": function_id}])
            rows = store.list_page(
                project,
                function_id,
                session=s,
                limit=limit + 1,
                before_id=cursor or None,
                status=status,
                schedule_id=filt.get("scheduleId"),
                start_min=ranges["startTime"].get("min"),
                start_max=ranges["startTime"].get("max"),
                end_min=ranges["endTime"].get("min"),
                end_max=ranges["endTime"].get("max"),
            )
        next_cursor = rows[limit - 1].id if len(rows) > limit else None
        return rows[:limit], next_cursor

    def response(self, project: str, caller: Principal, function_id: int, call_id: int) -> Any:
        self.access.require(caller, project, "functionsAcl", "READ")
        row = self._call_row(project, function_id, call_id)
        return None if row.response is None else json.loads(row.response)

    def logs(
        self, project: str, caller: Principal, function_id: int, call_id: int
    ) -> builtins.list[CallLogRow]:
        self.access.require(caller, project, "functionsAcl", "READ")
        row = self._call_row(project, function_id, call_id)
        with self.db.read() as s:
            return store.logs(row.id, session=s)


class CallsService(Service):
    """Lifecycle of the executor and the calls dispatcher inside the app."""

    name = "calls"
    interval = 0.25

    def __init__(self, calls: Calls, executor: Executor) -> None:
        super().__init__()
        self.calls = calls
        self.executor = executor
        self._next_beat = 0.0

    async def start(self) -> None:
        import asyncio

        await asyncio.to_thread(self.executor.start)
        await asyncio.to_thread(self.calls.heartbeat)
        await asyncio.to_thread(self.calls.recover)
        self._next_beat = time.monotonic() + self.calls.settings.replica_heartbeat_seconds
        await super().start()
        self._prewarm = asyncio.create_task(asyncio.to_thread(self.calls.prewarm))

    async def run_once(self) -> None:
        import asyncio

        await asyncio.to_thread(self.calls.check_waiting)
        if time.monotonic() >= self._next_beat:
            self._next_beat = time.monotonic() + self.calls.settings.replica_heartbeat_seconds
            await asyncio.to_thread(self.calls.heartbeat)
            await asyncio.to_thread(self.calls.recover)

    async def stop(self) -> None:
        import asyncio

        await super().stop()
        await asyncio.to_thread(self.executor.stop)
        await asyncio.to_thread(self.calls.close)
        try:
            await asyncio.to_thread(self.calls.leave)
        except Exception:
            log.exception("could not remove this replica's heartbeat row")
