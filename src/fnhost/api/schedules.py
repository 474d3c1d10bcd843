"""Function schedules on the wire: the seed's API as the SDK uses it, plus fnhost's extensions.

Seed API: create, list, byids, delete, ``{id}/input_data``. Extensions (ignored by the
SDK, used by the CLI and the web page): ``update``, ``pause``, ``resume``, ``{id}/fires``,
and the extra fields ``paused``, ``timeZone``, ``nextFireTimes``, ``missedRuns`` … on
every schedule object. ``functionExternalId`` is echoed only when the client sent it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from fnhost.api.deps import PrincipalDep, SystemDep, body_items, check_limit, ignore_unknown
from fnhost.api.wire import drop_none, items
from fnhost.errors import InvalidRequest
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


def _body(body: Any) -> dict[str, Any]:
    body = body or {}
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be an object.")
    return body


def _ids(body: Any) -> list[int]:
    ids = []
    for item in body_items(body):
        value = item.get("id")
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidRequest("Schedules are identified by 'id' (an integer).")
        ids.append(value)
    return ids


@router.post("/functions/schedules")
def create_schedules(
    project: str, system: SystemDep, principal: PrincipalDep, body: Any = Body(None)
) -> dict[str, Any]:
    values = body_items(body, maximum=1)
    row = system.schedules.create(project, principal, values[0])
    return items([schedule_out(row, system.schedules)])


@router.post("/functions/schedules/list")
def list_schedules(
    project: str, system: SystemDep, principal: PrincipalDep, body: Any = Body(None)
) -> dict[str, Any]:
    body = _body(body)
    filt = body.get("filter") or {}
    if not isinstance(filt, dict):
        raise InvalidRequest("filter must be an object.")
    limit = check_limit(body.get("limit"), default=100, maximum=10_000)
    rows = system.schedules.list(project, principal, limit=limit, filt=filt)
    return items([schedule_out(r, system.schedules) for r in rows])


@router.post("/functions/schedules/byids")
def schedules_by_ids(
    project: str, system: SystemDep, principal: PrincipalDep, body: Any = Body(None)
) -> dict[str, Any]:
    values = body_items(body)
    rows = system.schedules.by_ids(project, principal, values, ignore_unknown(body))
    return items([schedule_out(r, system.schedules) for r in rows])


@router.post("/functions/schedules/delete")
def delete_schedules(
    project: str, system: SystemDep, principal: PrincipalDep, body: Any = Body(None)
) -> dict[str, Any]:
    system.schedules.delete(project, principal, _ids(body), ignore_unknown(_body(body)))
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
    project: str, system: SystemDep, principal: PrincipalDep, body: Any = Body(None)
) -> dict[str, Any]:
    rows = system.schedules.update(project, principal, body_items(body))
    return items([schedule_out(r, system.schedules) for r in rows])


@router.post("/functions/schedules/pause")
def pause_schedules(
    project: str, system: SystemDep, principal: PrincipalDep, body: Any = Body(None)
) -> dict[str, Any]:
    rows = system.schedules.set_paused(project, principal, _ids(body), True)
    return items([schedule_out(r, system.schedules) for r in rows])


@router.post("/functions/schedules/resume")
def resume_schedules(
    project: str, system: SystemDep, principal: PrincipalDep, body: Any = Body(None)
) -> dict[str, Any]:
    rows = system.schedules.set_paused(project, principal, _ids(body), False)
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
