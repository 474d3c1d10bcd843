"""What the page's forms do, as calls into the domain services with the signed-in principal.

No HTTP here: the routes turn form fields into these calls and the results into pages.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fnhost.api.services import Services
from fnhost.errors import FnhostError, InvalidRequest
from fnhost.services.calls import CallRequest
from fnhost.services.files import FileSpec
from fnhost.services.schedules import ScheduleFilter, ScheduleSpec
from fnhost.services.sessions import TOKEN_EXCHANGE, SessionRequest
from fnhost.services.versions import VersionSpec
from fnhost.ui.fields import form_field
from fnhost.ui.session import UiSession

_KV_LINE = re.compile(r"^\s*([^=\s][^=]*?)\s*=(.*)$")


def _pairs(text: str, label: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _KV_LINE.match(line)
        if m is None:
            raise InvalidRequest(f"{label} line {n}: write KEY=value, one per line.")
        out[m.group(1)] = m.group(2).strip()
    return out


def function_item(values: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """What the upload form asks for, as ``FunctionSpec`` arguments (all but ``file_id``),
    and errors per form field."""
    item: dict[str, Any] = {"name": values.get("name") or None}
    errors: dict[str, str] = {}
    if not item["name"]:
        errors["name"] = "Give the function a name."
    for key in ("external_id", "description", "owner", "function_path", "runtime", "index_url"):
        if values.get(key):
            item[key] = values[key]
    for key, label in (("env_vars", "Environment variables"), ("secrets", "Secrets")):
        try:
            pairs = _pairs(values.get(key, ""), label)
        except InvalidRequest as exc:
            errors[key] = exc.message
            continue
        if pairs:
            item[key] = pairs
    for key in ("cpu", "memory"):
        if values.get(key):
            try:
                item[key] = float(values[key])
            except ValueError:
                errors[key] = f"{key} must be a number, got {values[key]!r}."
    return item, errors


def upload_zip(system: Services, sess: UiSession, filename: str, content: bytes) -> int:
    """Store a zip as a file (create the row, then upload the bytes); return its id."""
    name = filename.rsplit("/", 1)[-1] or "function.zip"
    row = system.files.create(
        sess.project, sess.principal, FileSpec(name=name, mime_type="application/zip"), overwrite=False
    )
    assert row.upload_token is not None
    system.files.upload(sess.project, sess.principal, row.id, row.upload_token, iter([content]))
    return row.id


# -- calls ----------------------------------------------------------------------------------------
def start_call(system: Services, sess: UiSession, function_id: int, data: dict[str, Any]) -> int:
    """Call a function as the signed-in principal (a token-exchange session, as the SDK makes)."""
    created = system.sessions.create(sess.project, sess.principal, TOKEN_EXCHANGE)
    call = system.calls.call(sess.project, sess.principal, function_id, CallRequest(data, created.nonce))
    return call.id


# -- schedules ------------------------------------------------------------------------------------
def schedule_counts(system: Services, sess: UiSession) -> dict[int, int]:
    rows = system.schedules.list(sess.project, sess.principal, limit=10_000)
    counts: dict[int, int] = {}
    for r in rows:
        counts[r.function_id] = counts.get(r.function_id, 0) + 1
    return counts


def schedules_of(system: Services, sess: UiSession, function_id: int) -> list[dict[str, Any]]:
    svc = system.schedules
    rows = svc.list(
        sess.project, sess.principal, limit=10_000, filt=ScheduleFilter(function_id=function_id)
    )
    return [
        {
            "id": r.id,
            "name": r.name,
            "cron": r.cron_expression,
            "description": r.description,
            "when": svc.when(r),
            "paused": r.paused,
            "next": svc.next_fire_times(r, 3),
        }
        for r in rows
    ]


def schedule_names(system: Services, sess: UiSession) -> dict[int, str]:
    """Schedule id -> name in the project, so call lists say which schedule fired a call."""
    rows = system.schedules.list(sess.project, sess.principal, limit=10_000)
    return {r.id: r.name for r in rows}


def create_schedule(
    system: Services, sess: UiSession, function_id: int, values: dict[str, str]
) -> dict[str, str]:
    """Create a schedule from the form; return errors per form field (empty when created)."""
    errors: dict[str, str] = {}
    if not values["name"]:
        errors["name"] = "Give the schedule a name."
    if not values["cron"]:
        errors["cron"] = "Enter a cron expression, for example */15 * * * *."
    data: Any = None
    try:
        data = json.loads(values["data"]) if values["data"] else None
    except json.JSONDecodeError as exc:
        errors["data"] = f"Invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
    else:
        if data is not None and not isinstance(data, dict):
            errors["data"] = 'The data must be a JSON object, like {"x": 1}.'
    if bool(values["client_id"]) != bool(values["client_secret"]):
        errors["client_id"] = "Give both a client id and a client secret, or neither."
    if values["cron"]:
        try:
            system.schedules.validate_cron(values["cron"])
        except InvalidRequest as exc:
            errors[form_field("schedule", exc)] = exc.message
    if errors:
        return errors
    session_request = (
        SessionRequest(client_id=values["client_id"], client_secret=values["client_secret"])
        if values["client_id"]
        else TOKEN_EXCHANGE
    )
    try:
        created = system.sessions.create(sess.project, sess.principal, session_request)
    except FnhostError as exc:
        # the session is made from the client id and secret of the form (or as you)
        return {"client_id" if values["client_id"] else "_": exc.message}
    spec = ScheduleSpec(
        name=values["name"],
        function_id=function_id,
        cron_expression=values["cron"],
        description=values["description"] or None,
        data=data or None,
        nonce=created.nonce,
    )
    try:
        system.schedules.create(sess.project, sess.principal, spec)
    except FnhostError as exc:
        return {form_field("schedule", exc): exc.message}
    return {}


def schedule_action(system: Services, sess: UiSession, schedule_id: int, action: str) -> str:
    """Pause, resume or delete a schedule; return what was done, naming the schedule."""
    svc = system.schedules
    if action not in ("delete", "pause", "resume"):
        raise InvalidRequest(f"Unknown schedule action {action!r}.")
    name = svc.get(sess.project, sess.principal, schedule_id).name
    if action == "delete":
        svc.delete(sess.project, sess.principal, [schedule_id], False)
        return f"Schedule {name!r} was deleted."
    svc.set_paused(sess.project, sess.principal, schedule_id, action == "pause")
    return f"Schedule {name!r} was {'paused' if action == 'pause' else 'resumed'}."


# -- versions -------------------------------------------------------------------------------------
def versions_of(system: Services, sess: UiSession, function_id: int) -> list[dict[str, Any]]:
    """A function's versions as the page shows them, newest first."""
    function, rows = system.versions.list(sess.project, sess.principal, function_id)
    return [
        {
            "number": v.number,
            "status": v.status,
            "current": v.number == function.version,
            "rollbackable": v.number != function.version and v.status == "Ready" and v.retired_time is None,
            "retired": v.retired_time is not None,
            "error": (v.error or {}).get("message"),
            "created": v.created_time,
            "ready": v.ready_time,
            "file_id": v.file_id,
            "function_path": v.function_path,
        }
        for v in rows
    ]


def deploy_version(system: Services, sess: UiSession, function_id: int, file_id: int, function_path: str) -> str:
    """New code for a function; what the page says about it."""
    spec = VersionSpec(file_id=file_id, function_path=function_path or None)
    deployed = system.versions.deploy(sess.project, sess.principal, function_id, spec)
    if not deployed.created:
        return (
            f"Unchanged: version {deployed.version.number} already has this code and these settings; "
            "no version was made."
        )
    return f"Version {deployed.version.number} is being built; the current version serves until it is Ready."


def rollback(system: Services, sess: UiSession, function_id: int, version: int) -> str:
    row = system.versions.rollback(sess.project, sess.principal, function_id, version)
    return f"Rolled back: version {row.number} is current."
