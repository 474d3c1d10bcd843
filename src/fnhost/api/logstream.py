"""fnhost extension: a running call's log lines as server-sent events.

``GET /functions/{fid}/calls/{cid}/logs/stream`` answers ``text/event-stream``: one
``data: {"timestamp", "message"}`` event per line (lines printed so far first), then
``event: end`` with ``{"status", "id", "functionId"}`` once the call has ended, then the
stream closes. A comment line every few seconds keeps proxies from closing an idle stream.
Calls running on another replica are followed through the database: their lines arrive
when they end (that replica records them then).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from fnhost.api.deps import PrincipalDep, SystemDep
from fnhost.api.services import Services
from fnhost.auth.capabilities import Principal
from fnhost.core.livelogs import Ended

router = APIRouter(tags=["calls"])

POLL_SECONDS = 0.5  # how often the database is looked at for calls not running here
KEEPALIVE_SECONDS = 10.0


def _event(data: Any, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n"


def _line(timestamp: int, message: str) -> str:
    return _event({"timestamp": timestamp, "message": message})


def events(
    system: Services, project: str, principal: Principal, function_id: int, call_id: int
) -> Iterator[str]:
    """One call's events; the web page serves the same stream behind its sign-in cookie."""
    calls = system.calls
    sub = calls.live.subscribe(call_id)
    metrics = system.metrics
    metrics.log_streams.inc()
    try:
        sent = 0
        row = calls.get(project, principal, function_id, call_id)
        last_keepalive = last_poll = time.monotonic()
        yield f": following call {call_id}\n\n"
        while True:
            if row.status != "Running":
                # ended (here or elsewhere): the recorded lines are complete; send the rest
                for log_row in calls.logs(project, principal, function_id, call_id)[sent:]:
                    yield _line(log_row.timestamp, log_row.message)
                yield _event({"status": row.status, "id": call_id, "functionId": function_id}, "end")
                return
            item = sub.get(timeout=POLL_SECONDS)
            now = time.monotonic()
            if isinstance(item, Ended):
                row = calls.get(project, principal, function_id, call_id)
                continue
            if item is not None:
                sent += 1
                yield _line(*item)
            if now - last_poll >= POLL_SECONDS:
                last_poll = now
                row = calls.get(project, principal, function_id, call_id)
            if now - last_keepalive >= KEEPALIVE_SECONDS:
                last_keepalive = now
                yield ": keepalive\n\n"
    finally:
        sub.close()
        metrics.log_streams.dec()


@router.get("/functions/{function_id}/calls/{call_id}/logs/stream")
def stream_call_logs(
    project: str, function_id: int, call_id: int, system: SystemDep, principal: PrincipalDep
) -> StreamingResponse:
    # authorise and check the call exists before the stream starts, so errors are plain JSON
    system.calls.get(project, principal, function_id, call_id)
    return StreamingResponse(
        events(system, project, principal, function_id, call_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
