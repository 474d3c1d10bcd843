"""Upload a function: a zip by drag and drop or the file chooser, and the function's settings.

The zip is stored as soon as it arrives, so a form sent back for other fixes keeps it. A
form with errors is answered with a redirect to ``/ui/upload?form=…``, where it is shown
again with each message at its field (post/redirect/get: a reload sends nothing again).

``/ui/upload?retry=<id>`` starts from a function whose build failed: its settings filled
in, and the build's error at the code's drop zone, because that is where it came from (the
build of the uploaded code), whatever it says. Sent with "replace", the new function
replaces the failed one, which keeps its external id until then. Its secrets are not
filled in (they never reach the page): the form says their names, to be entered again.
"""

from __future__ import annotations

import io
import zipfile
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from fnhost.api.services import Services
from fnhost.errors import FnhostError, Unauthenticated
from fnhost.services.functions import FunctionSpec
from fnhost.services.identifiers import Identifier
from fnhost.store.functions import FunctionRow
from fnhost.ui import actions
from fnhost.ui.fields import form_field
from fnhost.ui.session import FailedForm, UiSession
from fnhost.ui.web import SignedIn, SignedInForm, SystemDep, page_router, render, see_other, text

FIELDS = (
    "name", "external_id", "description", "owner", "function_path", "env_vars", "secrets",
    "cpu", "memory", "runtime", "index_url", "file_id", "file_name", "replaces",
)  # fmt: skip
NO_FILE = "Choose or drop a zip file with your function's code."

router = page_router()


def _page(
    request: Request, sess: UiSession, system: Services, values: dict[str, str], errors: dict[str, str]
) -> Response:
    replacing = None
    if values.get("replaces", "").isdigit():
        replacing = _failed_function(system, sess, int(values["replaces"]))
    return render(
        request,
        sess,
        "upload.html",
        values=values,
        errors=errors,
        replacing=replacing,
        limits=system.functions.limits(),
        default_runtime=system.settings.default_runtime,
    )


def _failed_function(system: Services, sess: UiSession, function_id: int) -> FunctionRow | None:
    try:
        row = system.functions.get(sess.project, sess.principal, function_id)
    except Unauthenticated:
        raise
    except FnhostError:
        return None  # gone meanwhile: the form is a new upload
    return row if row.status == "Failed" else None


def _retry_values(row: FunctionRow) -> dict[str, str]:
    """The failed function's settings, as the form shows them (its secrets stay out)."""
    return {
        "name": row.name,
        "external_id": row.external_id or "",
        "description": row.description or "",
        "owner": row.owner or "",
        "function_path": row.function_path,
        "env_vars": "\n".join(f"{k}={v}" for k, v in (row.env_vars or {}).items()),
        "cpu": f"{row.cpu:g}",
        "memory": f"{row.memory:g}",
        "runtime": row.runtime,
        "index_url": row.index_url or "",
        "replaces": str(row.id),
    }


@router.get("/ui/upload")
def upload_form(
    request: Request,
    sess: SignedIn,
    system: SystemDep,
    form: str | None = None,
    retry: int | None = None,
) -> Response:
    failed = sess.forms.get(form, "upload")
    if failed is not None:
        return _page(request, sess, system, failed.values, failed.errors)
    row = _failed_function(system, sess, retry) if retry is not None else None
    if row is None:
        return _page(request, sess, system, {"function_path": "handler.py"}, {})
    # the build's error belongs to the code, by where it came from: the drop zone
    build_error = (row.error or {}).get("message") or "The build failed."
    errors = {"file": f"The last build of this code failed: {build_error} Upload the fixed code."}
    return _page(request, sess, system, _retry_values(row), errors)


def is_zip(content: bytes) -> bool:
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
        if not is_zip(content):
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
            spec = FunctionSpec(file_id=int(values["file_id"]), **item)
            if values["replaces"].isdigit() and form.get("replace") == "yes":
                await run_in_threadpool(_replace, system, sess, int(values["replaces"]), spec)
            row = await run_in_threadpool(
                system.functions.create, sess.project, sess.principal, spec
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


def _replace(system: Services, sess: UiSession, function_id: int, spec: FunctionSpec) -> None:
    """Delete the failed function the new one replaces, once the new one's values check out
    (a failed function has no calls, and everything else it had is in the form)."""
    system.functions.validate(spec)  # refuse before anything is deleted
    old = _failed_function(system, sess, function_id)
    if old is not None:  # not there, or no longer Failed: nothing is replaced
        system.functions.delete(sess.project, sess.principal, [Identifier(id=old.id)], False)
