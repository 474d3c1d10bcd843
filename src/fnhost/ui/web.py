"""What every page shares: templates, the signed-in dependency, CSRF, forms, redirects.

A page route asks for ``SignedIn`` (the browser's session) or ``SignedInForm`` (the session
and a posted form whose CSRF token checked out). Without a live sign-in the dependency
answers for the route: a redirect to the sign-in page (which comes back here afterwards),
or, for the page's own scripts, a JSON 401 naming where to sign in. That is done by
raising ``Answer`` with the response; ``PageRoute`` turns it into the reply, so no route
checks the sign-in itself. A principal whose access went away while signed in (a domain
``Unauthenticated``) is sent to sign in the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from fnhost.api.services import Services
from fnhost.errors import Unauthenticated
from fnhost.services.overview import Overview
from fnhost.ui.session import COOKIE, CSRF_FIELD, CSRF_HEADER, SessionStore, UiSession

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


def fmt_ms(value: int | None) -> str:
    if not value:
        return "—"
    return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_duration(start: int | None, end: int | None) -> str:
    if not start or not end:
        return "—"
    ms = end - start
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms // 60_000} min {ms % 60_000 // 1000} s"


templates.env.filters["ms"] = fmt_ms
templates.env.globals["duration"] = fmt_duration
templates.env.globals["CSRF_FIELD"] = CSRF_FIELD


class Answer(Exception):  # not an error: a reply given before the route runs
    """Raised by a dependency to answer the request in the route's place."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class PageRoute(APIRoute):
    """Routes of the page: an ``Answer`` (or a lost sign-in) becomes the reply."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Answer as answer:
                return answer.response
            except Unauthenticated as exc:
                return signin_response(request, expired=True, message=exc.message)

        return route


def page_router() -> APIRouter:
    return APIRouter(route_class=PageRoute, include_in_schema=False)


# -- the running system and the sign-in sessions ---------------------------------------------
def system_of(request: Request) -> Services:
    system: Services = request.app.state.system
    return system


SystemDep = Annotated[Services, Depends(system_of)]

_sessions_lock = threading.Lock()


def sessions_of(request: Request) -> SessionStore:
    """The app's sign-in sessions, made on first use (under a lock: requests run in threads)."""
    state = request.app.state
    with _sessions_lock:
        store: SessionStore | None = getattr(state, "ui_sessions", None)
        if store is None:
            store = state.ui_sessions = SessionStore(system_of(request).settings.ui_session_seconds)
    return store


def overview_of(system: Services) -> Overview:
    return system.overview


# -- signed in, or sent to sign in -------------------------------------------------------------
def signin_url(next_url: str | None = None, expired: bool = False) -> str:
    params: dict[str, str] = {}
    if next_url:
        params["next"] = next_url
    if expired:
        params["expired"] = "1"
    return "/ui/signin" + ("?" + urlencode(params) if params else "")


def here(request: Request) -> str:
    path = request.url.path
    return path + ("?" + request.url.query if request.url.query else "")


def wants_json(request: Request) -> bool:
    """The page's scripts ask with ``Accept: application/json`` or the CSRF header."""
    return "application/json" in request.headers.get("accept", "") or bool(
        request.headers.get(CSRF_HEADER)
    )


def signin_response(request: Request, *, expired: bool, message: str | None = None) -> Response:
    """Send the browser to sign in, then back to this page (or the page a form was on)."""
    if request.method == "GET":
        next_url = here(request)
    else:  # come back to the page the form was on, with its draft restored
        referer = request.headers.get("referer", "")
        base = str(request.base_url).rstrip("/")
        next_url = referer[len(base) :] if referer.startswith(base) else "/ui/"
    if message is None:
        message = (
            "Your sign-in has expired. Sign in again; what you typed is kept."
            if expired
            else "Please sign in."
        )
    url = signin_url(next_url, expired=expired or request.method != "GET")
    if wants_json(request):
        return JSONResponse({"error": message, "signin": url}, status_code=401)
    return RedirectResponse(url, status_code=303)


def signed_in(request: Request) -> UiSession:
    """The one sign-in check of the page: the browser's live session, or an ``Answer``."""
    sess, expired = sessions_of(request).lookup(request.cookies.get(COOKIE))
    if sess is None:
        raise Answer(signin_response(request, expired=expired))
    return sess


SignedIn = Annotated[UiSession, Depends(signed_in)]


def refuse_stale(sess: UiSession, token: object) -> None:
    if not sess.csrf_ok(token):
        raise Answer(
            JSONResponse(
                {"error": "The form is stale (CSRF check failed). Reload the page and try again."},
                status_code=403,
            )
        )


async def read_form(request: Request) -> dict[str, Any]:
    form = await request.form()
    return dict(form.multi_items())


async def signed_in_form(request: Request, sess: SignedIn) -> tuple[UiSession, dict[str, Any]]:
    """A form posted by a signed-in browser with its CSRF token."""
    form = await read_form(request)
    refuse_stale(sess, form.get(CSRF_FIELD))
    return sess, form


SignedInForm = Annotated[tuple[UiSession, dict[str, Any]], Depends(signed_in_form)]


def signed_in_script(request: Request, sess: SignedIn) -> UiSession:
    """A request of the page's own scripts, which send the CSRF token in a header."""
    refuse_stale(sess, request.headers.get(CSRF_HEADER))
    return sess


SignedInScript = Annotated[UiSession, Depends(signed_in_script)]


# -- answers -----------------------------------------------------------------------------------
def render(
    request: Request, sess: UiSession | None, name: str, status: int = 200, **ctx: Any
) -> Response:
    flashes = list(sess.flashes) if sess else []
    if sess:
        sess.flashes.clear()
    return templates.TemplateResponse(
        request, name, {"sess": sess, "flashes": flashes, **ctx}, status_code=status
    )


def see_other(url: str) -> Response:
    """After a form: the page to show, fetched with GET, so a reload sends nothing again."""
    return RedirectResponse(url, status_code=303)


def text(form: dict[str, Any], key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""
