"""The scheduler: claims due schedules with database leases and fires each due time once.

Every replica runs one. A tick:

1. **claims** up to ``BATCH`` due, unpaused schedules that no live lease holds
   (``lease_owner``/``lease_until``; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN
   IMMEDIATE`` on SQLite);
2. for each, works out outside any lock which due times are now past: those late by more
   than the grace window are **missed**; of the rest only the latest **fires** (one
   catch-up run, never a burst), the others are missed too;
3. in **one transaction** re-checks the lease and ``next_fire_time``, inserts the
   ``schedule_fires`` rows (unique per due time, so no second fire can ever commit),
   advances ``next_fire_time`` and releases the lease;
4. starts the call on behalf of the schedule's session, then records its id.

A replica that dies between 3 and 4 leaves a fire row in state ``firing``; once it is
older than a lease, any replica finishes it: if the call exists it is recorded, otherwise
it starts it (within the grace window) or records the due time as missed. A revoked
session, a Failed function or a lost capability gives a Failed call with a message at
that due time; nothing one schedule does stops the others.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from fnhost.auth.capabilities import Principal
from fnhost.clock import now_ms
from fnhost.core.loop import Service
from fnhost.errors import FnhostError
from fnhost.metrics import Metrics
from fnhost.schedule import cron
from fnhost.services.access import Access
from fnhost.services.schedules import Schedules, to_dt, to_ms
from fnhost.services.sessions import Sessions
from fnhost.settings import Settings
from fnhost.store import functions as function_store
from fnhost.store import schedules as store
from fnhost.store.calls import CallRow
from fnhost.store.db import Database
from fnhost.store.schedules import ScheduleFireRow, ScheduleRow

log = logging.getLogger("fnhost.scheduler")

BATCH = 50
# due times counted one by one when a schedule was down for long; past this, counted as "at least"
MISSED_COUNT_CAP = 10_000


@dataclass
class Plan:
    """What to do with one claimed schedule, worked out before taking the write lock."""

    due: int  # the schedule's next_fire_time when claimed
    missed: int = 0
    missed_exact: bool = True
    first_missed: int | None = None
    last_missed: int | None = None
    fire_time: int | None = None
    failure: str | None = None  # set: record a Failed call at fire_time instead of running
    next_fire_time: int | None = None
    function_gone: bool = False


class ScheduledCalls(Protocol):
    """What the scheduler needs of the calls service: its calls go through the call path's
    own accept and record parts (``services/calls``)."""

    def start_scheduled_call(
        self, project: str, function_id: int, session_id: int | None, data: Any, schedule_id: int, scheduled_time: int
    ) -> Any: ...

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
    ) -> int: ...


class Scheduler(Service):
    name = "scheduler"

    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        replica_id: str,
        access: Access,
        sessions: Sessions,
        schedules: Schedules,
        calls: ScheduledCalls,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__()
        self.db = db
        self.settings = settings
        self.owner = replica_id
        self.access = access
        self.sessions = sessions
        self.schedules = schedules
        self.calls = calls
        self.metrics = metrics
        self.interval = self.settings.scheduler_poll_seconds
        self._event_loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._event_loop = asyncio.get_running_loop()
        await super().start()

    def poke(self) -> None:
        """Look again now (from any thread): a schedule was created or changed."""
        loop = self._event_loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.wake)

    async def run_once(self) -> None:
        self.interval = await asyncio.to_thread(self.tick)

    # -- one tick ------------------------------------------------------------------------------
    def tick(self) -> float:
        """Handle everything due now; return how long to sleep before the next look."""
        now = now_ms()
        lease_ms = int(self.settings.scheduler_lease_seconds * 1000)
        with self.db.write() as s:
            ids = store.claim_due(self.owner, now, lease_ms, BATCH, session=s)
        for schedule_id in ids:
            try:
                self._handle(schedule_id)
            except Exception:
                # one schedule's trouble must not stop the others; its lease runs out and
                # the due time is tried again
                log.exception("schedule %s: handling a due time failed", schedule_id)
        self._recover_stuck_fires()
        if len(ids) == BATCH:
            return 0.0
        with self.db.read() as s:
            nxt = store.next_due_time(session=s)
        poll = self.settings.scheduler_poll_seconds
        if nxt is None:
            return poll
        return max(0.0, min(poll, (nxt - now_ms()) / 1000))

    # -- one schedule -------------------------------------------------------------------------
    def _plan(self, row: ScheduleRow, now: int) -> Plan:
        plan = Plan(due=row.next_fire_time or now)
        with self.db.read() as s:
            fn = function_store.get(row.project, row.function_id, session=s)
        if fn is None:
            plan.function_gone = True
            return plan
        c = cron.parse(row.cron_expression, allow_seconds=self.settings.scheduler_seconds_cron)
        tz = cron.zone(row.time_zone)

        def after(ms: int) -> int | None:
            t = c.next_after(to_dt(ms), tz)
            return None if t is None else to_ms(t)

        cutoff = now - int(self.settings.scheduler_missed_run_grace_seconds * 1000)
        x: int | None = plan.due
        while x is not None and x < cutoff:
            if plan.missed >= MISSED_COUNT_CAP:
                plan.missed_exact = False
                x = after(cutoff - 1)
                break
            plan.missed += 1
            plan.first_missed = plan.first_missed or x
            plan.last_missed = x
            x = after(x)
        latest: int | None = None
        while x is not None and x <= now:
            if latest is not None:  # coalesced into the one catch-up run
                plan.missed += 1
                plan.first_missed = plan.first_missed or latest
                plan.last_missed = latest
            latest = x
            x = after(x)
        plan.fire_time = latest
        plan.next_fire_time = x
        if latest is not None:
            plan.failure = self._why_not_runnable(row, fn.status)
        return plan

    def _why_not_runnable(self, row: ScheduleRow, function_status: str) -> str | None:
        if function_status == "Failed":
            return (
                f"Function {row.function_id} is Failed (its deployment did not succeed); "
                f"schedule {row.id} cannot run it."
            )
        try:
            principal: Principal = self.sessions.principal_of(row.session_id)
            self.access.require(principal, row.project, "functionsAcl", "RUN")
        except FnhostError as exc:
            return (
                f"The schedule's session {row.session_id} can no longer run functions: "
                f"{exc.message} Create the schedule again with a valid session."
            )
        return None

    def _handle(self, schedule_id: int) -> None:
        now = now_ms()
        with self.db.read() as s:
            row = s.get(ScheduleRow, schedule_id)
        if row is None or row.lease_owner != self.owner:
            return
        plan = self._plan(row, now)
        if plan.function_gone:
            # the function was deleted under us: its schedules go too (sessions revoked)
            self.schedules.delete_for_function(row.project, row.function_id)
            return
        fire: ScheduleFireRow | None = None
        with self.db.write() as s:
            row = store.get_for_update(schedule_id, session=s)
            if row is None or row.lease_owner != self.owner or row.next_fire_time != plan.due:
                return  # deleted, or another replica took over after our lease ran out
            row.lease_owner = row.lease_until = None
            if row.paused:
                return
            if plan.missed:
                store.add_fire(self._missed_row(row, plan, now), session=s)
                row.missed_runs += plan.missed
                row.last_missed_time = plan.last_missed
            if plan.fire_time is not None:
                fire = ScheduleFireRow(
                    schedule_id=row.id,
                    scheduled_time=plan.fire_time,
                    handled_time=now,
                    outcome="firing",
                    replica=self.owner,
                )
                if plan.failure is not None:
                    call_id = self.calls.record_failed_due_time(
                        project=row.project, function_id=row.function_id, schedule_id=row.id,
                        scheduled_time=plan.fire_time, session_id=row.session_id, data=row.data,
                        message=plan.failure, session=s,
                    )
                    fire.outcome, fire.call_id, fire.message = "failed", call_id, plan.failure
                    row.last_call_id = call_id
                store.add_fire(fire, session=s)
                row.last_fire_time = plan.fire_time
            row.next_fire_time = plan.next_fire_time
            args = (row.project, row.function_id, row.session_id, row.data, row.id)
        if fire is not None and fire.outcome == "firing":
            self._start(fire.id, *args, fire.scheduled_time)

    def _missed_row(self, row: ScheduleRow, plan: Plan, now: int) -> ScheduleFireRow:
        first, last = plan.first_missed, plan.last_missed
        assert first is not None and last is not None
        count = f"{plan.missed}" if plan.missed_exact else f"at least {plan.missed}"
        grace = self.settings.scheduler_missed_run_grace_seconds
        span = f"at {to_dt(first).isoformat()}" if first == last else (
            f"from {to_dt(first).isoformat()} to {to_dt(last).isoformat()}"
        )
        reason = (
            f"late by more than the {grace:g} s grace window" if plan.fire_time is None
            else f"only the latest due time runs after a delay; grace window {grace:g} s"
        )
        return ScheduleFireRow(
            schedule_id=row.id,
            scheduled_time=last,
            handled_time=now,
            outcome="missed",
            count=plan.missed,
            message=f"{count} due time(s) {span} missed ({reason}).",
            replica=self.owner,
        )

    # -- starting the call ----------------------------------------------------------------------
    def _start(
        self,
        fire_id: int,
        project: str,
        function_id: int,
        session_id: int,
        data: Any,
        schedule_id: int,
        scheduled_time: int,
    ) -> None:
        call = self.calls.start_scheduled_call(
            project, function_id, session_id, data, schedule_id, scheduled_time
        )
        call_id = call if isinstance(call, int) else call.id
        with self.db.write() as s:
            fire = s.get(ScheduleFireRow, fire_id)
            if fire is not None:
                fire.outcome, fire.call_id = "called", call_id
            row = s.get(ScheduleRow, schedule_id)
            if row is not None:
                row.last_call_id = call_id
        if self.metrics is not None:
            self.metrics.schedule_fired((now_ms() - scheduled_time) / 1000)

    def _recover_stuck_fires(self) -> None:
        """Finish fires whose replica stopped between recording the fire and starting the call."""
        now = now_ms()
        stale = now - int(self.settings.scheduler_lease_seconds * 1000)
        with self.db.write() as s:
            q = select(ScheduleFireRow).where(
                ScheduleFireRow.outcome == "firing", ScheduleFireRow.handled_time < stale
            ).limit(BATCH)
            if s.get_bind().dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            fires = list(s.scalars(q))
            todo = []
            for fire in fires:
                call_id = s.scalar(
                    select(CallRow.id).where(
                        CallRow.schedule_id == fire.schedule_id,
                        CallRow.scheduled_time == fire.scheduled_time,
                    )
                )
                row = s.get(ScheduleRow, fire.schedule_id)
                if call_id is not None:
                    fire.outcome, fire.call_id = "called", call_id
                elif row is None:
                    fire.outcome, fire.message = "missed", "The schedule was deleted."
                elif now - fire.scheduled_time > self.settings.scheduler_missed_run_grace_seconds * 1000:
                    fire.outcome = "missed"
                    fire.message = "The server stopped before the call started; too late to run."
                    row.missed_runs += 1
                    row.last_missed_time = fire.scheduled_time
                else:
                    fire.handled_time, fire.replica = now, self.owner  # ours now
                    todo.append((fire.id, row.project, row.function_id, row.session_id, row.data,
                                 row.id, fire.scheduled_time))
        for args in todo:
            try:
                self._start(*args)
            except Exception:
                log.exception("schedule %s: restarting a stuck fire failed", args[5])
