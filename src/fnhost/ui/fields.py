"""Which form field a domain error is about: one explicit table, read from ``FnhostError.field``.

The services name the field an error is about by its domain name, the attribute of the
typed value they take (``external_id``, ``cron_expression``); each form of the page names
its inputs in its own (``external_id``, ``cron``). Nothing here reads an error's text. An error with no field, or with a field the
form does not have, is shown at the top of the form (``GENERAL``).
"""

from __future__ import annotations

from typing import Literal

from fnhost.errors import FnhostError

Form = Literal["upload", "schedule", "call", "version"]
GENERAL = "_"

# form -> domain field -> the form's input
FIELDS: dict[Form, dict[str, str]] = {
    "upload": {
        "name": "name",
        "external_id": "external_id",
        "description": "description",
        "owner": "owner",
        "function_path": "function_path",
        "file_id": "file",  # the zip: its content is what the check refused
        "env_vars": "env_vars",
        "secrets": "secrets",
        "cpu": "cpu",
        "memory": "memory",
        "runtime": "runtime",
        "index_url": "index_url",
        "extra_index_urls": "index_url",
    },
    "schedule": {
        "name": "name",
        "cron_expression": "cron",
        "time_zone": "cron",
        "description": "description",
        "data": "data",
        # the schedule's session: made from the client id and secret given (or as you)
        "nonce": "client_id",
    },
    "call": {"data": "data"},
    # new code for a function (its new version) and rolling back to an earlier one
    "version": {
        "file_id": "file",
        "function_path": "function_path",
    },
}


def form_field(form: Form, exc: FnhostError) -> str:
    """The input of ``form`` that ``exc`` is about, or ``GENERAL``."""
    return FIELDS[form].get(exc.field or "", GENERAL)
