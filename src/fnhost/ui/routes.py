"""The web page: server-rendered pages over the same domain services as the API.

Every action runs as the signed-in ``Principal`` through ``system.functions``,
``system.files``, ``system.sessions``, the calls and schedules services, so the
capability checks are the API's. Pages are plain HTML forms; a little JavaScript
(``static/app.js``) adds drag and drop, live deploy progress, live call lists and the call
box. One module per page in ``fnhost.ui.pages``; the plumbing they share (the signed-in
dependency, CSRF, templates) is ``fnhost.ui.web``. ``router`` is what the app mounts.
"""

from __future__ import annotations

from fastapi import APIRouter

from fnhost.ui.pages import (
    calls,
    entry,
    failed,
    function,
    functions,
    schedules,
    signin,
    upload,
    versions,
)

router = APIRouter(include_in_schema=False)
for page in (entry, signin, functions, upload, function, calls, schedules, versions, failed):
    router.include_router(page.router)
