"""``fnhost functions versions``, ``fnhost functions rollback``, and ``fnhost deploy`` of new
code for a function that exists (a new version: docs/versions.md)."""


import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

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
)

# FunctionWrite options of ``fnhost deploy`` a new version may set (SDK names → wire names)
VERSION_OPTIONS = {
    "runtime": "runtime", "cpu": "cpu", "memory": "memory", "env_vars": "envVars", "index_url": "indexUrl",
    "extra_index_urls": "extraIndexUrls",
}


def zip_folder(folder: Path) -> bytes:
    """The folder as a zip whose bytes depend only on the files' paths and contents (sorted,
    one fixed timestamp), so deploying unchanged code uploads identical bytes, which the
    server recognises and makes no version of."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            for name in sorted(files):
                if name.endswith(".pyc"):
                    continue
                path = Path(root) / name
                info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (path.stat().st_mode & 0o777 | 0o100000) << 16
                zf.writestr(info, path.read_bytes())
    return buf.getvalue()


def update(
    conn: Connection, existing: Any, source: dict[str, Any], options: dict[str, Any], *, wait: bool, timeout: float,
    as_json: bool,
) -> None:
    """Deploy ``source`` as a new version of ``existing``, and follow its build; exits."""
    fixed = [o for o in ("secrets", "metadata", "description", "owner") if options.get(o) is not None]
    if fixed:
        flags = ", ".join(f"--{o.rstrip('s') if o == 'secrets' else o}" for o in fixed)
        fail(
            f"Function {existing.external_id or existing.name} (id {existing.id}) exists; a new version changes its "
            f"code and settings, not {flags}. Use --replace to delete and create it again.",
            USAGE,
            as_json=as_json,
        )
    content = source["zip"].read_bytes() if "zip" in source else zip_folder(Path(source["folder"]))
    name = existing.external_id or existing.name
    with guard(as_json):
        file = conn.client.files.upload_bytes(
            content, name=f"{name}.zip", external_id=f"fnhost-cli-{name}", overwrite=True
        )
        item: dict[str, Any] = {"fileId": file.id, "functionPath": source["function_path"]}
        item.update({wire: options[k] for k, wire in VERSION_OPTIONS.items() if options.get(k) is not None})
        with conn.http() as http:
            body = check(http.post(f"/functions/{existing.id}/versions", json={"items": [item]})).json()
            version = body["items"][0]
            if body.get("unchanged"):
                if as_json:
                    emit_json({"unchanged": True, "version": version})
                else:
                    console.print(
                        f"Unchanged: function {name} (id {existing.id}) already has this code and these settings "
                        f"as version {version['version']}; no version was made.",
                        highlight=False,
                    )
                return
            if wait:
                version = _follow(http, existing.id, version, timeout, as_json)
    if as_json:
        emit_json({"unchanged": False, "version": version})
    elif version["status"] == "Ready":
        current = " and is current" if version.get("current") else ""
        console.print(
            f"[green]Ready[/green]: function {name} (id {existing.id}) version {version['version']}{current}.",
            highlight=False,
        )
    elif version["status"] == "Failed":
        error = version.get("error") or {}
        err_console.print(
            f"[red]Failed[/red]: version {version['version']} of function {name} (id {existing.id}): "
            f"{error.get('message')}; the current version still serves.",
            highlight=False,
        )
        if error.get("trace"):
            err_console.print(error["trace"], markup=False, highlight=False)
    else:
        console.print(f"Version {version['version']} of function {name} is {version['status']}.", highlight=False)
    if version["status"] == "Failed":
        raise typer.Exit(FAILED)


def _follow(http: Any, function_id: int, version: dict[str, Any], timeout: float, as_json: bool) -> dict[str, Any]:
    started = time.monotonic()
    last = None
    while True:
        if version["status"] != last and not as_json:
            last = version["status"]
            err_console.print(f"{time.monotonic() - started:6.1f}s  version {version['version']} {last}", highlight=False)
        if version["status"] in ("Ready", "Failed"):
            # Ready: it becomes current in the same transaction, unless a newer one already is
            return version
        if time.monotonic() - started > timeout:
            fail(f"The build did not end within {timeout:.0f}s (status {version['status']}).", FAILED, as_json=as_json)
        time.sleep(0.3)
        version = check(http.get(f"/functions/{function_id}/versions/{version['version']}")).json()


def versions(
    function: Annotated[str, typer.Argument(help="Function id, external id or name.")],
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List a function's versions, newest first: which is current, which can be rolled back to."""
    conn = Connection.open(profile, as_json=as_json)
    with guard(as_json):
        fn = conn.resolve_function(function, as_json=as_json)
        rows: list[dict[str, Any]] = conn.api.get(f"/functions/{fn.id}/versions")["items"]
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("version", "status", "current", "rollback", "file id", "created", "ready", "error")
    for v in rows:
        table.add_row(
            str(v["version"]), v["status"], "yes" if v["current"] else "",
            "yes" if v["rollbackable"] else ("retired" if v.get("retiredTime") else ""),
            str(v["fileId"]), ms_to_text(v.get("createdTime")), ms_to_text(v.get("readyTime")),
            (v.get("error") or {}).get("message", "")[:60],
        )  # fmt: skip
    console.print(table)


def rollback(
    function: Annotated[str, typer.Argument(help="Function id, external id or name.")],
    to: Annotated[
        int | None, typer.Option("--to", help="Version to make current (default: the kept version before the current).")
    ] = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make an earlier Ready version current again, at once (calls already running finish)."""
    conn = Connection.open(profile, as_json=as_json)
    with guard(as_json):
        fn = conn.resolve_function(function, as_json=as_json)
        body = {} if to is None else {"version": to}
        version = conn.api.post(f"/functions/{fn.id}/versions/rollback", body)["items"][0]
    if as_json:
        emit_json(version)
    else:
        console.print(
            f"Function {fn.external_id or fn.name} (id {fn.id}) is at version {version['version']} again.",
            highlight=False,
        )


def find_existing(conn: Connection, name: str, external_id: str, *, as_json: bool) -> Any:
    """The function ``fnhost deploy`` would update: by external id, else by a unique name."""
    fns = conn.client.functions
    existing = fns.retrieve(external_id=external_id)
    if existing is None:
        named = fns.list(name=name, limit=2)
        if len(named) > 1:
            fail(f"Several functions are named {name!r}; pass --external-id.", USAGE, as_json=as_json)
        existing = named[0] if named else None
    return existing
