"""Dependencies shared by the routes: the running system and the authenticated principal."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request

from fnhost.api.services import Services
from fnhost.auth.capabilities import Principal
from fnhost.errors import InvalidRequest, RateLimited


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


def body_items(body: Any, *, maximum: int = 1000, allow_empty: bool = False) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise InvalidRequest("The body must be an object with an 'items' list.")
    values = body["items"]
    if not values and not allow_empty:
        raise InvalidRequest("items must not be empty.")
    if len(values) > maximum:
        raise InvalidRequest(f"At most {maximum} items per request.")
    if not all(isinstance(v, dict) for v in values):
        raise InvalidRequest("Each item must be an object.")
    return values


def ignore_unknown(body: dict[str, Any]) -> bool:
    value = body.get("ignoreUnknownIds", False)
    if not isinstance(value, bool):
        raise InvalidRequest("ignoreUnknownIds must be a boolean.")
    return value
