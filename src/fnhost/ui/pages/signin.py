"""Sign in (client credentials or a pasted access token) and sign out.

Before sign-in there is no session to hold a CSRF token, so the form carries a random value
that must match a cookie set with it (``fnhost_ui_pre``, double submit). A sign-in that
fails is sent back to ``/ui/signin?form=…`` with what was typed (never the secret or the
token), so a reload does not post the credentials again.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fnhost.api.services import Services
from fnhost.auth.capabilities import Principal
from fnhost.auth.tokens import unverified_claims
from fnhost.errors import FnhostError, Unauthenticated
from fnhost.ui.session import COOKIE, CSRF_FIELD, FailedForm, cookie_args
from fnhost.ui.web import (
    page_router,
    read_form,
    refuse_stale,
    render,
    see_other,
    sessions_of,
    system_of,
    text,
)

PRE_COOKIE = "fnhost_ui_pre"
KEPT = ("project", "client_id", "method", "next")  # what a failed sign-in keeps

router = page_router()


def _pre(request: Request) -> str:
    return request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)


@router.get("/ui/signin")
def signin_form(request: Request, form: str | None = None) -> Response:
    pre = _pre(request)
    failed = sessions_of(request).signin_forms(pre).get(form, "signin") if form else None
    values: dict[str, Any] = failed.values if failed else {}
    query = request.query_params
    response = render(
        request,
        None,
        "signin.html",
        error=failed.errors.get("_") if failed else None,
        expired=values.get("expired") == "1" or query.get("expired") == "1",
        pre=pre,
        next_url=values.get("next") or query.get("next") or "/ui/",
        project=values.get("project") or system_of(request).settings.default_project,
        client_id=values.get("client_id", ""),
        method=values.get("method", "credentials"),
    )
    response.set_cookie(PRE_COOKIE, pre, httponly=True, samesite="strict", path="/ui/signin")
    return response


def _verify(system: Services, form: dict[str, Any]) -> tuple[Principal, str, float | None]:
    """Check what the person typed; return the principal, a display name, a token expiry."""
    if form.get("method") == "token":
        token = text(form, "token")
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
        if not token:
            raise Unauthenticated("Paste an access token.")
        principal = system.access.authenticate(f"Bearer {token}")
        exp = unverified_claims(token).get("exp")
        return principal, principal.client_id or principal.subject, float(exp) if exp else None
    client_id, secret = text(form, "client_id"), text(form, "client_secret")
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


def _failed(request: Request, pre: str, values: dict[str, str], message: str) -> Response:
    key = sessions_of(request).signin_forms(pre).put(FailedForm("signin", values, {"_": message}))
    response = see_other("/ui/signin?" + urlencode({"form": key}))
    response.set_cookie(PRE_COOKIE, pre, httponly=True, samesite="strict", path="/ui/signin")
    return response


@router.post("/ui/signin")
async def signin(request: Request) -> Response:
    form = await read_form(request)
    values = {k: text(form, k) for k in KEPT}
    if request.query_params.get("expired") == "1" or form.get("expired") == "1":
        values["expired"] = "1"
    pre = request.cookies.get(PRE_COOKIE)
    sent = form.get(CSRF_FIELD)
    if not pre or not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), pre.encode()):
        return _failed(
            request, pre or secrets.token_urlsafe(24), values,
            "The sign-in form was stale; please try again.",
        )  # fmt: skip
    system = system_of(request)
    project = values["project"] or system.settings.default_project
    try:
        principal, who, exp = await run_in_threadpool(_verify, system, form)
        await run_in_threadpool(system.access.require_project_member, principal, project)
    except FnhostError as exc:
        return _failed(request, pre, values, exc.message)
    store = sessions_of(request)
    sess = store.create(principal, project, who)
    if exp is not None:
        sess.expires_at = min(sess.expires_at, exp)
    next_url = values["next"] if values["next"].startswith("/ui/") else "/ui/"
    if values.get("expired") == "1":
        next_url += ("&" if "?" in next_url else "?") + "restore=1"
    response = see_other(next_url)
    response.set_cookie(value=sess.id, **cookie_args(request.url.scheme == "https"))
    response.delete_cookie(PRE_COOKIE, path="/ui/signin")
    return response


@router.post("/ui/signout")
async def signout(request: Request) -> Response:
    form = await read_form(request)
    store = sessions_of(request)
    sess, _ = store.lookup(request.cookies.get(COOKIE))
    if sess is not None:
        refuse_stale(sess, form.get(CSRF_FIELD))
        store.delete(sess.id)
    response = see_other("/ui/signin")
    response.delete_cookie(COOKIE, path="/")
    return response
