"""/functions/{id}/call and /functions/{id}/calls/…: call, list, byids, response, logs, wait."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fnhost.api.deps import (
    PrincipalDep,
    SystemDep,
    check_limit,
    int_cursor,
    json_body,
    json_response,
    principal_of,
    quickly,
)
from fnhost.api.models.calls import CallBody, CallsList
from fnhost.api.models.common import ByIdsOnly, limit_of
from fnhost.api.services import Services
from fnhost.api.wire import drop_none, items, parse
from fnhost.auth.capabilities import Principal
from fnhost.errors import InvalidRequest
from fnhost.services.calls import CallFilter, CallLike, Waiting

router = APIRouter(tags=["calls"])


def call_out(row: CallLike) -> dict[str, Any]:
    return drop_none(
        {
            "id": row.id,
            "startTime": row.start_time,
            "endTime": row.end_time,
            "status": row.status,
            "functionId": row.function_id,
            "scheduledTime": row.scheduled_time,
            "scheduleId": row.schedule_id,
            "error": row.error,
            "usage": usage_out(row),
            "functionVersion": row.function_version,  # fnhost extension: the version it ran
        }
    )


def usage_out(row: CallLike) -> dict[str, int] | None:
    """fnhost extension (the SDK ignores keys it does not know): what an ended call used
    and where its time went. Queued: accepted → handed to the executor; starting: → its
    process ran it (a cold zygote shows here); running: → it ended."""
    if row.end_time is None or row.cpu_user_ms is None:
        return None
    out = {
        "cpuTimeMs": (row.cpu_user_ms or 0) + (row.cpu_system_ms or 0),
        "cpuUserMs": row.cpu_user_ms or 0,
        "cpuSystemMs": row.cpu_system_ms or 0,
        "peakMemoryBytes": row.peak_memory_bytes or 0,
    }
    if row.dispatch_time is not None:
        out["queuedMs"] = max(0, row.dispatch_time - row.start_time)
        if row.run_start_time is not None:
            out["startingMs"] = max(0, row.run_start_time - row.dispatch_time)
    if row.run_start_time is not None:
        out["runningMs"] = max(0, row.end_time - row.run_start_time)
    return out


@router.post("/functions/{function_id}/call", response_model=None)
async def call_function(project: str, function_id: int, request: Request) -> Response:
    """Start a call. The reply waits up to ``waitSeconds`` (fnhost extension; default the
    ``call_reply_wait_seconds`` setting) for the call to end, so a fast call comes back
    already ``Completed`` and cognite-sdk's ``func.call()`` has nothing to poll.

    Async: the token check, the accept and the dispatch take one worker-thread hop, and the
    wait holds no thread (it awaits the end on the event loop)."""
    system: Services = request.app.state.system
    body = await json_body(request)
    wait = wait_seconds(request, default=system.settings.call_reply_wait_seconds)

    def start() -> tuple[CallLike, Waiting]:
        principal = principal_of(request)  # who asks, before what they ask is looked at
        request_ = parse(CallBody, {} if body is None else body).request()
        return system.calls.start(project, principal, function_id, request_)

    call, waiting = await quickly(request, start)
    try:
        call = await system.calls.until_ended_async(project, function_id, call, wait, waiting)
    finally:
        system.calls.stop_waiting(call.id, waiting)
    return json_response(call_out(call))


def wait_seconds(request: Request, *, default: float) -> float:
    """``?waitSeconds=`` read here rather than declared: FastAPI's parameter solving is a
    measurable part of a call's cost on this endpoint."""
    given = request.query_params.get("waitSeconds")
    if given is None:
        return default
    try:
        value = float(given)
    except ValueError:
        raise InvalidRequest(f"waitSeconds must be a number of seconds, not {given!r}.") from None
    if not math.isfinite(value):
        raise InvalidRequest(f"waitSeconds must be a number of seconds, not {given!r}.")
    return value


def _list(
    project: str,
    function_id: int,
    system: Services,
    principal: Principal,
    filt: CallFilter | None,
    limit: int | None,
    cursor: str | None,
) -> dict[str, Any]:
    rows, next_cursor = system.calls.list(
        project,
        principal,
        function_id,
        limit=limit_of(limit, default=100, maximum=10_000),
        cursor=int_cursor(cursor),
        filt=filt,
    )
    out = items([call_out(r) for r in rows])
    if next_cursor is not None:
        out["nextCursor"] = str(next_cursor)
    return out


@router.post("/functions/{function_id}/calls/list")
def list_calls(
    project: str, function_id: int, system: SystemDep, principal: PrincipalDep, body: CallsList | None = None
) -> dict[str, Any]:
    body = body or CallsList()
    filt = body.filter.filter() if body.filter else None
    return _list(project, function_id, system, principal, filt, body.limit, body.cursor)


@router.get("/functions/{function_id}/calls")
def list_calls_get(
    project: str,
    function_id: int,
    system: SystemDep,
    principal: PrincipalDep,
    status: str | None = None,
    scheduleId: int | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The GET form of calls/list, as the CDF API has it (filters as query parameters)."""
    filt = CallFilter(status=status, schedule_id=scheduleId)
    return _list(project, function_id, system, principal, filt, check_limit(limit, default=100, maximum=10_000), cursor)


@router.post("/functions/{function_id}/calls/byids")
def calls_by_ids(
    project: str, function_id: int, system: SystemDep, principal: PrincipalDep, body: ByIdsOnly
) -> dict[str, Any]:
    rows = system.calls.by_ids(project, principal, function_id, body.ids(), body.ignore_unknown_ids)
    return items([call_out(r) for r in rows])


@router.get("/functions/{function_id}/calls/{call_id}")
def get_call(
    project: str,
    function_id: int,
    call_id: int,
    system: SystemDep,
    principal: PrincipalDep,
    waitSeconds: float = 0,
) -> dict[str, Any]:
    """One call. fnhost extension: ``?waitSeconds=N`` (≤ 60) answers when the call ends."""
    return call_out(system.calls.get(project, principal, function_id, call_id, wait_seconds=waitSeconds))


@router.post("/functions/{function_id}/calls/{call_id}/wait")
def wait_call(
    project: str,
    function_id: int,
    call_id: int,
    system: SystemDep,
    principal: PrincipalDep,
    waitSeconds: float = 30,
) -> dict[str, Any]:
    """fnhost extension: the call once it has ended, or as it is after ``waitSeconds``."""
    return call_out(system.calls.get(project, principal, function_id, call_id, wait_seconds=waitSeconds))


@router.get("/functions/{function_id}/calls/{call_id}/response", response_model=None)
async def call_response(project: str, function_id: int, call_id: int, request: Request) -> Response:
    """Async, as the call endpoints (cognite-sdk reads a response after each call): one
    hop at most, and the stored response JSON goes into the reply without being decoded
    and encoded again."""
    system: Services = request.app.state.system

    def read() -> str:
        return system.calls.response_json(project, principal_of(request), function_id, call_id)

    response = await quickly(request, read)
    body = f'{{"callId":{call_id},"functionId":{function_id},"response":{response}}}'
    return Response(body.encode(), media_type="application/json")


@router.get("/functions/{function_id}/calls/{call_id}/logs")
def call_logs(
    project: str, function_id: int, call_id: int, system: SystemDep, principal: PrincipalDep
) -> dict[str, Any]:
    rows = system.calls.logs(project, principal, function_id, call_id)
    return items([{"timestamp": r.timestamp, "message": r.message} for r in rows])
