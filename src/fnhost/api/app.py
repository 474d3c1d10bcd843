"""The application factory: routes per resource, wire format, lifespan of background services."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from fnhost import __version__
from fnhost.api import (
    assets,
    calls,
    files,
    functions,
    groups,
    logstream,
    metrics,
    projects,
    raw,
    schedules,
    sessions,
    token,
    versions,
)
from fnhost.api.callpath import CallPathRoutes
from fnhost.api.services import Lifecycle
from fnhost.api.wire import WireMiddleware, install_error_handlers
from fnhost.services.access import one_identity_read
from fnhost.settings import Settings

log = logging.getLogger("fnhost")

PROJECT_PREFIX = "/api/v1/projects/{project}"


# every resource's router, mounted under the project prefix; imported, not looked up by
# name, so a renamed module fails at start instead of turning its endpoints into 404s.
# Starlette tries routes in order and every request pays for each one tried before its own:
# the call path's two requests (POST /sessions, POST /functions/{id}/call) come first, and
# the project routers before the root ones. No two routers' paths overlap, so the order
# changes nothing else.
PROJECT_ROUTERS: list[APIRouter] = [
    sessions.router,
    calls.router,
    files.router,
    functions.router,
    versions.router,
    schedules.router,
    assets.router,
    raw.router,
    groups.router,
    logstream.router,
]
ROOT_ROUTERS: list[APIRouter] = [token.router, projects.router, metrics.router]


class OneIdentityReadPerRequest:
    """Each HTTP request reads the identity tables' version once (see ``one_identity_read``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with one_identity_read():
            await self.app(scope, receive, send)


def create_app(settings: Settings, system: Lifecycle, pages: Sequence[APIRouter] = ()) -> FastAPI:
    """The app over a running system (``fnhost.system.System``, wired by the caller), with
    ``pages`` (the web page's router, which the API knows nothing of) mounted at the root."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # sync routes run in this pool; the default of 40 is small for long-polls
        anyio.to_thread.current_default_thread_limiter().total_tokens = 200
        await anyio.to_thread.run_sync(system.migrate)
        await system.start()
        # What start-up made (modules, the app, the ORM's and pydantic's tables: ~190k
        # objects) lives as long as the server: out of the collector's reach, a full
        # collection no longer walks it (one took ~100 ms, ~65 calls' worth of the server's
        # CPU, every few thousand calls)
        gc.collect()
        gc.freeze()
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            await system.stop()

    app = FastAPI(
        title="fnhost",
        version=__version__,
        lifespan=lifespan,
        description="A self-hosted Functions service speaking the CDF Functions API.",
    )
    app.state.system = system
    app.state.ready = False
    install_error_handlers(app)
    # the innermost of ours (the last added is the outermost): the call path's requests go
    # through the wire and identity middleware like any other before it routes them itself
    app.add_middleware(CallPathRoutes)
    app.add_middleware(
        WireMiddleware,
        max_body_bytes=settings.max_request_bytes,
        raw_upload_marker="/files/upload/",
        max_json_depth=settings.max_json_depth,
        body_idle_timeout=settings.http_body_idle_timeout_seconds,
    )
    app.add_middleware(OneIdentityReadPerRequest)

    @app.get("/health", tags=["operations"])
    def health() -> JSONResponse:
        if not app.state.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok", "version": __version__})

    for router in PROJECT_ROUTERS:
        app.include_router(router, prefix=PROJECT_PREFIX)
    for router in ROOT_ROUTERS:
        app.include_router(router)
    for router in pages:
        app.include_router(router)
    return app
