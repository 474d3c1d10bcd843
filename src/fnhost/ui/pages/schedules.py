"""Schedules from the function page: create one (from the form), pause, resume, delete."""

from __future__ import annotations

from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fnhost.errors import FnhostError, Unauthenticated
from fnhost.ui import actions
from fnhost.ui.pages.function import schedule_form_failed
from fnhost.ui.web import SignedInForm, SystemDep, page_router, see_other, text

FIELDS = ("name", "cron", "description", "data", "client_id", "client_secret")

router = page_router()


@router.post("/ui/functions/{function_id}/schedules")
async def create_schedule(signed_in: SignedInForm, system: SystemDep, function_id: int) -> Response:
    sess, form = signed_in
    values = {k: text(form, k) for k in FIELDS}
    errors = await run_in_threadpool(actions.create_schedule, system, sess, function_id, values)
    if errors:
        values["client_secret"] = ""  # never kept, never echoed back into the page
        return schedule_form_failed(sess, function_id, values, errors)
    sess.forms.drop(f"schedule:{function_id}")
    sess.flashes.append(("ok", f"Schedule {values['name']!r} was created."))
    return see_other(f"/ui/functions/{function_id}#schedules")


@router.post("/ui/functions/{function_id}/schedules/{schedule_id}/{action}")
async def schedule_action(
    signed_in: SignedInForm, system: SystemDep, function_id: int, schedule_id: int, action: str
) -> Response:
    sess, _ = signed_in
    try:
        message = await run_in_threadpool(
            actions.schedule_action, system, sess, schedule_id, action
        )
        sess.flashes.append(("ok", message))
    except Unauthenticated:
        raise
    except FnhostError as exc:
        sess.flashes.append(("error", exc.message))
    return see_other(f"/ui/functions/{function_id}#schedules")
