"""Dispatching accepted calls to the executor: the middle of the call path.

A call waits (``admission.py``) until its function is Ready on this machine and there is a
free slot for its function and its project; then its job is assembled (code, environment,
secrets, limits, a token minted only if the handler declares ``client``) and handed to the
executor, whose outcome goes to the recorder (``record.py``) on a worker thread of ours.
Calls whose function fails to deploy, or is deleted, while they wait end Failed saying so.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fnhost.clock import now_ms
from fnhost.core.livelogs import LiveLogs
from fnhost.metrics import Metrics
from fnhost.run.abc import CallJob, CallOutcome, Executor
from fnhost.services.calls.accept import Accepted
from fnhost.services.calls.admission import Admission, Slot
from fnhost.services.calls.record import Recorder
from fnhost.services.calls.view import InFlight
from fnhost.services.functions import Functions
from fnhost.services.sessions import Sessions
from fnhost.settings import Settings
from fnhost.statuses import FunctionStatus
from fnhost.store import functions as function_store
from fnhost.store import versions as version_store
from fnhost.store.db import Database
from fnhost.store.functions import FunctionRow

log = logging.getLogger("fnhost.calls")


class CodeSource(Protocol):
    """Where a function's code and environment are made on this machine (the builder)."""

    def ensure_local(self, row: FunctionRow) -> Any: ...  # .code_dir, .env

    def code_dir(self, function_id: int, version: int = 1) -> Path: ...


@dataclass
class _FunctionState:
    status: str
    row: FunctionRow
    prepared: Any = None  # services.builds.PreparedFunction once Ready and local


class Dispatcher:
    def __init__(
        self,
        *,
        db: Database,
        executor: Executor,
        functions: Functions,
        sessions: Sessions,
        settings: Settings,
        public_url: str,
        recorder: Recorder,
        live: LiveLogs,
        code: CodeSource | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        self.executor = executor
        self.functions = functions
        self.sessions = sessions
        self.settings = settings
        self.public_url = public_url
        self.recorder = recorder
        self.live = live
        self.code = code
        self.metrics = metrics
        self._lock = threading.Lock()
        self.admission: Admission[InFlight] = Admission(
            settings.max_running_calls_per_function, settings.max_running_calls_per_project
        )
        self._states: dict[int, _FunctionState] = {}
        # (function id, version) -> its code and environment on this machine, for the calls
        # of a version other than the one its state holds (accepted before or after a switch)
        self._versions: dict[tuple[int, int], Any] = {}
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="fnhost-calls")
        recorder.on_recorded.append(self._release)

    # -- in ---------------------------------------------------------------------------------
    def enqueue(self, accepted: Accepted) -> InFlight:
        """Hand a recorded call to the executor, now or when its function and limits allow."""
        function = accepted.function
        if self.metrics is not None:
            self.metrics.call_started(function.project, function.id)
        call = InFlight(
            accepted.call, accepted.session_id, accepted.data, accepted=time.monotonic(), function=function
        )
        with self._lock:
            state = self._states.get(function.id)
            if state is None or state.status != FunctionStatus.READY:
                self._states[function.id] = _FunctionState(function.status, function)
            self.admission.offer(self._slot(call), call)
        self.pump()
        return call

    def _ready(self, function_id: int) -> bool:
        state = self._states.get(function_id)
        return state is not None and state.status == FunctionStatus.READY

    @staticmethod
    def _slot(call: InFlight) -> Slot:
        return Slot(call.id, call.call.function_id, call.call.project)

    def pump(self) -> None:
        """Start every waiting call that may start now."""
        with self._lock:
            if not len(self.admission):
                return
            started = self.admission.admit(self._ready)
            states = {slot.function_id: self._states[slot.function_id] for slot, _ in started}
        for slot, call in started:
            state = states[slot.function_id]
            if self._prepared(call, state) is None:  # its code is made local first: not on the caller's thread
                self._pool.submit(self._start_or_fail, call, state)
            else:
                self._start_or_fail(call, state)

    def _start_or_fail(self, call: InFlight, state: _FunctionState) -> None:
        try:
            self._start(call, state)
        except Exception as exc:
            log.exception("call %s could not start", call.id)
            now = now_ms()
            self.recorder.finish(
                call,
                CallOutcome("Failed", error={"message": f"The call could not start: {exc}", "trace": ""},
                            start_ms=now, end_ms=now),
            )

    def _release(self, call: InFlight) -> None:
        """A call was recorded as ended: its slots are free for the next ones."""
        with self._lock:
            self.admission.release(self._slot(call))
        self.pump()

    def fail_waiting(self, call: InFlight, message: str) -> None:
        """End a call that never started (it holds a slot until recorded, as a running one)."""
        with self._lock:
            self.admission.started_outside(self._slot(call))
        self.recorder.finish(call, CallOutcome("Failed", error={"message": message, "trace": ""}, end_ms=now_ms()))

    # -- to the executor -----------------------------------------------------------------------
    def _prepared(self, call: InFlight, state: _FunctionState) -> Any:
        """The call's code and environment if they are known here already (else None)."""
        version = call.call.function_version
        if version is None or version == state.row.version:
            return state.prepared
        return self._versions.get((state.row.id, version))

    def _row_of(self, call: InFlight, state: _FunctionState) -> FunctionRow:
        """The function at the version the call was accepted on."""
        version = call.call.function_version
        if version is None or version == state.row.version:
            return state.row
        kept = call.function
        if kept is not None and kept.version == version and kept.status == FunctionStatus.READY:
            return kept
        with self.db.read() as s:
            function = function_store.get_any(state.row.id, session=s)
            at = None if function is None else version_store.get(function.id, version, session=s)
        if function is None or at is None:
            raise RuntimeError(f"version {version} of function {state.row.id} is gone")
        return version_store.function_at(function, at)

    def _start(self, call: InFlight, state: _FunctionState) -> None:
        row = self._row_of(call, state)
        prepared = self._prepared(call, state)
        if prepared is None:
            if self.code is None:
                raise RuntimeError("no builder to prepare the function's code")
            prepared = self.code.ensure_local(row)
            if row.version == state.row.version:
                state.prepared = prepared
            else:
                with self._lock:
                    self._versions[(row.id, row.version)] = prepared
        session_id = call.session_id
        lifetime = int(self.settings.call_timeout_seconds) + 600

        def token() -> str:  # minted only when the handler declares ``client``
            if session_id is None:
                raise RuntimeError("the call has no session")
            return self.sessions.mint_token(session_id, lifetime)

        job = CallJob(
            call_id=call.id,
            function_id=row.id,
            project=row.project,
            env=prepared.env,
            code_dir=Path(prepared.code_dir),
            function_path=row.function_path,
            data=call.data,
            secrets=self.functions.secrets_of(row),
            env_vars=dict(row.env_vars or {}),
            base_url=self.public_url,
            token=token if session_id is not None else None,
            schedule_id=call.call.schedule_id,
            scheduled_time=call.call.scheduled_time,
            limits=self.functions.call_limits(row),
            on_log=self.live.publisher(call.id),
            function_version=row.version,
        )
        call.submitted, call.submitted_ms = time.monotonic(), now_ms()
        future = self.executor.submit(job)

        def done(f: Future[CallOutcome]) -> None:
            # on the executor's event loop: recorded there if that cannot block, else (a
            # database across the network, or another writer holding SQLite) in a thread
            outcome = f.result()
            if not self.recorder.finish_without_waiting(call, outcome):
                self._pool.submit(self.recorder.finish, call, outcome)

        future.add_done_callback(done)

    # -- following the functions calls wait for --------------------------------------------------
    def anything_waiting(self) -> bool:
        """Whether a call waits at all: ``check_waiting`` is worth a worker thread only then."""
        with self._lock:
            return len(self.admission) > 0

    def check_waiting(self) -> None:
        """Functions that calls wait for: Ready → run them; Failed or gone → fail them."""
        with self._lock:
            ids = {fid for fid in self.admission.waiting_functions() if not self._ready(fid)}
        if not ids:
            return
        with self.db.read() as s:
            rows = {i: function_store.get_any(i, session=s) for i in ids}
        with self._lock:
            for fid, row in rows.items():
                if row is None:
                    self._states.pop(fid, None)
                else:
                    self._states[fid] = _FunctionState(row.status, row)
            gone = [fid for fid, row in rows.items() if row is None or row.status == FunctionStatus.FAILED]
            failed = self.admission.withdraw(gone)
        for slot, call in failed:
            row = rows.get(slot.function_id)
            if row is None:
                message = "The function was deleted before the call could run."
            else:
                reason = (row.error or {}).get("message") or "unknown error"
                message = f"The function failed to deploy, so the call could not run: {reason}"
            self.fail_waiting(call, message)
        self.pump()

    def function_deleted(self, project: str, function_id: int) -> None:
        with self._lock:
            state = self._states.pop(function_id, None)
            dropped = self.admission.withdraw([function_id])
        for _, call in dropped:
            self.fail_waiting(call, "The function was deleted before the call could run.")
        code_dir = None
        if state is not None and state.prepared is not None:
            code_dir = Path(state.prepared.code_dir)
        elif self.code is not None:
            code_dir = Path(self.code.code_dir(function_id))
        if code_dir is not None:
            self.executor.drop(code_dir, "The function was deleted while the call ran.")
        with self._lock:
            others = [k for k in self._versions if k[0] == function_id]
            prepared_versions = [self._versions.pop(k) for k in others]
        for prepared in prepared_versions:
            self.executor.drop(Path(prepared.code_dir), "The function was deleted while the call ran.")

    # -- versions ----------------------------------------------------------------------------------
    def version_switched(self, function_id: int, previous: int, current: int) -> None:
        """Another version is current: the previous one's warm process goes once its running
        calls end (calls accepted on it still run on it, starting one again if need be)."""
        if self.code is None or previous == current:
            return
        self.executor.retire(self.code.code_dir(function_id, previous))

    def version_retired(self, function_id: int, version: int) -> None:
        """A version's code is about to be removed (no call runs on it)."""
        with self._lock:
            self._versions.pop((function_id, version), None)
        if self.code is not None:
            self.executor.drop(self.code.code_dir(function_id, version), "The function version was retired.")

    def prewarm(self) -> None:
        """Start zygotes for the Ready functions this server may run (after a restart)."""
        if self.code is None:
            return
        with self.db.read() as s:
            rows = function_store.ready_functions(session=s)
        for row in sorted(rows, key=lambda r: r.last_called or 0, reverse=True)[:20]:
            try:
                prepared = self.code.ensure_local(row)
                self.executor.prepare(
                    prepared.env, Path(prepared.code_dir), row.function_path, row.env_vars,
                    limits=self.functions.call_limits(row),
                )
                with self._lock:
                    self._states.setdefault(row.id, _FunctionState(FunctionStatus.READY, row, prepared))
            except Exception as exc:
                log.warning("could not prewarm function %s: %s", row.id, exc)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
