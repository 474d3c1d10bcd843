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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fnhost.auth.capabilities import Principal
from fnhost.clock import now_ms
from fnhost.errors import InvalidRequest, LimitExceeded, NotFound, Unauthenticated
from fnhost.schedule import cron
from fnhost.services.access import Access
from fnhost.services.identifiers import Identifier, id_entry, resolve_all
from fnhost.services.sessions import Sessions
from fnhost.settings import Settings
from fnhost.store import functions as function_store
from fnhost.store import schedules as store
from fnhost.store import sessions as session_store
from fnhost.store.db import Database
from fnhost.store.schedules import ScheduleFireRow, ScheduleRow

UPDATABLE = ("name", "description", "cron_expression", "data", "paused", "time_zone")


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule to create: ``function_id`` or ``function_external_id`` names its function,
    ``nonce`` (of ``POST /sessions``) the session it runs as."""

    name: str
    cron_expression: str
    nonce: str | None = None
    function_id: int | None = None
    function_external_id: str | None = None
    description: str | None = None
    data: dict[str, Any] | None = None
    time_zone: str | None = None
    paused: bool = False


@dataclass(frozen=True)
class ScheduleChange:
    """A change of schedule ``id``: the fields named in ``fields`` (of ``UPDATABLE``) take
    the values given here (None clears one)."""

    id: int
    fields: frozenset[str]
    name: str | None = None
    description: str | None = None
    cron_expression: str | None = None
    data: dict[str, Any] | None = None
    paused: bool | None = None
    time_zone: str | None = None


@dataclass(frozen=True)
class ScheduleFilter:
    name: str | None = None
    function_id: int | None = None
    function_external_id: str | None = None
    cron_expression: str | None = None
    created_min: int | None = None
    created_max: int | None = None


def to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


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
            raise InvalidRequest(exc.message, field="cron_expression") from None

    # -- validation --------------------------------------------------------------------------
    def _data(self, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        size = len(json.dumps(value))
        if size > self.settings.call_data_max_bytes:
            raise InvalidRequest(
                f"data is {size} bytes; at most {self.settings.call_data_max_bytes} are allowed.",
                field="data",
            )
        return value

    @staticmethod
    def _text(value: str | None, key: str, maximum: int, *, required: bool = False) -> str | None:
        if value is None and not required:
            return None
        if value is None or (required and not value.strip()) or len(value) > maximum:
            raise InvalidRequest(
                f"{key} must be a string of {'1' if required else '0'} to {maximum} characters.",
                field=key,
            )
        return value

    @staticmethod
    def _time_zone(value: str | None) -> str | None:
        if value is None:
            return None
        try:
            cron.zone(value)  # raises for unknown zones
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, field="time_zone") from None
        return value

    def _function(self, project: str, spec: ScheduleSpec, *, session: Any) -> Any:
        fid, xid = spec.function_id, spec.function_external_id
        if fid is not None:
            row = function_store.get(project, fid, session=session)
            if row is None:
                raise NotFound(
                    f"Function {fid} does not exist.", missing=[id_entry(fid)], field="function_id"
                )
            if xid is not None and row.external_id != xid:
                raise InvalidRequest(
                    f"Function {row.name!r} (id {fid}) does not have the external id {xid!r}.",
                    field="function_external_id",
                )
        elif xid is not None:
            row = function_store.by_external_id(project, xid, session=session)
            if row is None:
                raise NotFound(
                    f"No function has the external id {xid!r}.",
                    missing=[Identifier(external_id=xid).entry(snake_case=True)],
                    field="function_external_id",
                )
        else:
            raise InvalidRequest("functionId is required.", field="function_id")
        if row.status == "Failed":
            raise InvalidRequest(
                f"Function {row.id} is Failed (its deployment did not succeed), so it cannot be "
                "scheduled. Deploy it again and schedule the new function.",
                field="function_id",
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
    def create(self, project: str, caller: Principal, spec: ScheduleSpec) -> ScheduleRow:
        self.access.require(caller, project, "functionsAcl", "WRITE")
        name = self._text(spec.name, "name", 140, required=True)
        description = self._text(spec.description, "description", 500)
        expression = spec.cron_expression
        self.validate_cron(expression)
        time_zone = self._time_zone(spec.time_zone)
        data = self._data(spec.data)
        paused = spec.paused
        nonce = spec.nonce
        if not nonce:
            raise InvalidRequest(
                "nonce is required: create a session (POST /sessions) and pass its nonce; the "
                "schedule runs on behalf of that session.",
                field="nonce",
            )
        with self.db.read() as s:
            function = self._function(project, spec, session=s)
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
                    function_external_id=spec.function_external_id,
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
        self, project: str, caller: Principal, ids: builtins.list[int], ignore_unknown: bool
    ) -> builtins.list[ScheduleRow]:
        self.access.require(caller, project, "functionsAcl", "READ")
        with self.db.read() as s:
            rows = [store.get(project, i, session=s) for i in ids]
        return resolve_all(ids, rows, what="Schedules", ignore_unknown=ignore_unknown, entry=id_entry)

    def list(
        self, project: str, caller: Principal, *, limit: int, filt: ScheduleFilter | None = None
    ) -> builtins.list[ScheduleRow]:
        self.access.require(caller, project, "functionsAcl", "READ")
        filt = filt or ScheduleFilter()
        function_id = filt.function_id
        with self.db.read() as s:
            xid = filt.function_external_id
            if xid is not None:
                fn = function_store.by_external_id(project, xid, session=s)
                if fn is None or (function_id is not None and fn.id != function_id):
                    return []
                function_id = fn.id
            return store.list_filtered(
                project,
                session=s,
                limit=limit,
                name=filt.name,
                function_id=function_id,
                cron_expression=filt.cron_expression,
                created_min=filt.created_min,
                created_max=filt.created_max,
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
    def update(
        self, project: str, caller: Principal, changes: builtins.list[ScheduleChange]
    ) -> builtins.list[ScheduleRow]:
        """Change schedules in place (the fields each change names).

        A new cron expression or time zone, and resuming, start counting due times from now:
        due times that passed while paused are not run.
        """
        self.access.require(caller, project, "functionsAcl", "WRITE")
        checked: builtins.list[ScheduleChange] = []
        for change in changes:
            unknown = sorted(change.fields - set(UPDATABLE))
            if unknown:
                raise InvalidRequest(
                    f"Schedule field(s) {unknown} cannot be updated. Updatable: {', '.join(UPDATABLE)}."
                )
            if not change.fields:
                raise InvalidRequest("Each item needs an 'update' object.")
            f = change.fields
            if "name" in f:
                self._text(change.name, "name", 140, required=True)
            if "description" in f:
                self._text(change.description, "description", 500)
            if "cron_expression" in f:
                self.validate_cron(change.cron_expression)
            if "time_zone" in f:
                self._time_zone(change.time_zone)
            if "data" in f:
                self._data(change.data)
            if "paused" in f and change.paused is None:
                raise InvalidRequest("paused must be true or false.", field="paused")
            checked.append(change)
        now = now_ms()
        out = []
        with self.db.write() as s:
            rows = [store.get(project, c.id, session=s) for c in checked]
            resolve_all(
                [c.id for c in checked], rows, what="Schedules", ignore_unknown=False,
                entry=id_entry, dedupe=False,
            )
            for change, row in zip(checked, rows, strict=True):
                assert row is not None
                f = change.fields
                retime = False
                if "name" in f:
                    row.name = change.name or row.name
                if "description" in f:
                    row.description = change.description
                if "data" in f:
                    row.data = change.data
                if "cron_expression" in f and change.cron_expression != row.cron_expression:
                    row.cron_expression = change.cron_expression or row.cron_expression
                    retime = True
                if "time_zone" in f and change.time_zone != row.time_zone:
                    row.time_zone = change.time_zone
                    retime = True
                if "paused" in f and change.paused != row.paused:
                    row.paused = bool(change.paused)
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
        return self.update(
            project,
            caller,
            [ScheduleChange(id=i, fields=frozenset({"paused"}), paused=paused) for i in ids],
        )

    # -- delete ------------------------------------------------------------------------------
    def delete(
        self, project: str, caller: Principal, ids: builtins.list[int], ignore_unknown: bool = False
    ) -> None:
        """Delete schedules and revoke their sessions."""
        self.access.require(caller, project, "functionsAcl", "WRITE")
        with self.db.write() as s:
            rows = [store.get(project, i, session=s) for i in ids]
            present = resolve_all(
                ids, rows, what="Schedules", ignore_unknown=ignore_unknown, entry=id_entry,
                dedupe=False,
            )
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
