"""Domain errors: every failure a user can cause or see, under one root.

The HTTP edge maps these to the CDF error envelope in one place (``api/wire.py``)::

    FnhostError                      400  the request cannot be served as asked
    ├── InvalidRequest               400  malformed or invalid input
    ├── NotFound                     400  ids/externalIds that do not exist (``missing``)
    │                                     (404 when there is nothing to list as missing)
    ├── Duplicated                   409  ids/externalIds already taken (``duplicated``)
    ├── Conflict                     409  the object is in the wrong state for this
    ├── Unauthenticated              401  no token, or a token that does not verify
    ├── Forbidden                    403  a valid token without the needed capability
    ├── PayloadTooLarge              413  a body, upload or response over its limit
    ├── RequestTimeout               408  the client stopped sending its request
    ├── LimitExceeded                400  a quota (functions, schedules, …) is used up
    ├── RateLimited                  429  too many requests from one principal
    └── Unavailable                  503  a dependency is down; the client may retry

Domain and store code raise these and never import HTTP types.

An error about one input field says which with ``field``: the field's domain name, the
attribute of the typed value the service takes (``services.functions.FunctionSpec``), e.g.
``"external_id"``, ``"function_path"``, ``"file_id"``, ``"cron_expression"``, ``"data"``,
``"secrets"``. Validation errors of the API's request models carry it too (``api/wire.py``
``parse``). The message names the field in the API's word (``externalId``). The web page
shows the message next to that field (``ui/fields.py``); the API does not send it (the CDF
error envelope has no such key).
"""

from __future__ import annotations

from typing import Any


class FnhostError(Exception):
    status = 400

    def __init__(self, message: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        # sent on the wire beside code and message (see api/wire.py)
        self.extra = extra


class InvalidRequest(FnhostError):
    status = 400


class NotFound(FnhostError):
    """Objects that do not exist. ``missing`` entries use the wire identifier shape."""

    status = 400

    def __init__(
        self,
        message: str,
        missing: list[dict[str, Any]] | None = None,
        *,
        field: str | None = None,
    ) -> None:
        super().__init__(message, field=field)
        self.missing = missing or []
        if not self.missing:
            self.status = 404


class Duplicated(FnhostError):
    status = 409

    def __init__(
        self, message: str, duplicated: list[dict[str, Any]], *, field: str | None = None
    ) -> None:
        super().__init__(message, field=field)
        self.duplicated = duplicated


class Conflict(FnhostError):
    status = 409


class Unauthenticated(FnhostError):
    status = 401


class Forbidden(FnhostError):
    status = 403


class PayloadTooLarge(FnhostError):
    status = 413


class RequestTimeout(FnhostError):
    status = 408


class LimitExceeded(FnhostError):
    status = 400


class RateLimited(FnhostError):
    status = 429

    def __init__(self, message: str, retry_after_seconds: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class Unavailable(FnhostError):
    status = 503
