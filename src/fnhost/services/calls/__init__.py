"""Calls: the call path in four parts, and the reads.

    POST …/call ─▶ accept.py    one transaction: the function may be called, the nonce is
                                redeemed into the call's session, the row is written Running
                 ─▶ dispatch.py  admission.py says when (Ready, a free slot); the job goes to
                                the executor
                 ─▶ wait.py      the request waits (up to ``waitSeconds``) for the end
    executor ───▶ record.py     one transaction: the outcome, its logs, ``lastCalled``; the
                                waiters get the ended call without reading it back

A call always ends ``Completed``, ``Failed`` or ``Timeout`` (``statuses.call_moves``),
across a crash too (``replicas.py``). The scheduler's calls go through the same accept and
record parts.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from fnhost.auth.capabilities import Principal
from fnhost.core.livelogs import LiveLogs
from fnhost.core.loop import Service
from fnhost.errors import InvalidRequest, NotFound
from fnhost.metrics import Metrics
from fnhost.run.abc import Executor
from fnhost.services.access import Access
from fnhost.services.calls.accept import Acceptor, CallRequest
from fnhost.services.calls.dispatch import CodeSource, Dispatcher
from fnhost.services.calls.record import Recorder
from fnhost.services.calls.replicas import Replicas
from fnhost.services.calls.view import CallLike, CallView
from fnhost.services.calls.wait import Waiters, Waiting
from fnhost.services.functions import Functions
from fnhost.services.identifiers import id_entry, resolve_all
from fnhost.services.sessions import Sessions
from fnhost.settings import Settings
from fnhost.statuses import CallStatus
from fnhost.store import calls as store
from fnhost.store import functions as function_store
from fnhost.store.calls import CallLogRow
from fnhost.store.db import Database

__all__ = ["CallFilter", "CallLike", "CallRequest", "CallView", "Calls", "CallsService", "CodeSource", "Waiting"]

STATUSES = tuple(CallStatus)


@dataclass(frozen=True)
class CallFilter:
    """``calls/list``: every given condition must hold (times in ms, inclusive)."""

    status: str | None = None
    schedule_id: int | None = None
    start_min: int | None = None
    start_max: int | None = None
    end_min: int | None = None
    end_max: int | None = None


class Calls:
    """The calls resource: what the API and the web page do with calls."""

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
        self.settings = settings
        self.executor = executor
        self.live = LiveLogs()  # running calls' log lines, for GET …/logs/stream
        self.waiters = Waiters()
        self.acceptor = Acceptor(
            db, sessions, data_max_bytes=settings.call_data_max_bytes, replica_id=replica_id
        )
        self.recorder = Recorder(db, self.waiters, self.live, metrics)
        self.dispatcher = Dispatcher(
            db=db,
            executor=executor,
            functions=functions,
            sessions=sessions,
            settings=settings,
            public_url=public_url,
            recorder=self.recorder,
            live=self.live,
            code=code,
            metrics=metrics,
        )
        self.replicas = Replicas(db, replica_id, settings.replica_dead_after_seconds)

    # -- the call path ------------------------------------------------------------------------
    def call(
        self, project: str, caller: Principal, function_id: int, request: CallRequest, wait_seconds: float = 0
    ) -> CallLike:
        """Accept a call; with ``wait_seconds``, answer once it ends if that is sooner."""
        call, waiting = self.start(project, caller, function_id, request)
        try:
            return self.waiters.until_ended(
                call, wait_seconds, waiting, lambda: self._call_row(project, function_id, call.id)
            )
        finally:
            self.stop_waiting(call.id, waiting)

    def start(
        self, project: str, caller: Principal, function_id: int, request: CallRequest
    ) -> tuple[CallView, Waiting]:
        """``call`` up to its wait, for a request that waits on the event loop (with
        ``until_ended_async``): the call is accepted, registered to wake its waiter, and
        dispatched. The caller must ``stop_waiting`` once done with it."""
        self.access.require(caller, project, "functionsAcl", "RUN")
        accepted = self.acceptor.accept(project, function_id, request)
        waiting = self.waiters.register(accepted.call.id)  # before it can end
        try:
            self.dispatcher.enqueue(accepted)
        except BaseException:
            self.waiters.release(accepted.call.id, waiting)
            raise
        return accepted.call, waiting

    async def until_ended_async(
        self, project: str, function_id: int, call: CallLike, wait_seconds: float, waiting: Waiting
    ) -> CallLike:
        """After ``start``: the call once it has ended, or as it is after ``wait_seconds``."""

        async def reread() -> CallLike:
            return await asyncio.to_thread(self._call_row, project, function_id, call.id)

        return await self.waiters.until_ended_async(call, wait_seconds, waiting, reread)

    def stop_waiting(self, call_id: int, waiting: Waiting) -> None:
        self.waiters.release(call_id, waiting)

    def start_scheduled_call(
        self, project: str, function_id: int, session_id: int | None, data: Any, schedule_id: int, scheduled_time: int
    ) -> CallView:
        """For the scheduler: everything after the nonce was redeemed (when the schedule was made)."""
        accepted = self.acceptor.accept_scheduled(project, function_id, session_id, data, schedule_id, scheduled_time)
        self.dispatcher.enqueue(accepted)
        return accepted.call

    def record_failed_due_time(
        self,
        *,
        project: str,
        function_id: int,
        schedule_id: int,
        scheduled_time: int,
        session_id: int | None,
        data: Any,
        message: str,
        session: Session,
    ) -> int:
        """For the scheduler: a due time that cannot run, as a Failed call, in its transaction."""
        return self.acceptor.insert_failed(
            project=project, function_id=function_id, schedule_id=schedule_id, scheduled_time=scheduled_time,
            session_id=session_id, data=data, message=message, session=session,
        )

    def function_deleted(self, project: str, function_id: int) -> None:
        self.dispatcher.function_deleted(project, function_id)

    def version_switched(self, function_id: int, previous: int, current: int) -> None:
        self.dispatcher.version_switched(function_id, previous, current)

    def version_retired(self, function_id: int, version: int) -> None:
        self.dispatcher.version_retired(function_id, version)

    def check_waiting(self) -> None:
        self.dispatcher.check_waiting()

    def anything_waiting(self) -> bool:
        return self.dispatcher.anything_waiting()

    def prewarm(self) -> None:
        self.dispatcher.prewarm()

    def close(self) -> None:
        self.dispatcher.close()

    # -- reads ------------------------------------------------------------------------------------
    def _call_row(self, project: str, function_id: int, call_id: int) -> CallLike:
        with self.db.read() as s:
            row = store.get(project, function_id, call_id, session=s)
        if row is None:
            raise NotFound(f"Call {call_id} of function {function_id} does not exist.", missing=[{"id": call_id}])
        return row

    def get(
        self, project: str, caller: Principal, function_id: int, call_id: int, wait_seconds: float = 0
    ) -> CallLike:
        """One call; with ``wait_seconds``, wait up to that long for it to end (long poll)."""
        self.access.require(caller, project, "functionsAcl", "READ")
        with self.waiters.waiting_for(call_id) as waiting:  # before the read: an end after it wakes us
            row = self._call_row(project, function_id, call_id)
            return self.waiters.until_ended(
                row, wait_seconds, waiting, lambda: self._call_row(project, function_id, call_id)
            )

    def by_ids(
        self, project: str, caller: Principal, function_id: int, ids: builtins.list[int], ignore_unknown: bool
    ) -> builtins.list[CallLike]:
        self.access.require(caller, project, "functionsAcl", "READ")
        with self.db.read() as s:
            rows = [store.get(project, function_id, i, session=s) for i in ids]
        return resolve_all(
            ids, rows, what="Calls", ignore_unknown=ignore_unknown, entry=id_entry, dedupe=False
        )

    def list(
        self,
        project: str,
        caller: Principal,
        function_id: int,
        *,
        limit: int,
        cursor: int,
        filt: CallFilter | None = None,
    ) -> tuple[builtins.list[CallLike], int | None]:
        self.access.require(caller, project, "functionsAcl", "READ")
        filt = filt or CallFilter()
        if filt.status is not None and filt.status not in STATUSES:
            raise InvalidRequest(
                f"Unknown call status {filt.status!r}; one of {', '.join(STATUSES)}.", field="status"
            )
        with self.db.read() as s:
            if function_store.get(project, function_id, session=s) is None:
                raise NotFound(f"Function {function_id} does not exist.", missing=[id_entry(function_id)])
            rows = store.list_page(
                project,
                function_id,
                session=s,
                limit=limit + 1,
                before_id=cursor or None,
                status=filt.status,
                schedule_id=filt.schedule_id,
                start_min=filt.start_min,
                start_max=filt.start_max,
                end_min=filt.end_min,
                end_max=filt.end_max,
            )
        next_cursor = rows[limit - 1].id if len(rows) > limit else None
        return list(rows[:limit]), next_cursor

    def response_json(self, project: str, caller: Principal, function_id: int, call_id: int) -> str:
        """The call's response as stored: JSON text (``null`` when it has none), never
        decoded here. A Completed call's response is valid JSON (the executor checks it),
        so it goes into the reply as it is, however large."""
        self.access.require(caller, project, "functionsAcl", "READ")
        with self.db.read() as s:
            row = store.get(project, function_id, call_id, session=s)
        if row is None:
            raise NotFound(f"Call {call_id} of function {function_id} does not exist.", missing=[{"id": call_id}])
        return "null" if row.response is None else row.response

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
        self._prewarm: asyncio.Task[None] | None = None

    async def start(self) -> None:
        replicas = self.calls.replicas
        # on this (the server's) event loop: a call then crosses no thread on its way
        await asyncio.to_thread(self.executor.start, asyncio.get_running_loop())
        await asyncio.to_thread(replicas.heartbeat)
        await asyncio.to_thread(replicas.recover)
        self._next_beat = time.monotonic() + self.calls.settings.replica_heartbeat_seconds
        await super().start()
        self._prewarm = asyncio.create_task(asyncio.to_thread(self.calls.prewarm))

    async def run_once(self) -> None:
        # four times a second: an idle server takes no worker-thread hop for it
        if self.calls.anything_waiting():
            await asyncio.to_thread(self.calls.check_waiting)
        if time.monotonic() >= self._next_beat:
            replicas = self.calls.replicas
            self._next_beat = time.monotonic() + self.calls.settings.replica_heartbeat_seconds
            await asyncio.to_thread(replicas.heartbeat)
            await asyncio.to_thread(replicas.recover)

    async def stop(self) -> None:
        await super().stop()
        await asyncio.to_thread(self.executor.stop)
        await asyncio.to_thread(self.calls.close)
        try:
            await asyncio.to_thread(self.calls.replicas.leave)
        except Exception:
            logging.getLogger("fnhost.calls").exception("could not remove this replica's heartbeat row")



