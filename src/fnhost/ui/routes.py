"""The web page: server-rendered pages over the same domain services as the API.

Every action runs as the signed-in ``Principal`` through ``system.functions``,
``system.files``, ``system.sessions``, the calls and schedules services, so the
capability checks are the API's. Pages are plain HTML forms; a little JavaScript
(``static/app.js``) adds drag and drop, live deploy progress and the call box.
"""

from __future__ import annotations

import hmac
import io
import json
import secrets
import threading
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from fnhost.api import logstream
from fnhost.auth.capabilities import Principal
from fnhost.auth.tokens import unverified_claims
from fnhost.errors import Duplicated, FnhostError, Unauthenticated
from fnhost.services.container import System
from fnhost.services.overview import Overview
from fnhost.ui import actions
from fnhost.ui.session import COOKIE, CSRF_FIELD, CSRF_HEADER, SessionStore, UiSession, cookie_args

HERE = Path(__file__).parent
STATIC = {p.name: p for p in (HERE / "static").iterdir() if p.is_file()}
PRE_COOKIE = "fnhost_ui_pre"
POLL_STATUSES = ("Queued", "Deploying")

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")


def _fmt_ms(value: int | None) -> str:
    if not value:
        return "—"
    return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _fmt_duration(start: int | None, end: int | None) -> str:
    if not start or not end:
        return "—"
    ms = end - start
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms // 60_000} min {ms % 60_000 // 1000} s"


templates.env.filters["ms"] = _fmt_ms
templates.env.globals["duration"] = _fmt_duration
templates.env.globals["CSRF_FIELD"] = CSRF_FIELD


# -- plumbing ------------------------------------------------------------------------------
def _system(request: Request) -> System:
    system: System = request.app.state.system
    return system


_sessions_lock = threading.Lock()


def _sessions(request: Request) -> SessionStore:
    """The app's sign-in sessions, made on first use (under a lock: requests run in threads)."""
    state = request.app.state
    with _sessions_lock:
        store: SessionStore | None = getattr(state, "ui_sessions", None)
        if store is None:
            store = state.ui_sessions = SessionStore(_system(request).settings.ui_session_seconds)
    return store


def _signin_url(next_url: str | None = None, expired: bool = False) -> str:
    params: dict[str, str] = {}
    if next_url:
        params["next"] = next_url
    if expired:
        params["expired"] = "1"
    return "/ui/signin" + ("?" + urlencode(params) if params else "")


def _here(request: Request) -> str:
    path = request.url.path
    return path + ("?" + request.url.query if request.url.query else "")


def _session(request: Request) -> UiSession | Response:
    """The signed-in session, or a redirect to sign in (saying so if it expired)."""
    sess, expired = _sessions(request).lookup(request.cookies.get(COOKIE))
    if sess is not None:
        return sess
    if request.method == "GET":
        next_url = _here(request)
    else:  # come back to the page the form was on, with its draft restored
        referer = request.headers.get("referer", "")
        base = str(request.base_url).rstrip("/")
        next_url = referer[len(base) :] if referer.startswith(base) else "/ui/"
    wants_json = "application/json" in request.headers.get("accept", "") or request.headers.get(
        CSRF_HEADER
    )
    message = (
        "Your sign-in has expired. Sign in again; what you typed is kept."
        if expired
        else "Please sign in."
    )
    url = _signin_url(next_url, expired=expired or request.method != "GET")
    if wants_json:
        return JSONResponse({"error": message, "signin": url}, status_code=401)
    return RedirectResponse(url, status_code=303)


def _check_csrf(sess: UiSession, token: object) -> Response | None:
    if sess.csrf_ok(token):
        return None
    return JSONResponse(
        {"error": "The form is stale (CSRF check failed). Reload the page and try again."},
        status_code=403,
    )


def _render(
    request: Request, sess: UiSession | None, name: str, status: int = 200, **ctx: Any
) -> Response:
    flashes = list(sess.flashes) if sess else []
    if sess:
        sess.flashes.clear()
    return templates.TemplateResponse(
        request, name, {"sess": sess, "flashes": flashes, **ctx}, status_code=status
    )


async def _signed_in_form(request: Request) -> tuple[UiSession, dict[str, Any]] | Response:
    """A form posted by a signed-in user with its CSRF token, or the response refusing it."""
    sess = _session(request)
    if not isinstance(sess, UiSession):
        return sess
    form = await _form(request)
    if (bad := _check_csrf(sess, form.get(CSRF_FIELD))) is not None:
        return bad
    return sess, form


async def _form(request: Request) -> dict[str, Any]:
    form = await request.form()
    out: dict[str, Any] = {}
    for key, value in form.multi_items():
        out[key] = value
    return out


def _text(form: dict[str, Any], key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def _overview(request: Request) -> Overview:
    system = _system(request)
    return Overview(system.db, system.access)


# -- entry points ----------------------------------------------------------------------------
@router.get("/")
def root() -> Response:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui")
def ui_root() -> Response:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/static/{name}")
def static(name: str) -> Response:
    path = STATIC.get(name)
    if path is None:
        return Response("Not found", status_code=404, media_type="text/plain")
    return FileResponse(path, headers={"Cache-Control": "no-cache"})


# -- sign in / out ---------------------------------------------------------------------------
def _signin_page(
    request: Request,
    *,
    error: str | None = None,
    status: int = 200,
    values: dict[str, Any] | None = None,
) -> Response:
    pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
    expired = request.query_params.get("expired") == "1"
    values = values or {}
    response = _render(
        request,
        None,
        "signin.html",
        status=status,
        error=error,
        expired=expired,
        pre=pre,
        next_url=values.get("next") or request.query_params.get("next") or "/ui/",
        project=values.get("project") or _system(request).settings.default_project,
        client_id=values.get("client_id", ""),
        method=values.get("method", "credentials"),
    )
    response.set_cookie(PRE_COOKIE, pre, httponly=True, samesite="strict", path="/ui/signin")
    return response


@router.get("/ui/signin")
def signin_form(request: Request) -> Response:
    return _signin_page(request)


def _verify(system: System, form: dict[str, Any]) -> tuple[Principal, str, float | None]:
    """Check what the person typed; return the principal, a display name, a token expiry."""
    if form.get("method") == "token":
        token = _text(form, "token")
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
        if not token:
            raise Unauthenticated("Paste an access token.")
        principal = system.access.authenticate(f"Bearer {token}")
        exp = unverified_claims(token).get("exp")
        return principal, principal.client_id or principal.subject, float(exp) if exp else None
    client_id, secret = _text(form, "client_id"), _text(form, "client_secret")
    if not client_id or not secret:
        raise Unauthenticated("Enter a client id and a client secret.")
    row = system.access.verify_client(client_id, secret)
    principal = Principal(
        subject=row.client_id,
        issuer=system.tokens.issuer,
        client_id=row.client_id,
        admin=row.is_admin,
    )
    return principal, row.client_id, None


@router.post("/ui/signin")
async def signin(request: Request) -> Response:
    form = await _form(request)
    values = {k: _text(form, k) for k in ("project", "client_id", "method", "next")}
    pre = request.cookies.get(PRE_COOKIE)
    sent = form.get(CSRF_FIELD)
    if not pre or not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), pre.encode()):
        return _signin_page(
            request,
            error="The sign-in form was stale; please try again.",
            status=403,
            values=values,
        )
    system = _system(request)
    project = values["project"] or system.settings.default_project
    try:
        principal, who, exp = await run_in_threadpool(_verify, system, form)
        await run_in_threadpool(system.access.require_project_member, principal, project)
    except FnhostError as exc:
        return _signin_page(request, error=exc.message, status=401, values=values)
    store = _sessions(request)
    sess = store.create(principal, project, who)
    if exp is not None:
        sess.expires_at = min(sess.expires_at, exp)
    next_url = values["next"] if values["next"].startswith("/ui/") else "/ui/"
    if request.query_params.get("expired") == "1" or form.get("expired") == "1":
        next_url += ("&" if "?" in next_url else "?") + "restore=1"
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(value=sess.id, **cookie_args(request.url.scheme == "https"))
    response.delete_cookie(PRE_COOKIE, path="/ui/signin")
    return response


@router.post("/ui/signout")
async def signout(request: Request) -> Response:
    form = await _form(request)
    sess = _session(request)
    if isinstance(sess, UiSession):
        if (bad := _check_csrf(sess, form.get(CSRF_FIELD))) is not None:
            return bad
        _sessions(request).delete(sess.id)
    response = RedirectResponse("/ui/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# -- functions list ----------------------------------------------------------------------------
@router.get("/ui/")
def functions_page(request: Request, q: str = "") -> Response:
    sess = _session(request)
    if not isinstance(sess, UiSession):
        return sess
    system = _system(request)
    try:
        rows = system.functions.list(sess.project, sess.principal, limit=10_000, filt={})
        stats, last = _overview(request).call_stats(sess.project, sess.principal)
        schedules = actions.schedule_counts(system, sess)
    except Unauthenticated:
        return RedirectResponse(_signin_url(_here(request), expired=True), status_code=303)
    rows = sorted(rows, key=lambda r: r.created_time, reverse=True)
    return _render(
        request, sess, "functions.html", rows=rows, stats=stats, last=last, schedules=schedules, q=q
    )


# -- upload ------------------------------------------------------------------------------------
UPLOAD_FIELDS = (
    "name", "external_id", "description", "owner", "function_path", "env_vars", "secrets",
    "cpu", "memory", "runtime", "index_url", "file_id", "file_name",
)  # fmt: skip


def _upload_page(
    request: Request,
    sess: UiSession,
    *,
    values: dict[str, str],
    errors: dict[str, str],
    status: int = 200,
) -> Response:
    system = _system(request)
    return _render(
        request,
        sess,
        "upload.html",
        status=status,
        values=values,
        errors=errors,
        limits=system.functions.limits(),
        default_runtime=system.settings.default_runtime,
    )


@router.get("/ui/upload")
def upload_form(request: Request) -> Response:
    sess = _session(request)
    if not isinstance(sess, UiSession):
        return sess
    return _upload_page(request, sess, values={"function_path": "handler.py"}, errors={})


@router.post("/ui/upload")
async def upload(request: Request) -> Response:
    signed_in = await _signed_in_form(request)
    if isinstance(signed_in, Response):
        return signed_in
    sess, form = signed_in
    values = {k: _text(form, k) for k in UPLOAD_FIELDS}
    errors: dict[str, str] = {}
    upload_file = form.get("file")
    content: bytes | None = None
    if isinstance(upload_file, UploadFile) and upload_file.filename:
        content = await upload_file.read()
        if not _is_zip(content):
            errors["file"] = (
                f"{upload_file.filename!r} is not a zip file. Choose a .zip that holds your "
                "handler.py (the other fields are kept)."
            )
            values["file_id"] = values["file_name"] = ""
        else:
            values["file_name"] = upload_file.filename
    elif not values["file_id"]:
        errors["file"] = "Choose or drop a zip file with your function's code."
    item, field_errors = actions.function_item(values)
    errors.update(field_errors)
    system = _system(request)
    try:
        if content is not None and "file" not in errors:
            # stored at once, so a form sent back for other fixes keeps the zip
            file_id = await run_in_threadpool(
                actions.upload_zip, system, sess, values["file_name"], content
            )
            values["file_id"] = str(file_id)
        if errors:
            return _upload_page(request, sess, values=values, errors=errors, status=400)
        if not values["file_id"].isdigit():
            errors["file"] = "Choose or drop a zip file with your function's code."
            return _upload_page(request, sess, values=values, errors=errors, status=400)
        item["fileId"] = int(values["file_id"])
        row = await run_in_threadpool(system.functions.create, sess.project, sess.principal, item)
    except Unauthenticated as exc:
        errors["_"] = exc.message
        return _upload_page(request, sess, values=values, errors=errors, status=401)
    except Duplicated as exc:
        errors["external_id"] = exc.message
        return _upload_page(request, sess, values=values, errors=errors, status=409)
    except FnhostError as exc:
        errors[actions.field_of(exc.message)] = exc.message
        return _upload_page(request, sess, values=values, errors=errors, status=exc.status)
    sess.flashes.append(("ok", f"Function {row.name!r} is queued for deployment."))
    return RedirectResponse(f"/ui/functions/{row.id}", status_code=303)


def _is_zip(content: bytes) -> bool:
    if not content.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as zf:
            return zf.testzip() is None
    except zipfile.BadZipFile:
        return False


# -- one function ---------------------------------------------------------------------------
def _function_page(
    request: Request,
    sess: UiSession,
    function_id: int,
    *,
    schedule_values: dict[str, str] | None = None,
    schedule_errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    system = _system(request)
    row = system.functions.get(sess.project, sess.principal, function_id)
    overview = _overview(request)
    calls = overview.recent_calls(sess.project, sess.principal, function_id)
    schedules = actions.schedules_of(system, sess, function_id)
    return _render(
        request,
        sess,
        "function.html",
        status=status,
        fn=row,
        calls=calls,
        schedules=schedules,
        schedule_values=schedule_values or {"data": "{}"},
        schedule_errors=schedule_errors or {},
        poll=row.status in POLL_STATUSES,
    )


@router.get("/ui/functions/{function_id}")
def function_page(request: Request, function_id: int) -> Response:
    sess = _session(request)
    if not isinstance(sess, UiSession):
        return sess
    try:
        return _function_page(request, sess, function_id)
    except FnhostError as exc:
        sess.flashes.append(("error", exc.message))
        return RedirectResponse("/ui/", status_code=303)


@router.get("/ui/functions/{function_id}/state")
def function_state(request: Request, function_id: int) -> Response:
    sess = _session(request)
    if not isinstance(sess, UiSession):
        return sess
    try:
        row = _system(request).functions.get(sess.project, sess.principal, function_id)
    except FnhostError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    return JSONResponse({"id": row.id, "status": row.status, "error": row.error})


@router.post("/ui/functions/{function_id}/delete")
async def delete_function(request: Request, function_id: int) -> Response:
    signed_in = await _signed_in_form(request)
    if isinstance(signed_in, Response):
        return signed_in
    sess, _ = signed_in
    system = _system(request)
    try:
        await run_in_threadpool(
            system.functions.delete, sess.project, sess.principal, [{"id": function_id}], False
        )
        sess.flashes.append(("ok", f"Function {function_id} was deleted."))
    except FnhostError as exc:
        sess.flashes.append(("error", exc.message))
        return RedirectResponse(f"/ui/functions/{function_id}", status_code=303)
    return RedirectResponse("/ui/", status_code=303)


# -- calls -------------------------------------------------------------------------------------
@router.post("/ui/functions/{function_id}/call")
async def call_function(request: Request, function_id: int) -> Response:
    sess = _session(request)
    if not isinstance(sess, UiSession):
        return sess
    if (bad := _check_csrf(sess, request.headers.get(CSRF_HEADER))) is not None:
        return bad
    try:
        body = await request.json()
        text = body["data"] if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise ValueError
    except ValueError:
        return JSONResponse({"error": 'Send {"data": "<json text>"}.'}, status_code=400)
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        return JSONResponse(
            {
                "error": f"Invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
                "field": "data",
            },
            status_code=400,
        )
    if not isinstance(data, dict):
        return JSONResponse(
            {"error": 'The call data must be a JSON object, like {"x": 1}.', "field": "data"},
            status_code=400,
        )
    try:
        call_id = await run_in_threadpool(
            actions.start_call, _system(request), sess, function_id, data
        )
    except FnhostError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    return JSONResponse({"callId": call_id, "url": f"/ui/functions/{function_id}/calls/{call_id}"})


@router.get("/ui/functions/{function_id}/calls/{call_id}")
def call_state(request: Request, function_id: int, call_id: int, wait: float = 0) -> Response:
    """A call with its response and logs; ``?wait=N`` answers when it ends (or after N s)."""
    sess = _session(request)
    if not isinstance(sess, UiSession):
        return sess
    try:
        if wait > 0:
            _system(request).calls.get(
                sess.project, sess.principal, function_id, call_id, wait_seconds=wait
            )
        row, logs = _overview(request).call_detail(
            sess.project, sess.principal, function_id, call_id
        )
    except FnhostError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
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
            "startTime": _fmt_ms(row.start_time),
            "duration": _fmt_duration(row.start_time, row.end_time),
            "scheduleId": row.schedule_id,
            "error": row.error,
            "hasResponse": row.response is not None,
            "response": response,
            "logs": [f"{_fmt_ms(line.timestamp)[11:19]}  {line.message}" for line in logs],
        }
    )


@router.get("/ui/functions/{function_id}/calls/{call_id}/logs/stream")
def call_log_stream(request: Request, function_id: int, call_id: int) -> Response:
    """The API's live log stream (server-sent events), for the signed-in browser."""
    sess = _session(request)
    if not isinstance(sess, UiSession):
        return sess
    system = _system(request)
    try:  # authorise and check the call exists before the stream starts
        system.calls.get(sess.project, sess.principal, function_id, call_id)
    except FnhostError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    return StreamingResponse(
        logstream.events(system, sess.project, sess.principal, function_id, call_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/ui/functions/{function_id}/calls")
def calls_fragment(request: Request, function_id: int) -> Response:
    sess = _session(request)
    if not isinstance(sess, UiSession):
        return sess
    try:
        calls = _overview(request).recent_calls(sess.project, sess.principal, function_id)
    except FnhostError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    return _render(request, sess, "_calls.html", calls=calls, fn_id=function_id)


@router.get("/ui/failed")
def failed_page(request: Request, function: int | None = None) -> Response:
    sess = _session(request)
    if not isinstance(sess, UiSession):
        return sess
    try:
        rows = _overview(request).failed_calls(sess.project, sess.principal, function_id=function)
    except Unauthenticated:
        return RedirectResponse(_signin_url(_here(request), expired=True), status_code=303)
    return _render(request, sess, "failed.html", rows=rows)


# -- schedules -----------------------------------------------------------------------------------
SCHEDULE_FIELDS = ("name", "cron", "description", "data", "client_id", "client_secret")


@router.post("/ui/functions/{function_id}/schedules")
async def create_schedule(request: Request, function_id: int) -> Response:
    signed_in = await _signed_in_form(request)
    if isinstance(signed_in, Response):
        return signed_in
    sess, form = signed_in
    values = {k: _text(form, k) for k in SCHEDULE_FIELDS}
    errors = await run_in_threadpool(
        actions.create_schedule, _system(request), sess, function_id, values
    )
    if errors:
        values["client_secret"] = ""  # never echo a secret back into the page
        return await run_in_threadpool(
            lambda: _function_page(
                request,
                sess,
                function_id,
                schedule_values=values,
                schedule_errors=errors,
                status=400,
            )
        )
    sess.flashes.append(("ok", f"Schedule {values['name']!r} was created."))
    return RedirectResponse(f"/ui/functions/{function_id}#schedules", status_code=303)


@router.post("/ui/functions/{function_id}/schedules/{schedule_id}/{action}")
async def schedule_action(
    request: Request, function_id: int, schedule_id: int, action: str
) -> Response:
    signed_in = await _signed_in_form(request)
    if isinstance(signed_in, Response):
        return signed_in
    sess, _ = signed_in
    try:
        message = await run_in_threadpool(
            actions.schedule_action, _system(request), sess, schedule_id, action
        )
        sess.flashes.append(("ok", message))
    except FnhostError as exc:
        sess.flashes.append(("error", exc.message))
    return RedirectResponse(f"/ui/functions/{function_id}#schedules", status_code=303)
