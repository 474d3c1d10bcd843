"""``fnhost schedules ls/create/pause/resume/rm``."""


from typing import Annotated, Any

import typer

from fnhost.commands._common import (
    Connection,
    JsonOpt,
    ProfileOpt,
    check,
    console,
    emit_json,
    guard,
    parse_data,
)

app = typer.Typer(help="Run functions on cron schedules.", no_args_is_help=True, rich_markup_mode=None)

ScheduleArg = Annotated[int, typer.Argument(help="The schedule's id.")]


@app.command("ls")
def ls(
    function: Annotated[
        str | None, typer.Option("--function", "-f", help="Only schedules of this function.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Most schedules to list.")] = 1000,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List schedules."""
    conn = Connection.open(profile, as_json=as_json)
    with guard(as_json):
        fid = conn.resolve_function(function, as_json=as_json).id if function else None
        rows = _list_raw(conn, fid, limit)
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("id", "name", "function id", "cron", "when", "state")
    for s in rows:
        table.add_row(
            str(s["id"]), s["name"], str(s.get("functionId", "")), s["cronExpression"], s.get("when", ""),
            "[yellow]paused[/yellow]" if s.get("paused") else "active",
        )
    console.print(table)


def _list_raw(conn: Connection, function_id: int | None, limit: int) -> list[dict[str, Any]]:
    """The list as the server sends it, so fnhost's extra fields (``paused``) are kept."""
    body: dict[str, Any] = {"filter": {"functionId": function_id} if function_id else {}, "limit": limit}
    with conn.http() as http:
        return list(check(http.post("/functions/schedules/list", json=body)).json()["items"])


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The schedule's name.")],
    function: Annotated[str, typer.Option("--function", "-f", help="Function id, external id or name.")],
    cron: Annotated[str, typer.Option(help='Cron expression, e.g. "*/5 * * * *" (UTC).')],
    data: Annotated[str | None, typer.Option(help="Data for each call: JSON, or @file.json.")] = None,
    description: Annotated[str | None, typer.Option(help="Description.")] = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a schedule; its calls run with your permissions (a session is created for it)."""
    payload = parse_data(data) if data is not None else None
    conn = Connection.open(profile, as_json=as_json)
    with guard(as_json):
        fn = conn.resolve_function(function, as_json=as_json)
        sched = conn.client.functions.schedules.create(
            name=name, cron_expression=cron, function_id=fn.id, data=payload, description=description
        )
    if as_json:
        emit_json(sched.dump(camel_case=True))
    else:
        console.print(
            f"Created schedule {sched.name} (id {sched.id}) for function {fn.id}: {sched.when}.", highlight=False
        )


def _set_paused(schedule_id: int, paused: bool, profile: str | None, as_json: bool) -> None:
    conn = Connection.open(profile, as_json=as_json)
    action = "pause" if paused else "resume"
    with guard(as_json), conn.http() as http:
        r = check(http.post(f"/functions/schedules/{schedule_id}/{action}"))
        item = r.json()
        item = item["items"][0] if isinstance(item, dict) and "items" in item else item
    if as_json:
        emit_json(item)
    else:
        console.print(f"Schedule {schedule_id} {'paused' if paused else 'resumed'}.", highlight=False)


@app.command("pause")
def pause(schedule_id: ScheduleArg, profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """Stop a schedule from firing until it is resumed."""
    _set_paused(schedule_id, True, profile, as_json)


@app.command("resume")
def resume(schedule_id: ScheduleArg, profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """Let a paused schedule fire again (from its next due time; missed times are skipped)."""
    _set_paused(schedule_id, False, profile, as_json)


@app.command("rm")
def rm(
    schedule_ids: Annotated[list[int], typer.Argument(help="Schedule ids.")],
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete schedules (their sessions are revoked); none is deleted if one is missing."""
    conn = Connection.open(profile, as_json=as_json)
    # one request for all (the SDK deletes one id per call, which could stop half-way)
    body = {"items": [{"id": i} for i in schedule_ids]}
    with guard(as_json), conn.http() as http:
        check(http.post("/functions/schedules/delete", json=body))
    if as_json:
        emit_json({"deleted": schedule_ids})
    else:
        console.print(f"Deleted schedule(s) {', '.join(map(str, schedule_ids))}.", highlight=False)
