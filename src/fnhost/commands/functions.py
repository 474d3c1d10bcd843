"""``fnhost deploy``, ``fnhost call`` and ``fnhost functions ls/show/rm``."""


import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fnhost.commands import _calls
from fnhost.commands._common import (
    FAILED,
    USAGE,
    Connection,
    JsonOpt,
    ProfileOpt,
    check,
    console,
    emit_json,
    err_console,
    fail,
    guard,
    ms_to_text,
    parse_data,
    parse_pairs,
)

app = typer.Typer(help="List, inspect and delete functions.", no_args_is_help=True, rich_markup_mode=None)

FUNCTION_STATUSES = ("Queued", "Deploying", "Ready", "Failed")
STATUS_STYLE = {"Ready": "green", "Failed": "red", "Queued": "yellow", "Deploying": "yellow"}


def status_text(status: str) -> str:
    style = STATUS_STYLE.get(status) or {"Completed": "green", "Timeout": "red", "Running": "yellow"}.get(
        status, "white"
    )
    return f"[{style}]{status}[/{style}]"


def _source(path: Path, function_path: str | None) -> tuple[dict[str, Any], Path | None]:
    """How ``functions.create`` gets the code: a folder, or one .py file copied into a temp folder."""
    if path.is_dir():
        return {"folder": str(path), "function_path": function_path or "handler.py"}, None
    if path.suffix == ".py" and path.is_file():
        tmp = Path(tempfile.mkdtemp(prefix="fnhost-deploy-"))
        shutil.copy2(path, tmp / path.name)
        return {"folder": str(tmp), "function_path": function_path or path.name}, tmp
    if path.suffix == ".zip" and path.is_file():
        return {"zip": path, "function_path": function_path or "handler.py"}, None
    raise typer.BadParameter(f"{path} is not a folder, a .py file or a .zip file.")


def deploy(
    path: Annotated[Path, typer.Argument(help="A folder with the code, a single .py file, or a .zip.")],
    name: Annotated[str | None, typer.Option(help="Function name (default: the folder or file name).")] = None,
    external_id: Annotated[str | None, typer.Option(help="External id (default: the name).")] = None,
    function_path: Annotated[
        str | None, typer.Option(help="Path of the file defining handle() inside the code.")
    ] = None,
    description: Annotated[str | None, typer.Option(help="Description.")] = None,
    owner: Annotated[str | None, typer.Option(help="Owner.")] = None,
    runtime: Annotated[str | None, typer.Option(help="Runtime, e.g. py311 (see the server's limits).")] = None,
    cpu: Annotated[float | None, typer.Option(help="CPU cores per call.")] = None,
    memory: Annotated[float | None, typer.Option(help="Memory per call, in GB.")] = None,
    secret: Annotated[list[str] | None, typer.Option(help="Secret KEY=VALUE (repeatable).")] = None,
    env: Annotated[list[str] | None, typer.Option(help="Environment variable KEY=VALUE (repeatable).")] = None,
    metadata: Annotated[list[str] | None, typer.Option(help="Metadata KEY=VALUE (repeatable).")] = None,
    index_url: Annotated[str | None, typer.Option(help="Package index for requirements.txt.")] = None,
    extra_index_url: Annotated[list[str] | None, typer.Option(help="Extra package index (repeatable).")] = None,
    replace: Annotated[
        bool, typer.Option(help="Delete an existing function with the same external id first.")
    ] = False,
    new: Annotated[
        bool, typer.Option("--new", help="Only create: refuse if the function exists (instead of a new version).")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Wait for the build to end (Ready or Failed).")] = True,
    timeout: Annotated[float, typer.Option(help="Most seconds to wait for the build.")] = 1800,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Zip and upload code, create the function (or, if it exists, deploy the code as its new
    version), and follow its build to Ready or Failed."""
    from fnhost.commands import versions

    if not path.exists():
        fail(f"{path} does not exist.", USAGE, as_json=as_json)
    source, tmp = _source(path, function_path)
    name = name or (path.stem if path.is_file() else path.resolve().name)
    external_id = external_id or name
    conn = Connection.open(profile, as_json=as_json)
    options = dict(
        description=description,
        owner=owner,
        runtime=runtime,
        cpu=cpu,
        memory=memory,
        secrets=parse_pairs(secret, "--secret"),
        env_vars=parse_pairs(env, "--env"),
        metadata=parse_pairs(metadata, "--metadata"),
        index_url=index_url,
        extra_index_urls=extra_index_url or None,
    )
    try:
        with guard(as_json):
            existing = None if replace else versions.find_existing(conn, name, external_id, as_json=as_json)
        if existing is not None:
            if new:
                fail(
                    f"A function {existing.external_id or existing.name!r} exists (id {existing.id}); --new refuses "
                    "to deploy a new version of it (use --replace to delete and create it again).",
                    FAILED,
                    as_json=as_json,
                )
            versions.update(conn, existing, source, options, wait=wait, timeout=timeout, as_json=as_json)
            return
        with guard(as_json):
            fn = _create(conn, source, name, external_id, replace, as_json, options)
            if wait:
                fn = _follow_build(conn, fn, timeout, as_json)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if as_json:
        emit_json(fn.dump(camel_case=True))
    elif fn.status == "Ready":
        console.print(f"[green]Ready[/green]: function {fn.external_id or fn.name} (id {fn.id}).", highlight=False)
    elif fn.status == "Failed":
        _print_build_error(fn)
    else:
        console.print(f"Function {fn.external_id or fn.name} (id {fn.id}) is {status_text(fn.status)}.")
    if fn.status == "Failed":
        raise typer.Exit(FAILED)


def _create(
    conn: Connection, source: dict[str, Any], name: str, external_id: str, replace: bool, as_json: bool,
    options: dict[str, Any],
) -> Any:
    client = conn.client
    existing = client.functions.retrieve(external_id=external_id)
    if existing is not None:
        if not replace:
            fail(
                f"A function with external id {external_id!r} exists (id {existing.id}); "
                "use --replace to delete and redeploy it.",
                FAILED,
                as_json=as_json,
            )
        client.functions.delete(id=existing.id)
    from fnhost.commands.versions import zip_folder

    options = {k: v for k, v in options.items() if v is not None}
    # a folder is zipped here, not by the SDK: the same files give the same bytes, so
    # deploying them again later is recognised as unchanged (the server imports the handler
    # in its own environment, so there is nothing to validate here)
    zip_path: Path | None = source.get("zip")
    content = zip_path.read_bytes() if zip_path is not None else zip_folder(Path(source["folder"]))
    file = client.files.upload_bytes(
        content, name=f"{external_id}.zip", external_id=f"fnhost-cli-{external_id}", overwrite=True
    )
    return client.functions.create(
        name=name, external_id=external_id, file_id=file.id, function_path=source["function_path"], **options
    )


def _follow_build(conn: Connection, fn: Any, timeout: float, as_json: bool) -> Any:
    started = time.monotonic()
    deadline = started + timeout
    last = None
    interactive = not as_json and sys.stderr.isatty()
    status_line = err_console.status(f"Building {fn.name}…") if interactive else None
    if status_line is not None:
        status_line.start()
    try:
        while True:
            if fn.status != last:
                last = fn.status
                if not as_json and not interactive:
                    err_console.print(f"{time.monotonic() - started:6.1f}s  {fn.status}", highlight=False)
            if status_line is not None:
                status_line.update(f"{status_text(fn.status)} {fn.name} ({time.monotonic() - started:.0f}s)")
            if fn.status in ("Ready", "Failed"):
                return fn
            if time.monotonic() > deadline:
                fail(f"The build did not end within {timeout:.0f}s (status {fn.status}).", FAILED, as_json=as_json)
            time.sleep(0.3)
            latest = conn.client.functions.retrieve(id=fn.id)
            if latest is None:
                fail(f"Function {fn.id} was deleted during its build.", FAILED, as_json=as_json)
            fn = latest
    finally:
        if status_line is not None:
            status_line.stop()


def _print_build_error(fn: Any) -> None:
    error = fn.error or {}
    message = error.get("message") if isinstance(error, dict) else str(error)
    trace = error.get("trace") if isinstance(error, dict) else None
    err_console.print(f"[red]Failed[/red]: function {fn.external_id or fn.name} (id {fn.id}): {message}", highlight=False)
    if trace:
        err_console.print(trace, markup=False, highlight=False)


def call(
    function: Annotated[str, typer.Argument(help="Function id, external id or name.")],
    data: Annotated[str | None, typer.Option(help="Input data: JSON, or @file.json (@- for stdin).")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the call to end and print response and logs.")] = True,
    timeout: Annotated[float, typer.Option(help="Most seconds to wait.")] = 3600,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Call a function; waits and prints its response and logs (exit 1 if it failed)."""
    payload = parse_data(data)
    conn = Connection.open(profile, as_json=as_json)
    with guard(as_json):
        fn = conn.resolve_function(function, as_json=as_json)
        if not wait:
            # ?waitSeconds=0: the server answers at once instead of waiting for a fast call
            nonce = conn.client.iam.sessions.create(session_type="TOKEN_EXCHANGE").nonce
            with conn.http() as http:
                started = check(
                    http.post(
                        f"/functions/{fn.id}/call",
                        json={"data": payload or {}, "nonce": nonce},
                        params={"waitSeconds": 0},
                    )
                ).json()
            if as_json:
                emit_json(started)
            else:
                console.print(
                    f"Call {started['id']} of function {fn.id} started ({started['status']}).", highlight=False
                )
            return
        c = conn.client.functions.call(id=fn.id, data=payload, wait=False)
        c = _calls.wait(conn, fn.id, c.id, timeout)
        result = _calls.result(conn, fn.id, c)
    _calls.print_result(result, as_json)
    if c.status != "Completed":
        raise typer.Exit(FAILED)


@app.command("ls")
def ls(
    status: Annotated[str | None, typer.Option(help="Only functions with this status.")] = None,
    limit: Annotated[int, typer.Option(help="Most functions to list.")] = 1000,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List functions."""
    if status is not None and status not in FUNCTION_STATUSES:
        raise typer.BadParameter(f"--status must be one of {', '.join(FUNCTION_STATUSES)}.")
    conn = Connection.open(profile, as_json=as_json)
    # the wire, not the SDK: this is the command people run most, and must start fast
    body = {"filter": {"status": status} if status else {}, "limit": limit}
    with guard(as_json):
        fns: list[dict[str, Any]] = conn.api.post("/functions/list", body)["items"]
    if as_json:
        emit_json(fns)
        return
    from rich.table import Table

    table = Table("id", "external id", "name", "status", "runtime", "created", "last called")
    for f in fns:
        table.add_row(
            str(f["id"]), f.get("externalId") or "", f["name"], status_text(f["status"]),
            f.get("runtime") or "", ms_to_text(f.get("createdTime")), ms_to_text(f.get("lastCalled")),
        )  # fmt: skip
    console.print(table)


@app.command("show")
def show(
    function: Annotated[str, typer.Argument(help="Function id, external id or name.")],
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one function, with its build error if it failed."""
    conn = Connection.open(profile, as_json=as_json)
    with guard(as_json):
        fn = conn.resolve_function(function, as_json=as_json)
    if as_json:
        emit_json(fn.dump(camel_case=True))
        return
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in fn.dump(camel_case=True).items():
        if key == "error":
            continue
        table.add_row(f"[bold]{key}[/bold]", status_text(value) if key == "status" else str(value))
    console.print(table)
    if fn.status == "Failed":
        _print_build_error(fn)


@app.command("rm")
def rm(
    functions: Annotated[list[str], typer.Argument(help="Function ids, external ids or names.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete functions (with their calls and schedules)."""
    conn = Connection.open(profile, as_json=as_json)
    with guard(as_json):
        found = [conn.resolve_function(f, as_json=as_json) for f in functions]
        if not yes and not as_json and sys.stdin.isatty():
            names = ", ".join(f"{f.external_id or f.name} ({f.id})" for f in found)
            typer.confirm(f"Delete {names}?", abort=True)
        conn.client.functions.delete(id=[f.id for f in found])
    if as_json:
        emit_json({"deleted": [f.id for f in found]})
    else:
        for f in found:
            console.print(f"Deleted function {f.external_id or f.name} (id {f.id}).", highlight=False)
