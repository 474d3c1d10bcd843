"""Versions from the function page: upload new code (a new version) and roll back.

Both are forms that answer with a redirect (post/redirect/get): back to the function page,
with a message, or with the form and its errors at their fields (``FnhostError.field``).
"""

from __future__ import annotations

from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from fnhost.errors import FnhostError, InvalidRequest, Unauthenticated
from fnhost.ui import actions
from fnhost.ui.fields import form_field
from fnhost.ui.pages.function import version_form_failed
from fnhost.ui.pages.upload import is_zip
from fnhost.ui.web import SignedInForm, SystemDep, page_router, see_other, text

router = page_router()


@router.post("/ui/functions/{function_id}/versions")
async def deploy_version(signed_in: SignedInForm, system: SystemDep, function_id: int) -> Response:
    sess, form = signed_in
    values = {"function_path": text(form, "function_path")}
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return version_form_failed(sess, function_id, values, {"file": "Choose a zip file with the new code."})
    content = await upload.read()
    if not is_zip(content):
        return version_form_failed(
            sess, function_id, values, {"file": f"{upload.filename!r} is not a zip file. Choose a .zip with your code."}
        )
    try:
        file_id = await run_in_threadpool(actions.upload_zip, system, sess, upload.filename, content)
        message = await run_in_threadpool(
            actions.deploy_version, system, sess, function_id, file_id, values["function_path"]
        )
    except Unauthenticated:
        raise
    except FnhostError as exc:
        return version_form_failed(sess, function_id, values, {form_field("version", exc): exc.message})
    sess.forms.drop(f"version:{function_id}")
    sess.flashes.append(("ok", message))
    return see_other(f"/ui/functions/{function_id}#versions")


@router.post("/ui/functions/{function_id}/versions/rollback")
async def rollback(signed_in: SignedInForm, system: SystemDep, function_id: int) -> Response:
    sess, form = signed_in
    version = text(form, "version")
    try:
        if not version.isdigit():
            raise InvalidRequest("Choose a version to roll back to.")
        message = await run_in_threadpool(actions.rollback, system, sess, function_id, int(version))
    except Unauthenticated:
        raise
    except FnhostError as exc:
        sess.flashes.append(("error", exc.message))
        return see_other(f"/ui/functions/{function_id}#versions")
    sess.flashes.append(("ok", message))
    return see_other(f"/ui/functions/{function_id}#versions")
