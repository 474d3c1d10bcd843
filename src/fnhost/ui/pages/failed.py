"""Failed calls across the project (or of one function), newest first."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from fnhost.ui import actions
from fnhost.ui.web import SignedIn, SystemDep, overview_of, page_router, render

router = page_router()


@router.get("/ui/failed")
def failed_page(
    request: Request, sess: SignedIn, system: SystemDep, function: int | None = None
) -> Response:
    rows = overview_of(system).failed_calls(sess.project, sess.principal, function_id=function)
    names = actions.schedule_names(system, sess)
    return render(request, sess, "failed.html", rows=rows, schedule_names=names)
