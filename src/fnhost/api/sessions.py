"""/sessions: create (client credentials, token exchange), list, byids, revoke."""

from __future__ import annotations

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
from fnhost.api.models.common import ByIdsOnly
from fnhost.api.models.sessions import SessionsCreate
from fnhost.api.services import Services
from fnhost.api.wire import drop_none, items, parse
from fnhost.services.sessions import CreatedSession
from fnhost.store.sessions import SessionRow

router = APIRouter(tags=["sessions"])


def session_out(row: SessionRow) -> dict[str, Any]:
    return drop_none(
        {
            "id": row.id,
            "type": row.type,
            "status": row.status,
            "creationTime": row.created_time,
            "expirationTime": row.expiration_time,
            "clientId": row.client_id,
        }
    )


@router.post("/sessions", response_model=None)
async def create_sessions(project: str, request: Request) -> Response:
    """Async, as the call endpoint (the SDK makes a session per call): one worker-thread
    hop for the token check and the insert."""
    system: Services = request.app.state.system
    body = await json_body(request)

    def create() -> CreatedSession:
        principal = principal_of(request)  # who asks, before what they ask is looked at
        return system.sessions.create(project, principal, parse(SessionsCreate, body).items[0].request())

    created = await quickly(request, create)
    return json_response(
        items(
            [
                drop_none(
                    {
                        "id": created.id,
                        "type": created.type,
                        "status": created.status,
                        "nonce": created.nonce,
                        "clientId": created.client_id,
                    }
                )
            ]
        )
    )


@router.get("/sessions")
def list_sessions(
    project: str,
    system: SystemDep,
    principal: PrincipalDep,
    limit: int = 25,
    cursor: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    limit = check_limit(limit, default=25, maximum=1000)
    rows = system.sessions.list(project, principal, limit=limit, cursor=int_cursor(cursor), status=status)
    out: dict[str, Any] = items([session_out(r) for r in rows])
    if len(rows) == limit:
        out["nextCursor"] = str(rows[-1].id)
    return out


@router.post("/sessions/byids")
def sessions_by_ids(project: str, system: SystemDep, principal: PrincipalDep, body: ByIdsOnly) -> dict[str, Any]:
    rows = system.sessions.by_ids(project, principal, body.ids(), body.ignore_unknown_ids)
    return items([session_out(r) for r in rows])


@router.post("/sessions/revoke")
def revoke_sessions(project: str, system: SystemDep, principal: PrincipalDep, body: ByIdsOnly) -> dict[str, Any]:
    rows = system.sessions.revoke(project, principal, body.ids())
    return items([session_out(r) for r in rows])
