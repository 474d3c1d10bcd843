"""Function schedules on the wire: the seed's API as the SDK uses it, plus fnhost's extensions.

Seed API: create, list, byids, delete, ``{id}/input_data``. Extensions (ignored by the
SDK, used by the CLI and the web page): ``update``, ``pause``, ``resume``, ``{id}/fires``,
and the extra fields ``paused``, ``timeZone``, ``nextFireTimes``, ``missedRuns`` … on
every schedule object. ``functionExternalId`` is echoed only when the client sent it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fnhost.api.deps import PrincipalDep, SystemDep, check_limit
from fnhost.api.models.common import ByIdsOnly, limit_of
from fnhost.api.models.schedules import SchedulesCreate, SchedulesList, SchedulesUpdate
from fnhost.api.wire import drop_none, items
from fnhost.services.schedules import Schedules
from fnhost.store.schedules import ScheduleFireRow, ScheduleRow

router = APIRouter(tags=["schedules"])


def schedule_out(row: ScheduleRow, schedules: Schedules) -> dict[str, Any]:
    return drop_none(
        {
            "id": row.id,
            "name": row.name,
            "functionId": row.function_id,
            "functionExternalId": row.function_external_id,
            "description": row.description,
            "createdTime": row.created_time,
            "cronExpression": row.cron_expression,
            "sessionId": row.session_id,
            "when": schedules.when(row),
            # extensions
            "timeZone": row.time_zone,
            "paused": row.paused,
            "lastUpdatedTime": row.last_updated_time,
            "nextFireTimes": schedules.next_fire_times(row),
            "lastFireTime": row.last_fire_time,
            "lastCallId": row.last_call_id,
            "missedRuns": row.missed_runs,
            "lastMissedTime": row.last_missed_time,
        }
    )


def fire_out(row: ScheduleFireRow) -> dict[str, Any]:
    return drop_none(
        {
            "scheduledTime": row.scheduled_time,
            "handledTime": row.handled_time,
            "outcome": row.outcome,
            "callId": row.call_id,
            "count": row.count,
            "message": row.message,
        }
    )


@router.post("/functions/schedules")
def create_schedules(
    project: str, system: SystemDep, principal: PrincipalDep, body: SchedulesCreate
) -> dict[str, Any]:
    row = system.schedules.create(project, principal, body.items[0].spec())
    return items([schedule_out(row, system.schedules)])


@router.post("/functions/schedules/list")
def list_schedules(
    project: str, system: SystemDep, principal: PrincipalDep, body: SchedulesList | None = None
) -> dict[str, Any]:
    body = body or SchedulesList()
    limit = limit_of(body.limit, default=100, maximum=10_000)
    filt = body.filter.filter() if body.filter else None
    rows = system.schedules.list(project, principal, limit=limit, filt=filt)
    return items([schedule_out(r, system.schedules) for r in rows])


@router.post("/functions/schedules/byids")
def schedules_by_ids(
    project: str, system: SystemDep, principal: PrincipalDep, body: ByIdsOnly
) -> dict[str, Any]:
    rows = system.schedules.by_ids(project, principal, body.ids(), body.ignore_unknown_ids)
    return items([schedule_out(r, system.schedules) for r in rows])


@router.post("/functions/schedules/delete")
def delete_schedules(
    project: str, system: SystemDep, principal: PrincipalDep, body: ByIdsOnly
) -> dict[str, Any]:
    system.schedules.delete(project, principal, body.ids(), body.ignore_unknown_ids)
    return {}


@router.get("/functions/schedules/{schedule_id}/input_data")
def input_data(
    project: str, schedule_id: int, system: SystemDep, principal: PrincipalDep
) -> dict[str, Any]:
    data = system.schedules.input_data(project, principal, schedule_id)
    return drop_none({"id": schedule_id, "data": data})


@router.get("/functions/schedules/{schedule_id}")
def get_schedule(
    project: str, schedule_id: int, system: SystemDep, principal: PrincipalDep
) -> dict[str, Any]:
    return schedule_out(system.schedules.get(project, principal, schedule_id), system.schedules)


# -- extensions -------------------------------------------------------------------------


@router.post("/functions/schedules/update")
def update_schedules(
    project: str, system: SystemDep, principal: PrincipalDep, body: SchedulesUpdate
) -> dict[str, Any]:
    rows = system.schedules.update(project, principal, [i.change() for i in body.items])
    return items([schedule_out(r, system.schedules) for r in rows])


@router.post("/functions/schedules/pause")
def pause_schedules(
    project: str, system: SystemDep, principal: PrincipalDep, body: ByIdsOnly
) -> dict[str, Any]:
    rows = system.schedules.set_paused(project, principal, body.ids(), True)
    return items([schedule_out(r, system.schedules) for r in rows])


@router.post("/functions/schedules/resume")
def resume_schedules(
    project: str, system: SystemDep, principal: PrincipalDep, body: ByIdsOnly
) -> dict[str, Any]:
    rows = system.schedules.set_paused(project, principal, body.ids(), False)
    return items([schedule_out(r, system.schedules) for r in rows])


@router.post("/functions/schedules/{schedule_id}/pause")
def pause_schedule(
    project: str, schedule_id: int, system: SystemDep, principal: PrincipalDep
) -> dict[str, Any]:
    rows = system.schedules.set_paused(project, principal, schedule_id, True)
    return items([schedule_out(r, system.schedules) for r in rows])


@router.post("/functions/schedules/{schedule_id}/resume")
def resume_schedule(
    project: str, schedule_id: int, system: SystemDep, principal: PrincipalDep
) -> dict[str, Any]:
    rows = system.schedules.set_paused(project, principal, schedule_id, False)
    return items([schedule_out(r, system.schedules) for r in rows])


@router.get("/functions/schedules/{schedule_id}/fires")
def schedule_fires(
    project: str, schedule_id: int, system: SystemDep, principal: PrincipalDep, limit: int = 100
) -> dict[str, Any]:
    limit = check_limit(limit, default=100, maximum=1000)
    rows = system.schedules.fires(project, principal, schedule_id, limit)
    return items([fire_out(r) for r in rows])
