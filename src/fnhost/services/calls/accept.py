"""Accepting a call: the first part of the call path.

In one transaction: the function exists in the project and may be called, the caller's
nonce is redeemed into the call's session, and the call's row is written ``Running`` before
anything runs. The nonce is spent only if the call is recorded. Scheduled calls come here too
(their session was bound when the schedule was made), and so does a due time that cannot run:
it is recorded as a Failed call in the scheduler's own transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from fnhost.auth.passwords import sha256_hex
from fnhost.clock import now_ms
from fnhost.errors import InvalidRequest, NotFound, PayloadTooLarge
from fnhost.services.calls.view import CallView
from fnhost.services.sessions import Sessions
from fnhost.statuses import CallStatus, FunctionStatus
from fnhost.store import calls as store
from fnhost.store import functions as function_store
from fnhost.store.db import Database
from fnhost.store.direct import FUNCTION_STAMP, Direct, FunctionStamp
from fnhost.store.functions import FunctionRow

# a call's session lives as long as a call may
CALL_SESSION_LIFETIME_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class CallRequest:
    """What a caller asks for: the handler's ``data``, and a nonce from ``POST /sessions``."""

    data: dict[str, Any] | None = None
    nonce: str | None = None


@dataclass(frozen=True)
class Accepted:
    """A recorded call, with what dispatching it needs."""

    call: CallView
    function: FunctionRow
    session_id: int | None
    data: Any


class Acceptor:
    def __init__(self, db: Database, sessions: Sessions, *, data_max_bytes: int, replica_id: str) -> None:
        self.db = db
        self.sessions = sessions
        self.data_max_bytes = data_max_bytes
        self.replica_id = replica_id
        self.direct = Direct(db)
        # function id -> (its stamp, its row): a function called again is not read again
        self._rows: dict[int, tuple[tuple[Any, ...], FunctionRow]] = {}

    def check(self, request: CallRequest) -> None:
        if request.data is not None and not isinstance(request.data, dict):
            raise InvalidRequest("data must be a JSON object.", field="data")
        size = len(json.dumps(request.data))
        if size > self.data_max_bytes:
            raise PayloadTooLarge(
                f"data is {size} bytes of JSON, more than the limit of {self.data_max_bytes} bytes.",
                field="data",
            )

    def accept(self, project: str, function_id: int, request: CallRequest) -> Accepted:
        """Record a caller's call (capabilities are checked by the caller of this)."""
        self.check(request)
        if request.nonce:
            now = now_ms()
            read: list[FunctionStamp] = []

            def callable_or_refuse(found: FunctionStamp | None) -> None:
                self._refuse_unless_callable(function_id, found)
                assert found is not None
                read.append(found)

            got = self.direct.accept(
                project=project,
                function_id=function_id,
                nonce_hash=sha256_hex(request.nonce),
                now=now,
                session_expires=now + CALL_SESSION_LIFETIME_MS,
                data=request.data,
                owner=self.replica_id,
                check=callable_or_refuse,
            )
            if got is not None:
                call = CallView(
                    id=got.call_id,
                    project=project,
                    function_id=function_id,
                    status=CallStatus.RUNNING,
                    start_time=got.start_time,
                    function_version=got.function_version,
                )
                function = self._function_row(project, function_id, read[0].stamp)
                return Accepted(call, function, got.session_id, request.data)
        # the nonce did not redeem (or there is none): this path says why, in the same words
        # as everywhere else a nonce is redeemed
        with self.db.write() as s:
            function = self._callable(project, function_id, session=s)
            session = self.sessions.redeem(project, request.nonce, lifetime_ms=CALL_SESSION_LIFETIME_MS, session=s)
            call = self._insert(function, session.id, request.data, session=s)
        return Accepted(call, function, session.id, request.data)

    def accept_scheduled(
        self, project: str, function_id: int, session_id: int | None, data: Any, schedule_id: int, scheduled_time: int
    ) -> Accepted:
        """Record a schedule's call at a due time (its session is the schedule's)."""
        with self.db.write() as s:
            function = self._callable(project, function_id, session=s)
            call = self._insert(
                function, session_id, data, schedule_id=schedule_id, scheduled_time=scheduled_time, session=s
            )
        return Accepted(call, function, session_id, data)

    @staticmethod
    def insert_failed(
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
        """A due time that cannot run, recorded as a Failed call saying why (in the caller's
        transaction: the scheduler's, with the fire row)."""
        now = now_ms()
        return store.insert_call(
            {
                "project": project,
                "function_id": function_id,
                "status": CallStatus.FAILED,
                "start_time": now,
                "end_time": now,
                "scheduled_time": scheduled_time,
                "schedule_id": schedule_id,
                "session_id": session_id,
                "data": data,
                "error": {"message": message, "trace": None},
            },
            session=session,
        )

    @staticmethod
    def _callable(project: str, function_id: int, *, session: Session) -> FunctionRow:
        row = function_store.get(project, function_id, session=session)
        Acceptor._refuse_unless_callable(function_id, row)
        assert row is not None
        return row

    @staticmethod
    def _refuse_unless_callable(function_id: int, row: FunctionRow | FunctionStamp | None) -> None:
        if row is None:
            raise NotFound(f"Function {function_id} does not exist.", missing=[{"id": function_id}])
        if row.status == FunctionStatus.FAILED:
            message = (row.error or {}).get("message") or "unknown error"
            raise InvalidRequest(f"Function {function_id} failed to deploy and cannot be called: {message}")

    def _function_row(self, project: str, function_id: int, stamp: tuple[Any, ...]) -> FunctionRow:
        """The function's row for dispatching its call: the one read before while its stamp
        (``store.direct.FUNCTION_STAMP``: status, build, code) reads the same, else read again."""
        kept = self._rows.get(function_id)
        if kept is not None and kept[0] == stamp:
            return kept[1]
        with self.db.read() as s:
            row = function_store.get(project, function_id, session=s)
        if row is None:  # deleted just now: dispatching the call will say so
            raise NotFound(f"Function {function_id} does not exist.", missing=[{"id": function_id}])
        if len(self._rows) > 10_000:
            self._rows.clear()
        self._rows[function_id] = (tuple(getattr(row, c) for c in FUNCTION_STAMP), row)
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
    ) -> CallView:
        start = now_ms()
        call_id = store.insert_call(
            {
                "project": function.project,
                "function_id": function.id,
                "status": CallStatus.RUNNING,
                "start_time": start,
                "session_id": session_id,
                "data": data,
                "schedule_id": schedule_id,
                "scheduled_time": scheduled_time,
                "owner": self.replica_id,
                "function_version": function.version,
            },
            session=session,
        )
        return CallView(
            id=call_id,
            project=function.project,
            function_id=function.id,
            status=CallStatus.RUNNING,
            start_time=start,
            scheduled_time=scheduled_time,
            schedule_id=schedule_id,
            function_version=function.version,
        )
