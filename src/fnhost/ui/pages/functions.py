"""The functions list: every function of the project with its status, last call and counts."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from fnhost.ui import actions
from fnhost.ui.web import SignedIn, SystemDep, overview_of, page_router, render

router = page_router()


@router.get("/ui/")
def functions_page(request: Request, sess: SignedIn, system: SystemDep, q: str = "") -> Response:
    rows = system.functions.list(sess.project, sess.principal, limit=10_000)
    stats, last = overview_of(system).call_stats(sess.project, sess.principal)
    schedules = actions.schedule_counts(system, sess)
    rows = sorted(rows, key=lambda r: r.created_time, reverse=True)
    return render(
        request, sess, "functions.html", rows=rows, stats=stats, last=last, schedules=schedules, q=q
    )
