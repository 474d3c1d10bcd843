"""One function: its deployment, details, the call box, its calls and its schedules.

While the page is open its script asks ``…/state`` every few seconds (every half second
during a deployment): the status, the build error, when it was last called, and the calls
table again when a call started or ended since the page last looked. So calls fired by a
schedule or made through the API appear without a click.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from fnhost.api.services import Services
from fnhost.errors import FnhostError, Unauthenticated
from fnhost.services.identifiers import Identifier
from fnhost.store.calls import CallRow
from fnhost.ui import actions
from fnhost.ui.session import CSRF_FIELD, FailedForm, UiSession
from fnhost.ui.web import (
    SignedIn,
    SignedInForm,
    SystemDep,
    fmt_ms,
    overview_of,
    page_router,
    render,
    see_other,
    templates,
)

POLL_STATUSES = ("Queued", "Deploying")
DEPLOY_MESSAGES = {
    "Queued": "Function {name!r} is queued for deployment.",
    "Deploying": "Function {name!r} is being deployed: its environment is being prepared.",
    "Ready": "",  # the badge says it; nothing more is true for long
    "Failed": "",  # the error below says why
}
NEW_SCHEDULE = {"data": "{}"}

router = page_router()


def deploy_message(status: str, name: str) -> str:
    return DEPLOY_MESSAGES.get(status, "").format(name=name)


def calls_version(calls: list[CallRow]) -> str:
    """Changes when a call starts or ends: what the open page compares to refetch its table."""
    seen = ";".join(f"{c.id}:{c.status}:{c.end_time or ''}" for c in calls)
    return hashlib.sha256(seen.encode()).hexdigest()[:16]


def _versions_context(system: Services, sess: UiSession, function_id: int) -> dict[str, Any]:
    versions = actions.versions_of(system, sess, function_id)
    seen = ";".join(f"{v['number']}:{v['status']}:{v['current']}:{v['retired']}" for v in versions)
    return {
        "versions": versions,
        "versions_key": hashlib.sha256(seen.encode()).hexdigest()[:16],
        "versions_building": any(v["status"] in POLL_STATUSES for v in versions),
    }


def _calls_context(system: Services, sess: UiSession, function_id: int) -> dict[str, Any]:
    calls = overview_of(system).recent_calls(sess.project, sess.principal, function_id)
    return {
        "calls": calls,
        "calls_version": calls_version(calls),
        "schedule_names": actions.schedule_names(system, sess),
    }


@router.get("/ui/functions/{function_id}")
def function_page(
    request: Request, sess: SignedIn, system: SystemDep, function_id: int, form: str | None = None
) -> Response:
    try:
        row = system.functions.get(sess.project, sess.principal, function_id)
    except Unauthenticated:
        raise
    except FnhostError as exc:
        sess.flashes.append(("error", exc.message))
        return see_other("/ui/")
    failed = sess.forms.get(form, f"schedule:{function_id}")
    version_failed = sess.forms.get(form, f"version:{function_id}")
    versions = _versions_context(system, sess, function_id)
    return render(
        request,
        sess,
        "function.html",
        fn=row,
        deploy_message=deploy_message(row.status, row.name),
        schedules=actions.schedules_of(system, sess, function_id),
        schedule_values=failed.values if failed else NEW_SCHEDULE,
        schedule_errors=failed.errors if failed else {},
        poll=row.status in POLL_STATUSES or versions["versions_building"],
        version_values=version_failed.values if version_failed else {"function_path": row.function_path},
        version_errors=version_failed.errors if version_failed else {},
        **versions,
        **_calls_context(system, sess, function_id),
    )


@router.get("/ui/functions/{function_id}/state")
def function_state(
    request: Request, sess: SignedIn, system: SystemDep, function_id: int, calls: str | None = None,
    versions: str | None = None,
) -> Response:
    """The function's status for the page's script; with ``?calls=<version>``, its calls too,
    and with ``?versions=<key>`` its versions.

    The calls table (``callsHtml``) comes along only when it changed since ``version``, the
    versions table (``versionsHtml``) only when it changed since ``key``.
    """
    try:
        row = system.functions.get(sess.project, sess.principal, function_id)
        body: dict[str, object] = {
            "id": row.id,
            "status": row.status,
            "error": row.error,
            "message": deploy_message(row.status, row.name),
            "lastCalled": fmt_ms(row.last_called),
            "version": row.version,
        }
        if versions is not None:
            vctx = _versions_context(system, sess, function_id)
            body["versionsBuilding"] = vctx["versions_building"]
            if vctx["versions_key"] != versions:
                body["versionsHtml"] = templates.get_template("_versions.html").render(
                    {**vctx, "fn": row, "sess": sess, "CSRF_FIELD": CSRF_FIELD}
                )
        if calls is not None:
            ctx = _calls_context(system, sess, function_id)
            body["callsVersion"] = ctx["calls_version"]
            if ctx["calls_version"] != calls:
                body["callsHtml"] = templates.get_template("_calls.html").render(ctx)
    except Unauthenticated:
        raise
    except FnhostError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    return JSONResponse(body)


@router.get("/ui/functions/{function_id}/calls")
def calls_fragment(
    request: Request, sess: SignedIn, system: SystemDep, function_id: int
) -> Response:
    try:
        ctx = _calls_context(system, sess, function_id)
    except Unauthenticated:
        raise
    except FnhostError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    return render(request, sess, "_calls.html", **ctx)


@router.post("/ui/functions/{function_id}/delete")
async def delete_function(signed_in: SignedInForm, system: SystemDep, function_id: int) -> Response:
    sess, _ = signed_in
    try:
        row = await run_in_threadpool(
            system.functions.get, sess.project, sess.principal, function_id
        )
        await run_in_threadpool(
            system.functions.delete, sess.project, sess.principal, [Identifier(id=function_id)], False
        )
    except Unauthenticated:
        raise
    except FnhostError as exc:
        sess.flashes.append(("error", exc.message))
        return see_other(f"/ui/functions/{function_id}")
    sess.flashes.append(("ok", f"Function {row.name!r} was deleted."))
    return see_other("/ui/")


def version_form_failed(sess: UiSession, function_id: int, values: dict[str, str], errors: dict[str, str]) -> Response:
    """Back to the function page with the new-code form and its errors."""
    key = sess.forms.put(FailedForm(f"version:{function_id}", values, errors))
    return see_other(f"/ui/functions/{function_id}?form={key}#new-version")


def schedule_form_failed(
    sess: UiSession, function_id: int, values: dict[str, str], errors: dict[str, str]
) -> Response:
    """Back to the function page with the schedule form and its errors (see ``FormStash``)."""
    key = sess.forms.put(FailedForm(f"schedule:{function_id}", values, errors))
    return see_other(f"/ui/functions/{function_id}?form={key}#new-schedule")
