"""The call path's three requests, routed straight to their endpoints.

cognite-sdk makes ``POST …/sessions`` and ``POST …/functions/{id}/call`` for every call, and
``GET …/calls/{id}/response`` for every response it reads. Behind Starlette's router FastAPI
gives each request an exception-handling wrapper, two exit stacks, a walk of the routes and
a dependency solve, even for an endpoint with no dependencies: measured with py-spy, that
was a sixth of the server's CPU per call (docs/architecture.md, "The call path").

``CallPathRoutes`` sits inside ``WireMiddleware``, so these requests keep everything every
request gets (``X-Request-ID``, gzip bodies, the body size, depth and deadline, the identity
read per request, the 500 handler). It hands a request whose method and path match one of
``FAST_ROUTES`` to the same endpoint function FastAPI would call and turns a domain error
into the same wire error FastAPI's handler does. The routes stay declared in FastAPI for the
OpenAPI schema and for every request the patterns here do not take (a trailing slash, an id
that is not a plain number): those get FastAPI's answer, as before.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette._utils import get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from fnhost import errors
from fnhost.api import calls, sessions
from fnhost.api.wire import domain_error_response

PROJECT = "/api/v1/projects/(?P<project>[^/]+)"
# ids are int64: up to 18 digits is always in range; a longer one goes to FastAPI's own check
ID = "[0-9]{1,18}"


@dataclass(frozen=True)
class FastRoute:
    method: str
    # the FastAPI route's path under the project prefix: the pattern is made from it, so the
    # two cannot drift apart, and a test checks both route to the same function
    path: str
    endpoint: Callable[..., Awaitable[Response]]

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        """The path's ``{name}`` parameters (all ids) as named groups of digits."""
        return re.compile(PROJECT + re.sub(r"\{(\w+)\}", rf"(?P<\1>{ID})", self.path))

    def params(self, match: re.Match[str]) -> dict[str, Any]:
        return {k: v if k == "project" else int(v) for k, v in match.groupdict().items()}


FAST_ROUTES: tuple[FastRoute, ...] = (
    FastRoute("POST", "/sessions", sessions.create_sessions),
    FastRoute("POST", "/functions/{function_id}/call", calls.call_function),
    FastRoute("GET", "/functions/{function_id}/calls/{call_id}/response", calls.call_response),
)


class CallPathRoutes:
    """Pure ASGI: the call path's requests to their endpoints, everything else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], get_route_path(scope)
            for route in FAST_ROUTES:
                if route.method == method and (match := route.pattern.fullmatch(path)):
                    await self._serve(route, match, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    @staticmethod
    async def _serve(route: FastRoute, match: re.Match[str], scope: Scope, receive: Receive, send: Send) -> None:
        scope["path_params"] = params = route.params(match)
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request=request, **params)
        except errors.FnhostError as exc:
            # any other exception goes up to the app's 500 handler, as it would from FastAPI
            response = domain_error_response(exc)
        await response(scope, receive, send)
