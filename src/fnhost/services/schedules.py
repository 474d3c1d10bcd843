"""Schedules: validation, limits, the bound session, and changes the seed's platform lacks.

A schedule runs a function at the due times of a cron expression (UTC unless it has a
``timeZone``), on behalf of the session whose nonce it was created with; that session is
kept until the schedule is deleted, and then revoked. Firing is the scheduler's
(``schedule/scheduler.py``); this module owns what the API sees and may change.

Beyond the seed's API (which the SDK never sends, so it is unaffected): ``paused``,
``timeZone``, ``update`` of cronExpression/data/description/paused/timeZone/name, the
next due times, and the per-schedule record of fires and missed runs.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fnhost.auth.capabilities import Principal
from fnhost.clock import now_ms
from fnhost.errors import InvalidRequest, LimitExceeded, NotFound, Unauthenticated
from fnhost.schedule import cron
from fnhost.services.access import Access
from fnhost.services.sessions import Sessions
from fnhost.settings import Settings
from fnhost.store import functions as function_store
from fnhost.store import schedules as store
from fnhost.store import sessions as session_store
from fnhost.store.db import Database
from fnhost.store.schedules import ScheduleFireRow, ScheduleRow

UPDATABLE = ("name", "description", "cronExpression", "data", "paused", "timeZone")


def to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _id(value: Any, key: str = "id") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequest(f"{key} must be a positive integer.", field=key)
    return value


class Schedules:
    def __init__(
        self, db: Database, access: Access, sessions: Sessions, settings: Settings
    ) -> None:
        self.db = db
        self.access = access
        self.sessions = sessions
        self.settings = settings
        # called after a schedule is created or changed, so the scheduler looks again
        self.on_changed: builtins.list[Callable[[], None]] = []

    # -- cron helpers ------------------------------------------------------------------------
    def parse(self, expression: Any) -> cron.Cron:
        return cron.parse(expression, allow_seconds=self.settings.scheduler_seconds_cron)

    def next_fire_time(self, row: ScheduleRow, after_ms: int) -> int | None:
        nxt = self.parse(row.cron_expression).next_after(to_dt(after_ms), cron.zone(row.time_zone))
        return None if nxt is None else to_ms(nxt)

    def next_fire_times(self, row: ScheduleRow, n: int = 3) -> builtins.list[int]:
        """The next ``n`` due times (ms) from the stored next one; empty when paused."""
        if row.paused or row.next_fire_time is None:
            return []
        c, tz = self.parse(row.cron_expression), cron.zone(row.time_zone)
        first = to_dt(row.next_fire_time)
        return [row.next_fire_time] + [to_ms(t) for t in c.next_times(first, n - 1, tz)]

    @staticmethod
    def when(row: ScheduleRow) -> str:
        return cron.describe(row.cron_expression, row.time_zone)

    describe = when

    def validate_cron(self, expression: Any) -> None:
        """Raise ``InvalidRequest`` with the reason when ``expression`` is not valid here."""
        try:
            self.parse(expression)
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, field="cronExpression") from None

    # -- validation --------------------------------------------------------------------------
    def _data(self, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise InvalidRequest("data must be a JSON object.", field="data")
        size = len(json.dumps(value))
        if size > self.settings.call_data_max_bytes:
            raise InvalidRequest(
                f"data is {size} bytes; at most {self.settings.call_data_max_bytes} are allowed.",
                field="data",
            )
        return value

    @staticmethod
    def _text(value: Any, key: str, maximum: int, *, required: bool = False) -> str | None:
        if value is None and not required:
            return None
        if not isinstance(value, str) or (required and not value.strip()) or len(value) > maximum:
            raise InvalidRequest(
                f"{key} must be a string of {'1' if required else '0'} to {maximum} characters.",
                field=key,
            )
        return value

    @staticmethod
    def _time_zone(value: Any) -> str | None:
        if value is None:
            return None
        try:
            cron.zone(value)  # raises for unknown zones
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, field="timeZone") from None
        return str(value)

    def _function(self, project: str, item: dict[str, Any], *, session: Any) -> Any:
        fid, xid = item.get("functionId"), item.get("functionExternalId")
        if fid is None and xid is None:
            raise InvalidRequest("functionId is required.", field="functionId")
        if fid is not None:
            row = function_store.get(project, _id(fid, "functionId"), session=session)
            if row is None:
                raise NotFound(
                    f"Function {fid} does not exist.", missing=[{"id": fid}], field="functionId"
                )
            if xid is not None and row.external_id != xid:
                raise InvalidRequest(
                    f"Function {row.name!r} (id {fid}) does not have the external id {xid!r}.",
                    field="functionExternalId",
                )
        else:
            if not isinstance(xid, str):
                raise InvalidRequest(
                    "functionExternalId must be a string.", field="functionExternalId"
                )
            row = function_store.by_external_id(project, xid, session=session)
            if row is None:
                raise NotFound(
                    f"No function has the external id {xid!r}.",
                    missing=[{"external_id": xid}],
                    field="functionExternalId",
                )
        if row.status == "Failed":
            raise InvalidRequest(
                f"Function {row.id} is Failed (its deployment did not succeed), so it cannot be "
                "scheduled. Deploy it again and schedule the new function.",
                field="functionId",
            )
        return row

    def _check_limits(self, project: str, function_id: int, *, session: Any) -> None:
        s = self.settings
        if store.count(project, session=session, function_id=function_id) >= s.max_schedules_per_function:
            raise LimitExceeded(
                f"Function {function_id} already has {s.max_schedules_per_function} schedules, "
                "the most allowed. Delete one first."
            )
        if store.count(project, session=session) >= s.max_schedules_per_project:
            raise LimitExceeded(
                f"Project {project!r} already has {s.max_schedules_per_project} schedules, "
                "the most allowed. Delete one first."
            )

    # -- create ------------------------------------------------------------------------------
    def create(self, project: str, caller: Principal, item: dict[str, Any]) -> ScheduleRow:
        self.access.require(caller, project, "functionsAcl", "WRITE")
        name = self._text(item.get("name"), "name", 140, required=True)
        description = self._text(item.get("description"), "description", 500)
        expression = item.get("cronExpression")
        self.validate_cron(expression)
        time_zone = self._time_zone(item.get("timeZone"))
        data = self._data(item.get("data"))
        paused = item.get("paused", False)
        if not isinstance(paused, bool):
            raise InvalidRequest("paused must be a boolean.", field="paused")
        nonce = item.get("nonce")
        if not isinstance(nonce, str) or not nonce:
            raise InvalidRequest(
                "nonce is required: create a session (POST /sessions) and pass its nonce; the "
                "schedule runs on behalf of that session.",
                field="nonce",
            )
        with self.db.read() as s:
            function = self._function(project, item, session=s)
            self._check_limits(project, function.id, session=s)
        # everything checked: only now spend the nonce
        try:
            bound = self.sessions.redeem(project, nonce, lifetime_ms=None)
        except Unauthenticated as exc:
            # 401 would make the SDK report lost project access; the request is what is wrong
            raise InvalidRequest(
                f"Cannot bind the schedule's session: {exc.message}", field="nonce"
            ) from None
        now = now_ms()
        try:
            with self.db.write() as s:
                self._check_limits(project, function.id, session=s)
                row = ScheduleRow(
                    project=project,
                    function_id=function.id,
                    function_external_id=item.get("functionExternalId"),
                    name=name,
                    description=description,
                    cron_expression=expression,
                    time_zone=time_zone,
                    data=data,
                    session_id=bound.id,
                    created_time=now,
                    last_updated_time=now,
                    paused=paused,
                    missed_runs=0,
                )
                row.next_fire_time = self.next_fire_time(row, now)
                store.add(row, session=s)
        except Exception:
            self._revoke([bound.id])
            raise
        self._changed()
        return row

    # -- read --------------------------------------------------------------------------------
    def get(self, project: str, caller: Principal, schedule_id: int) -> ScheduleRow:
        self.access.require(caller, project, "functionsAcl", "READ")
        with self.db.read() as s:
            row = store.get(project, schedule_id, session=s)
        if row is None:
            raise NotFound(f"Schedule {schedule_id} does not exist.", missing=[{"id": schedule_id}])
        return row

    def by_ids(
        self, project: str, caller: Principal, idents: builtins.list[dict[str, Any]], ignore_unknown: bool
    ) -> builtins.list[ScheduleRow]:
        self.access.require(caller, project, "functionsAcl", "READ")
        ids = [_id(i.get("id")) for i in idents]
        with self.db.read() as s:
            rows = [store.get(project, i, session=s) for i in ids]
        missing = [{"id": i} for i, r in zip(ids, rows, strict=True) if r is None]
        if missing and not ignore_unknown:
            raise NotFound("Schedules not found.", missing=missing)
        seen: set[int] = set()
        out = []
        for r in rows:
            if r is not None and r.id not in seen:
                seen.add(r.id)
                out.append(r)
        return out

    def list(
        self, project: str, caller: Principal, *, limit: int, filt: dict[str, Any]
    ) -> builtins.list[ScheduleRow]:
        self.access.require(caller, project, "functionsAcl", "READ")
        created = filt.get("createdTime") or {}
        if not isinstance(created, dict):
            raise InvalidRequest("createdTime must be an object with min and/or max.")
        function_id = filt.get("functionId")
        if function_id is not None:
            function_id = _id(function_id, "functionId")
        with self.db.read() as s:
            xid = filt.get("functionExternalId")
            if xid is not None:
                fn = function_store.by_external_id(project, str(xid), session=s)
                if fn is None or (function_id is not None and fn.id != function_id):
                    return []
                function_id = fn.id
            return store.list_filtered(
                project,
                session=s,
                limit=limit,
                name=filt.get("name"),
                function_id=function_id,
                cron_expression=filt.get("cronExpression"),
                created_min=created.get("min"),
                created_max=created.get("max"),
            )

    def input_data(self, project: str, caller: Principal, schedule_id: int) -> Any:
        return self.get(project, caller, schedule_id).data

    def fires(
        self, project: str, caller: Principal, schedule_id: int, limit: int
    ) -> builtins.list[ScheduleFireRow]:
        self.get(project, caller, schedule_id)
        with self.db.read() as s:
            return store.fires(schedule_id, session=s, limit=limit)

    # -- change ------------------------------------------------------------------------------
    def update(self, project: str, caller: Principal, items: builtins.list[dict[str, Any]]) -> builtins.list[ScheduleRow]:
        """Change schedules in place: ``{"id", "update": {field: {"set": value}}}``.

        A new cronExpression or timeZone, and resuming, start counting due times from now:
        due times that passed while paused are not run.
        """
        self.access.require(caller, project, "functionsAcl", "WRITE")
        changes: builtins.list[tuple[int, dict[str, Any]]] = []
        for item in items:
            sid = _id(item.get("id"))
            update = item.get("update")
            if not isinstance(update, dict) or not update:
                raise InvalidRequest("Each item needs an 'update' object.")
            values: dict[str, Any] = {}
            for key, op in update.items():
                if key not in UPDATABLE:
                    raise InvalidRequest(
                        f"Schedule field {key!r} cannot be updated. Updatable: {', '.join(UPDATABLE)}."
                    )
                if not isinstance(op, dict) or ("set" not in op and "setNull" not in op):
                    raise InvalidRequest(f"update.{key} must be {{'set': value}} or {{'setNull': true}}.")
                value = None if op.get("setNull") is True else op.get("set")
                values[key] = value
            if "name" in values:
                values["name"] = self._text(values["name"], "name", 140, required=True)
            if "description" in values:
                values["description"] = self._text(values["description"], "description", 500)
            if "cronExpression" in values:
                self.validate_cron(values["cronExpression"])
            if "timeZone" in values:
                values["timeZone"] = self._time_zone(values["timeZone"])
            if "data" in values:
                values["data"] = self._data(values["data"])
            if "paused" in values and not isinstance(values["paused"], bool):
                raise InvalidRequest("paused must be a boolean.", field="paused")
            changes.append((sid, values))
        now = now_ms()
        out = []
        with self.db.write() as s:
            rows = [store.get(project, sid, session=s) for sid, _ in changes]
            missing = [{"id": sid} for (sid, _), r in zip(changes, rows, strict=True) if r is None]
            if missing:
                raise NotFound("Schedules not found.", missing=missing)
            for (_, values), row in zip(changes, rows, strict=True):
                assert row is not None
                retime = False
                if "name" in values:
                    row.name = values["name"]
                if "description" in values:
                    row.description = values["description"]
                if "data" in values:
                    row.data = values["data"]
                if "cronExpression" in values and values["cronExpression"] != row.cron_expression:
                    row.cron_expression = values["cronExpression"]
                    retime = True
                if "timeZone" in values and values["timeZone"] != row.time_zone:
                    row.time_zone = values["timeZone"]
                    retime = True
                if "paused" in values and values["paused"] != row.paused:
                    row.paused = values["paused"]
                    retime = retime or not row.paused
                if retime:
                    row.next_fire_time = self.next_fire_time(row, now)
                row.last_updated_time = now
                out.append(row)
        self._changed()
        return out

    def set_paused(
        self, project: str, caller: Principal, ids: int | builtins.list[int], paused: bool
    ) -> builtins.list[ScheduleRow]:
        ids = [ids] if isinstance(ids, int) else ids
        return self.update(project, caller, [{"id": i, "update": {"paused": {"set": paused}}} for i in ids])

    # -- delete ------------------------------------------------------------------------------
    def delete(
        self,
        project: str,
        caller: Principal,
        ids: builtins.list[int] | builtins.list[dict[str, Any]],
        ignore_unknown: bool = False,
    ) -> None:
        """Delete schedules (by id, or ``{"id"}`` items) and revoke their sessions."""
        self.access.require(caller, project, "functionsAcl", "WRITE")
        ids = [_id(i.get("id")) if isinstance(i, dict) else _id(i) for i in ids]
        with self.db.write() as s:
            rows = [store.get(project, i, session=s) for i in ids]
            missing = [{"id": i} for i, r in zip(ids, rows, strict=True) if r is None]
            if missing and not ignore_unknown:
                raise NotFound("Schedules not found.", missing=missing)
            present = [r for r in rows if r is not None]
            store.delete_rows([r.id for r in present], session=s)
            self._revoke_in(s, [r.session_id for r in present])

    def delete_for_function(self, project: str, function_id: int) -> None:
        """The functions service's ``on_deleted`` hook: a function's schedules go with it."""
        with self.db.write() as s:
            rows = [r for r in store.for_function(function_id, session=s) if r.project == project]
            store.delete_rows([r.id for r in rows], session=s)
            self._revoke_in(s, [r.session_id for r in rows])

    @staticmethod
    def _revoke_in(s: Any, session_ids: builtins.list[int]) -> None:
        for sid in session_ids:
            row = session_store.get_any(sid, session=s)
            if row is not None and row.status in ("READY", "ACTIVE"):
                row.status = "REVOKED"

    def _revoke(self, session_ids: builtins.list[int]) -> None:
        with self.db.write() as s:
            self._revoke_in(s, session_ids)

    def _changed(self) -> None:
        for hook in self.on_changed:
            hook()
