"""The CDF wire format: gzip request bodies, ``X-Request-ID``, camelCase, the error envelope.

Domain errors become wire errors here and only here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import secrets
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel, to_snake
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fnhost import errors
from fnhost.errors import InvalidRequest

log = logging.getLogger("fnhost.api")


class WireModel(BaseModel):
    """A request body, or a part of one: camelCase on the wire (``externalId``), snake_case in
    Python (``external_id``); keys it does not know are ignored, as CDF does (the SDK sends
    some fnhost does not use). Strict: an id given as ``"12"`` or a flag as ``1`` is refused
    rather than coerced, as a type error the user can fix (see ``describe_validation``).

    Subclasses live in ``api/models/<noun>.py`` and turn themselves into the domain's typed
    values (``spec()``, ``filter()``, …), so the services never see a wire dict."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", strict=True
    )


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], value: Any) -> M:
    """``value`` (decoded JSON) as ``model``, or ``InvalidRequest`` naming what is wrong: for the
    endpoints that read their own body (the call path) and for parts read on their own."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        message, field = describe_validation(exc.errors())
        raise InvalidRequest(message, field=field) from None


# the keys that hold other fields: an error's field is the first name below them
_CONTAINERS = frozenset({"body", "query", "path", "items", "filter", "update", "set"})
_TYPES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "a JSON object",
    "model_type": "a JSON object",
    "model_attributes_type": "a JSON object",
    "list_type": "a list",
}


def _where(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _phrase(where: str, err: Mapping[str, Any]) -> str:
    kind, ctx = str(err.get("type")), err.get("ctx") or {}
    subject = where or "The request body"
    if kind == "missing":
        return f"{subject} is required."
    if kind in _TYPES:
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) else f", got {_show(got)}"
        return f"{subject} must be {_TYPES[kind]}{shown}."
    if kind in ("too_short", "string_too_short"):
        low = ctx.get("min_length")
        if low == 1:
            return f"{subject} must not be empty."
        return f"{subject} must have at least {low} {'characters' if 'string' in kind else 'entries'}."
    if kind in ("too_long", "string_too_long"):
        unit = "characters" if "string" in kind or ctx.get("field_type") == "String" else "entries"
        return f"{subject} may have at most {ctx.get('max_length')} {unit}."
    if kind == "greater_than_equal":
        return f"{subject} must be at least {ctx.get('ge')}, got {_show(err.get('input'))}."
    if kind == "less_than_equal":
        return f"{subject} must be at most {ctx.get('le')}, got {_show(err.get('input'))}."
    if kind == "greater_than":
        return f"{subject} must be more than {ctx.get('gt')}, got {_show(err.get('input'))}."
    if kind == "literal_error":
        return f"{subject} must be one of {ctx.get('expected')}, got {_show(err.get('input'))}."
    if kind == "extra_forbidden":
        return f"{subject} is not a known property."
    if kind == "value_error":
        text = str(err.get("msg", "")).removeprefix("Value error, ")
        return f"{where}: {text}" if where else text
    if kind == "json_invalid":
        return f"The body is not valid JSON: {ctx.get('error', err.get('msg'))}."
    return f"{subject}: {err.get('msg')}."


def describe_validation(errs: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """Pydantic's errors as one message in the API's words (``items[0].fileId must be an
    integer, got '12'.``) and the domain name of the field the first is about (``file_id``),
    for ``FnhostError.field``. (The models avoid unions: pydantic names each member of one
    in ``loc``, which no user could act on.)"""
    parts: list[str] = []
    field: str | None = None
    for err in errs:
        loc = [p for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        phrase = _phrase(_where(loc), err)
        if phrase not in parts:
            parts.append(phrase)
        if field is None:
            names = [p for p in loc if isinstance(p, str) and p not in _CONTAINERS]
            field = to_snake(names[0]) if names else None
    if len(parts) > 3:
        parts = [*parts[:3], f"and {len(parts) - 3} more."]
    return " ".join(parts) or "Invalid request.", field


def error_body(status: int, message: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"code": status, "message": message}
    body.update({k: v for k, v in extra.items() if v})
    return {"error": body}


def error_response(
    status: int, message: str, retry_after: float | None = None, **extra: Any
) -> JSONResponse:
    headers = {"cdf-is-auto-retryable": "true"} if status in (429, 503) else {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return JSONResponse(error_body(status, message, **extra), status_code=status, headers=headers or None)


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # JSON strings (unrolled: fast in re)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_too_deep(body: bytes, limit: int) -> bool:
    """Whether arrays/objects in ``body`` nest deeper than ``limit``: checked before parsing,
    which recurses as deep as the nesting goes. Only C-speed passes over the brackets: each
    pass drops the innermost level, and a run of ``limit`` + 1 openers settles it at once."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    shape = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    shape = shape.replace(b"[", b"{").replace(b"]", b"}")
    too_deep = b"{" * (limit + 1)
    for _ in range(limit + 1):
        if too_deep in shape:
            return True
        if b"{}" not in shape:
            return False
        shape = shape.replace(b"{}", b"")
    return True


def domain_error_response(exc: errors.FnhostError) -> JSONResponse:
    """A domain error as the wire's error envelope, with what the error carries beside its
    message (``missing``, ``duplicated``, ``Retry-After``)."""
    extra: dict[str, Any] = dict(exc.extra)
    if isinstance(exc, errors.NotFound):
        extra["missing"] = exc.missing
    if isinstance(exc, errors.Duplicated):
        extra["duplicated"] = exc.duplicated
    if isinstance(exc, errors.RateLimited):
        extra["retry_after"] = exc.retry_after_seconds
    return error_response(exc.status, exc.message, **extra)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.FnhostError)
    async def _domain(_req: Request, exc: errors.FnhostError) -> JSONResponse:
        return domain_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, describe_validation(exc.errors())[0])

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            message = "Not found: no such endpoint."
        elif exc.status_code == 405:
            message = "Method not allowed on this endpoint."
        return error_response(exc.status_code, message)

    @app.exception_handler(Exception)
    async def _unexpected(req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", req.method, req.url.path)
        return error_response(500, "Internal server error. The server log has the details.")


class WireMiddleware:
    """Pure ASGI: sets ``X-Request-ID``, inflates gzip/deflate bodies, caps body size and
    JSON nesting, and gives up on bodies that stop arriving (408).

    Written as raw ASGI rather than ``BaseHTTPMiddleware`` because it sits on every
    request, including the hot call path.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        raw_upload_marker: str,
        max_json_depth: int = 100,
        body_idle_timeout: float = 30.0,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.raw_upload_marker = raw_upload_marker
        self.max_json_depth = max_json_depth
        self.body_idle_timeout = body_idle_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        receive = self._with_body_deadline(receive)
        request_id = secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        headers = dict(scope.get("headers") or [])
        encoding = headers.get(b"content-encoding", b"").decode("latin-1").strip().lower()
        is_upload = self.raw_upload_marker in scope["path"]
        if is_upload or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send_with_id)
            return

        try:
            body = await self._read_body(receive, encoding)
            if body.lstrip()[:1] in (b"{", b"[") and json_too_deep(body, self.max_json_depth):
                raise errors.InvalidRequest(
                    f"The JSON body nests arrays and objects more than {self.max_json_depth} levels deep."
                )
        except errors.FnhostError as exc:
            response = error_response(exc.status, exc.message)
            await response(scope, receive, send_with_id)
            return

        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if encoding:
            scope["headers"] = [
                (k, v)
                for k, v in scope["headers"]
                if k not in (b"content-encoding", b"content-length")
            ] + [(b"content-length", str(len(body)).encode())]
        await self.app(scope, replay, send_with_id)

    def _with_body_deadline(self, receive: Receive) -> Receive:
        """``receive`` that fails with 408 when a body's next chunk is slow to come."""
        done = False

        async def guarded() -> Message:
            nonlocal done
            if done:  # the body is in: later receives wait for a disconnect, for as long as it takes
                return await receive()
            try:
                # asyncio.timeout, not wait_for: wait_for wraps receive() in a task of its own,
                # and this runs for every request (13 us against 5 us a receive)
                async with asyncio.timeout(self.body_idle_timeout):
                    message = await receive()
            except TimeoutError:
                done = True
                raise errors.RequestTimeout(
                    f"The request body stopped arriving for {self.body_idle_timeout:g} seconds."
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        return guarded

    async def _read_body(self, receive: Receive, encoding: str) -> bytes:
        if encoding not in ("", "identity", "gzip", "deflate"):
            raise errors.InvalidRequest(f"Unsupported Content-Encoding {encoding!r}.")
        chunks: list[bytes] = []
        raw_size = 0
        inflater = None
        if encoding == "gzip":
            inflater = zlib.decompressobj(wbits=31)
        elif encoding == "deflate":
            inflater = zlib.decompressobj()
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise errors.InvalidRequest("Client disconnected while sending the body.")
            data = message.get("body", b"")
            raw_size += len(data)
            if inflater is not None and data:
                try:
                    # bounded output: a small gzip bomb cannot blow up memory
                    data = inflater.decompress(data, self.max_body_bytes + 1 - size)
                except zlib.error:
                    raise errors.InvalidRequest(
                        f"The request body is not valid {encoding} data."
                    ) from None
                if inflater.unconsumed_tail:
                    raise errors.PayloadTooLarge(
                        f"The request body is larger than {self.max_body_bytes} bytes."
                    )
            size += len(data)
            if size > self.max_body_bytes:
                raise errors.PayloadTooLarge(
                    f"The request body is larger than {self.max_body_bytes} bytes."
                )
            chunks.append(data)
            if not message.get("more_body", False):
                break
        if inflater is not None and raw_size and not inflater.eof:
            raise errors.InvalidRequest(f"The request body is truncated {encoding} data.")
        return b"".join(chunks)


def items(values: list[Any]) -> dict[str, Any]:
    return {"items": values}


def drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}
