"""Dependencies shared by the routes: the running system and the authenticated principal."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fnhost.api.services import Services
from fnhost.auth.capabilities import Principal
from fnhost.errors import InvalidRequest, RateLimited
from fnhost.store.db import WouldWait, without_waiting

T = TypeVar("T")


async def get_system(request: Request) -> Services:
    # async: it only reads app state, so it needs no worker thread of its own
    return request.app.state.system


def get_principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    system: Services = request.app.state.system
    principal = system.access.authenticate(authorization)
    wait = system.rate_limiter.take((principal.issuer, principal.subject))
    if wait:
        system.metrics.rate_limited.inc()
        limiter = system.rate_limiter
        raise RateLimited(
            f"Too many requests: at most {limiter.rate:g} per second (bursts of "
            f"{limiter.burst}) per principal. Retry in {wait:.2f} s.",
            retry_after_seconds=wait,
        )
    return principal


SystemDep = Annotated[Services, Depends(get_system)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]


def int_cursor(cursor: str | None) -> int:
    """Our cursors are opaque strings holding the last id served."""
    if cursor is None or cursor == "":
        return 0
    try:
        value = int(cursor)
    except ValueError:
        raise InvalidRequest(f"Invalid cursor {cursor!r}.") from None
    if value < 0:
        raise InvalidRequest(f"Invalid cursor {cursor!r}.")
    return value


def check_limit(limit: Any, *, default: int, maximum: int) -> int:
    if limit is None:
        return default
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidRequest(f"limit must be an integer between 1 and {maximum}.")
    return min(limit, maximum)


# -- for the endpoints on the call path, written async: each sends its blocking work (the
# token, the database) to a worker thread in one hop, where FastAPI's sync endpoints and
# dependencies take one hop each (see docs/architecture.md, "The call path")


async def quickly(request: Request, work: Callable[[], T]) -> T:
    """``work()`` (authenticate, then do what is asked) on the event loop when it cannot
    block: a token this server has verified before, and a database whose statements take
    microseconds and whose write turn is free (``store.db.without_waiting``); else, or if it
    turns out it would wait, in a worker thread. The hop it saves is the larger part of
    what a small request costs (docs/architecture.md, "The call path")."""
    system: Services = request.app.state.system
    if system.db.quick and system.access.seen_before(request.headers.get("authorization")):
        try:
            with without_waiting():
                return work()
        except WouldWait:
            pass  # nothing was written: it starts again where it may wait
    return await run_in_threadpool(work)


def principal_of(request: Request) -> Principal:
    """``get_principal`` for an endpoint that reads its own headers."""
    return get_principal(request, request.headers.get("authorization"))


async def json_body(request: Request) -> Any:
    """The request's JSON body (None when empty), as ``Body(None)`` would give it."""
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}.") from None


def json_response(value: Any) -> Response:
    return Response(json.dumps(value, separators=(",", ":")).encode(), media_type="application/json")
