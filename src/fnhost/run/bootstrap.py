"""The code that runs *inside* a function's Python environment.

This file is executed by the environment's interpreter as a script, so it must import
nothing from ``fnhost`` and only the standard library at module level (``cognite.client``
is imported where a mode needs it). Modes::

    python bootstrap.py check --code-dir DIR --function-path handler.py
        import the handler as the service will; print one JSON line:
        {"ok": bool, "message": str, "trace": str, "forkSafe": bool, "args": [...]}
"""

from __future__ import annotations

import __future__
import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import json
import os
import sys
import threading
import traceback
from types import ModuleType
from typing import Any

ALLOWED_ARGS = ("client", "data", "secrets", "function_call_info")


class HandlerImportError(Exception):
    def __init__(self, message: str, trace: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.trace = trace


class _LazyAnnotationsLoader(importlib.machinery.SourceFileLoader):
    """Compiles the handler module as if it began with ``from __future__ import annotations``.

    Handle-mode zips hold only the function's own source, so annotations such as
    ``client: CogniteClient | None`` name things that were never imported; evaluated
    eagerly they raise NameError at import. Lazy annotations make them harmless strings.
    """

    def source_to_code(self, data: Any, path: Any, *, _optimize: int = -1) -> Any:  # type: ignore[override]
        return compile(
            data, path, "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True, optimize=_optimize
        )


def module_name(function_path: str) -> str:
    return function_path[: -len(".py")].replace("/", ".").replace("\\", ".")


def import_handler(code_dir: str, function_path: str) -> ModuleType:
    """Import the handler as a dotted module with the code root first on ``sys.path``."""
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    name = module_name(function_path)
    path = os.path.join(code_dir, function_path)
    if not os.path.isfile(path):
        raise HandlerImportError(f"The function file {function_path!r} does not exist in the code.")
    # Import parent packages normally (relative imports inside packages keep working), then
    # the handler module itself through the lazy-annotations loader.
    parent, _, _ = name.rpartition(".")
    try:
        if parent:
            importlib.import_module(parent)
        loader = _LazyAnnotationsLoader(name, path)
        spec = importlib.util.spec_from_file_location(name, path, loader=loader)
        if spec is None:
            raise HandlerImportError(f"Cannot load {function_path!r}.")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loader.exec_module(module)
    except HandlerImportError:
        raise
    except SyntaxError as exc:
        raise HandlerImportError(
            f"{function_path} has a syntax error: {exc.msg} (line {exc.lineno}).", traceback.format_exc()
        ) from None
    except BaseException as exc:  # noqa: BLE001 - user code may raise anything, even SystemExit
        raise HandlerImportError(
            f"Importing {function_path} failed: {type(exc).__name__}: {exc}", traceback.format_exc()
        ) from None
    return module


def handle_of(module: ModuleType, function_path: str) -> tuple[Any, list[str]]:
    """The ``handle`` callable and the allowed argument names it declares."""
    handle = getattr(module, "handle", None)
    if handle is None:
        raise HandlerImportError(f"{function_path} does not define a function named 'handle'.")
    if not callable(handle):
        raise HandlerImportError(f"'handle' in {function_path} is not callable.")
    try:
        params = inspect.signature(handle).parameters
    except (TypeError, ValueError):
        return handle, []
    names = [
        p.name
        for p in params.values()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    bad = [n for n in names if n not in ALLOWED_ARGS]
    if bad:
        raise HandlerImportError(
            f"handle() in {function_path} has argument(s) {bad}; only {list(ALLOWED_ARGS)} are allowed."
        )
    return handle, names


def fork_safe() -> bool:
    """A process may be forked safely only while it runs a single thread."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return threading.active_count() == 1


def _check(args: argparse.Namespace) -> int:
    os.chdir(args.code_dir)
    try:
        module = import_handler(args.code_dir, args.function_path)
        _, names = handle_of(module, args.function_path)
    except HandlerImportError as exc:
        print(json.dumps({"ok": False, "message": exc.message, "trace": exc.trace, "forkSafe": False}))
        return 0
    print(json.dumps({"ok": True, "message": "", "trace": "", "forkSafe": fork_safe(), "args": names}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bootstrap")
    sub = parser.add_subparsers(dest="mode", required=True)
    check = sub.add_parser("check", help="import the handler and report")
    check.add_argument("--code-dir", required=True)
    check.add_argument("--function-path", default="handler.py")
    args = parser.parse_args(argv)
    if args.mode == "check":
        return _check(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
