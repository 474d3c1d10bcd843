"""Upload a function: a zip by drag and drop or the file chooser, and the function's settings.

The zip is stored as soon as it arrives, so a form sent back for other fixes keeps it. A
form with errors is answered with a redirect to ``/ui/upload?form=…``, where it is shown
again with each message at its field (post/redirect/get: a reload sends nothing again).
"""

from __future__ import annotations

import io
import zipfile
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from fnhost.errors import FnhostError, Unauthenticated
from fnhost.services.container import System
from fnhost.ui import actions
from fnhost.ui.fields import form_field
from fnhost.ui.session import FailedForm, UiSession
from fnhost.ui.web import SignedIn, SignedInForm, SystemDep, page_router, render, see_other, text

FIELDS = (
    "name", "external_id", "description", "owner", "function_path", "env_vars", "secrets",
    "cpu", "memory", "runtime", "index_url", "file_id", "file_name",
)  # fmt: skip
NO_FILE = "Choose or drop a zip file with your function's code."

router = page_router()


def _page(
    request: Request, sess: UiSession, system: System, values: dict[str, str], errors: dict[str, str]
) -> Response:
    return render(
        request,
        sess,
        "upload.html",
        values=values,
        errors=errors,
        limits=system.functions.limits(),
        default_runtime=system.settings.default_runtime,
    )


@router.get("/ui/upload")
def upload_form(
    request: Request, sess: SignedIn, system: SystemDep, form: str | None = None
) -> Response:
    failed = sess.forms.get(form, "upload")
    if failed is None:
        return _page(request, sess, system, {"function_path": "handler.py"}, {})
    return _page(request, sess, system, failed.values, failed.errors)


def _is_zip(content: bytes) -> bool:
    if not content.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as zf:
            return zf.testzip() is None
    except zipfile.BadZipFile:
        return False


@router.post("/ui/upload")
async def upload(signed_in: SignedInForm, system: SystemDep) -> Response:
    sess, form = signed_in
    values = {k: text(form, k) for k in FIELDS}
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
    elif not values["file_id"].isdigit():
        errors["file"] = NO_FILE
    item, field_errors = actions.function_item(values)
    errors.update(field_errors)
    try:
        if content is not None and "file" not in errors:
            # stored at once, so a form sent back for other fixes keeps the zip
            file_id = await run_in_threadpool(
                actions.upload_zip, system, sess, values["file_name"], content
            )
            values["file_id"] = str(file_id)
        if not errors:
            item["fileId"] = int(values["file_id"])
            row = await run_in_threadpool(
                system.functions.create, sess.project, sess.principal, item
            )
    except Unauthenticated:
        raise  # signed in, but no longer allowed in the project: sign in again
    except FnhostError as exc:
        errors[form_field("upload", exc)] = exc.message
    if errors:
        key = sess.forms.put(FailedForm("upload", values, errors))
        return see_other("/ui/upload?" + urlencode({"form": key}))
    sess.forms.drop("upload")
    return see_other(f"/ui/functions/{row.id}")
