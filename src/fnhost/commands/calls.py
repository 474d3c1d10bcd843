"""``fnhost calls ls`` and ``fnhost logs CALL_ID [--follow]``."""


import json
from typing import Annotated, Any

import typer

from fnhost.commands._calls import print_log_line
from fnhost.commands._common import (
    FAILED,
    Connection,
    JsonOpt,
    ProfileOpt,
    check,
    console,
    emit_json,
    err_console,
    guard,
    ms_to_text,
    sse_events,
)
from fnhost.commands.functions import status_text

app = typer.Typer(help="List calls of functions.", no_args_is_help=True, rich_markup_mode=None)

FunctionOpt = Annotated[
    str | None,
    typer.Option("--function", "-f", help="Function id, external id or name (found by search when omitted)."),
]


@app.command("ls")
def ls(
    function: Annotated[
        str | None, typer.Argument(help="Function id, external id or name (default: every function).")
    ] = None,
    status: Annotated[str | None, typer.Option(help="Running, Completed, Failed or Timeout.")] = None,
    schedule_id: Annotated[int | None, typer.Option(help="Only calls fired by this schedule.")] = None,
    limit: Annotated[int, typer.Option(help="Most calls to list per function.")] = 25,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List calls, newest first, with what each used (CPU, peak memory)."""
    conn = Connection.open(profile, as_json=as_json)
    with guard(as_json):
        if function is not None:
            ids = [conn.resolve_function(function, as_json=as_json).id]
        else:
            ids = [f["id"] for f in conn.api.get("/functions", {"limit": 10_000})["items"]]
        found: list[dict[str, Any]] = []
        filt = {k: v for k, v in (("status", status), ("scheduleId", schedule_id)) if v is not None}
        for fid in ids:
            # the API's own items: the SDK's objects drop the usage fnhost adds to each call
            found.extend(conn.api.post(f"/functions/{fid}/calls/list", {"filter": filt, "limit": limit})["items"])
    found.sort(key=lambda c: (c.get("startTime") or 0, c["id"]), reverse=True)
    if as_json:
        emit_json(found)
        return
    from rich.table import Table

    table = Table("call id", "function id", "status", "started", "took", "cpu", "peak MB", "schedule id")
    for c in found:
        start, end, usage = c.get("startTime"), c.get("endTime"), c.get("usage") or {}
        took = f"{(end - start) / 1000:.2f}s" if end and start else "-"
        cpu = f"{usage['cpuTimeMs'] / 1000:.2f}s" if "cpuTimeMs" in usage else "-"
        peak = f"{usage['peakMemoryBytes'] / 2**20:.0f}" if "peakMemoryBytes" in usage else "-"
        table.add_row(
            str(c["id"]), str(c["functionId"]), status_text(c["status"]), ms_to_text(start), took, cpu, peak,
            str(c.get("scheduleId") or ""),
        )
    console.print(table)


def logs(
    call_id: Annotated[int, typer.Argument(help="The call's id.")],
    function: FunctionOpt = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-F", help="Show lines as the running call prints them, until it ends.")
    ] = False,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a call's log lines; with --follow, stream them live while it runs."""
    conn = Connection.open(profile, as_json=as_json)
    with guard(as_json):
        c = conn.find_call(call_id, function, as_json=as_json)
        if follow:
            status = _follow(conn, c.function_id, call_id, as_json)
            if status not in (None, "Completed"):
                raise typer.Exit(FAILED)
            return
        entries = conn.client.functions.calls.get_logs(call_id=call_id, function_id=c.function_id)
    if as_json:
        emit_json([e.dump(camel_case=True) for e in entries])
        return
    for entry in entries:
        print_log_line(entry.dump(camel_case=True))


def _follow(conn: Connection, function_id: int, call_id: int, as_json: bool) -> str | None:
    """Stream ``…/logs/stream`` (server-sent events): one JSON ``data`` per line, then ``end``."""
    path = f"/functions/{function_id}/calls/{call_id}/logs/stream"
    status: str | None = None
    with conn.http(timeout=None) as http, http.stream("GET", path, headers={"accept": "text/event-stream"}) as r:
        check(r)
        for event, data in sse_events(r):
            value = json.loads(data)
            if event == "end":
                status = value.get("status")
                if as_json:
                    print(json.dumps({"event": "end", **value}), flush=True)
                else:
                    err_console.print(f"Call {call_id} ended: {status_text(str(status))}", highlight=False)
                break
            if as_json:
                print(json.dumps(value), flush=True)
            else:
                print_log_line(value)
                console.file.flush()
    return status
