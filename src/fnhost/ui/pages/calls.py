"""Calls from the function page: the call box, one call's outcome, its live log lines.

These answer the page's script in JSON (``{"error": …, "field": …}`` when refused).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from fnhost.api import logstream
from fnhost.api.calls import usage_out
from fnhost.errors import FnhostError, Unauthenticated
from fnhost.ui import actions
from fnhost.ui.fields import GENERAL, form_field
from fnhost.ui.web import (
    SignedIn,
    SignedInScript,
    SystemDep,
    fmt_duration,
    fmt_ms,
    overview_of,
    page_router,
)

router = page_router()


def _refused(message: str, field: str = GENERAL, status: int = 400) -> Response:
    body: dict[str, Any] = {"error": message}
    if field != GENERAL:
        body["field"] = field
    return JSONResponse(body, status_code=status)


@router.post("/ui/functions/{function_id}/call")
async def call_function(
    request: Request, sess: SignedInScript, system: SystemDep, function_id: int
) -> Response:
    try:
        body = await request.json()
        text = body["data"] if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise ValueError
    except (ValueError, KeyError):
        return _refused('Send {"data": "<json text>"}.')
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        return _refused(
            f"Invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.", "data"
        )
    if not isinstance(data, dict):
        return _refused('The call data must be a JSON object, like {"x": 1}.', "data")
    try:
        call_id = await run_in_threadpool(actions.start_call, system, sess, function_id, data)
    except Unauthenticated:
        raise
    except FnhostError as exc:
        return _refused(exc.message, form_field("call", exc), exc.status)
    return JSONResponse({"callId": call_id, "url": f"/ui/functions/{function_id}/calls/{call_id}"})


@router.get("/ui/functions/{function_id}/calls/{call_id}")
def call_state(
    sess: SignedIn, system: SystemDep, function_id: int, call_id: int, wait: float = 0
) -> Response:
    """A call with its response and logs; ``?wait=N`` answers when it ends (or after N s)."""
    try:
        if wait > 0:
            system.calls.get(sess.project, sess.principal, function_id, call_id, wait_seconds=wait)
        row, logs = overview_of(system).call_detail(
            sess.project, sess.principal, function_id, call_id
        )
    except Unauthenticated:
        raise
    except FnhostError as exc:
        return _refused(exc.message, status=exc.status)
    response: Any = None
    if row.response is not None:
        try:
            response = json.loads(row.response)
        except ValueError:
            response = row.response
    return JSONResponse(
        {
            "id": row.id,
            "status": row.status,
            "startTime": fmt_ms(row.start_time),
            "duration": fmt_duration(row.start_time, row.end_time),
            "scheduleId": row.schedule_id,
            "error": row.error,
            "hasResponse": row.response is not None,
            "response": response,
            "usage": usage_text(row),
            "logs": [f"{fmt_ms(line.timestamp)[11:19]}  {line.message}" for line in logs],
        }
    )


def usage_text(row: Any) -> str:
    """What an ended call used, for a person: "CPU 1.2 s · peak memory 300 MB · …"."""
    usage = usage_out(row)
    if usage is None:
        return ""

    def seconds(ms: int) -> str:
        return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.2f} s"

    parts = [f"CPU {seconds(usage['cpuTimeMs'])}", f"peak memory {usage['peakMemoryBytes'] / 2**20:.0f} MB"]
    parts += [f"{label} {seconds(usage[key])}" for key, label in
              (("queuedMs", "queued"), ("startingMs", "starting"), ("runningMs", "running")) if key in usage]
    return " · ".join(parts)


@router.get("/ui/functions/{function_id}/calls/{call_id}/logs/stream")
def call_log_stream(sess: SignedIn, system: SystemDep, function_id: int, call_id: int) -> Response:
    """The API's live log stream (server-sent events), for the signed-in browser."""
    try:  # authorise and check the call exists before the stream starts
        system.calls.get(sess.project, sess.principal, function_id, call_id)
    except Unauthenticated:
        raise
    except FnhostError as exc:
        return _refused(exc.message, status=exc.status)
    return StreamingResponse(
        logstream.events(system, sess.project, sess.principal, function_id, call_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
