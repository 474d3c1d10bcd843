"""Static checks of a function's entry point, without running any of its code.

Mirrors what ``cognite-sdk`` checks for a folder before upload: the file exists, it parses,
and the last top-level definition of ``handle`` (``def handle``, ``handle = …`` or
``handle: T = …``) exists; the ``def`` form must take only the allowed argument names.
Importing the handler for real happens later, inside the function's environment
(``run/bootstrap.py check``).
"""

from __future__ import annotations

import ast

from fnhost.build.zips import (
    CodeError,
    ZipLimits,
    entries,
    missing_file_message,
    open_zip,
    read_member,
)

ALLOWED_ARGS = ("client", "data", "secrets", "function_call_info")
MAX_HANDLER_BYTES = 10 * 1024 * 1024


def check_source(source: bytes, function_path: str) -> None:
    """Raise ``CodeError`` unless ``source`` parses and defines a usable ``handle``."""
    try:
        tree = ast.parse(source, filename=function_path)
    except SyntaxError as exc:
        raise CodeError(
            f"{function_path} has a syntax error: {exc.msg} (line {exc.lineno})."
        ) from None
    except ValueError as exc:  # e.g. NUL bytes in the source
        raise CodeError(f"{function_path} cannot be parsed: {exc}.") from None
    last: ast.stmt | None = None
    for node in tree.body:
        if (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "handle") or (isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "handle" for t in node.targets
        )) or (
            isinstance(node, ast.AnnAssign)
            and node.value is not None
            and isinstance(node.target, ast.Name)
            and node.target.id == "handle"
        ):
            last = node
        elif isinstance(node, ast.ImportFrom) and any(
            (a.asname or a.name) == "handle" for a in node.names
        ):
            last = node  # resolved by the import check
    if last is None:
        raise CodeError(
            f"{function_path} does not define a function named 'handle' at its top level."
        )
    if isinstance(last, ast.AsyncFunctionDef):
        raise CodeError(
            f"handle() in {function_path} is 'async def'; it must be a synchronous function."
        )
    if isinstance(last, ast.FunctionDef):
        a = last.args
        names = [arg.arg for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
        bad = [n for n in names if n not in ALLOWED_ARGS]
        if bad:
            raise CodeError(
                f"handle() in {function_path} (line {last.lineno}) has argument(s) {bad}; "
                f"only {list(ALLOWED_ARGS)} are allowed."
            )


def check_zip(data: bytes, function_path: str, limits: ZipLimits) -> None:
    """Everything knowable from the zip alone: it is safe, holds the handler, which is valid."""
    with open_zip(data) as zf:
        found = entries(zf, limits)
        source = read_member(zf, found, function_path, MAX_HANDLER_BYTES)
        if source is None:
            raise CodeError(missing_file_message(found, function_path))
    check_source(source, function_path)
