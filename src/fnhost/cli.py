"""The ``fnhost`` command: ``serve`` and ``admin …`` (operator commands).

Start-up is part of using a command: ``fnhost --help`` and ``fnhost functions ls`` answer
within 0.4 s (``bench/cli.py``). So this module and ``fnhost.commands`` import only Typer
at module level; the server, the settings (pydantic), the database and cognite-sdk are
imported inside the commands that use them (``tests/test_cli.py`` checks which modules a
bare ``fnhost --help`` imports).
"""


import json
import sys
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from fnhost.commands import register_user_commands

if TYPE_CHECKING:
    from fnhost.settings import Settings
    from fnhost.system import System

app = typer.Typer(help="fnhost: a self-hosted Functions service for Python.", no_args_is_help=True, rich_markup_mode=None)
admin_app = typer.Typer(help="Operator commands: projects, clients, groups.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(admin_app, name="admin")
register_user_commands(app)


def _settings(**overrides: object) -> "Settings":
    from fnhost.settings import Settings

    values = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**values)  # type: ignore[arg-type]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (FNHOST_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (FNHOST_PORT).")] = None,
    log_level: Annotated[str, typer.Option(help="Server log level.")] = "info",
) -> None:
    """Run the server: API, builder, executor, scheduler and web pages in one process."""
    import logging

    from fnhost import serverlog
    from fnhost.api.app import create_app
    from fnhost.system import System

    settings = _settings(host=host, port=port)
    serverlog.configure(log_level, settings.log_format)
    system = System(settings)
    system.migrate()
    creds = system.ensure_first_admin()
    system.write_server_info()
    if creds is not None and settings.log_format == "json":
        # stderr goes to a log collector: say where the credentials are, never the secret
        logging.getLogger("fnhost").warning(
            "created an admin client %s; its credentials are in %s (readable only by this user)",
            creds.client_id,
            system.home / "admin-client.json",
        )
    elif creds is not None:
        typer.echo(
            "Created an admin client (saved to "
            f"{system.home / 'admin-client.json'}, readable only by you):\n"
            f"  client_id={creds.client_id}\n  client_secret={creds.client_secret}\n"
            f"Use it with cognite-sdk: base_url={creds.base_url}, "
            f"token_url={creds.token_url}, project={creds.project}",
            err=True,
        )
    from fnhost.api import server
    from fnhost.ui import routes as web

    try:
        app = create_app(settings, system, pages=[web.router])
        server.run(app, settings, api_socket=system.api_socket_path, log_level=log_level)
    finally:
        system.close()


def _operator_system() -> "System":
    """A System over the server's data directory, for operator commands (no HTTP)."""
    from fnhost.system import System, read_server_info

    settings = _settings()
    info = read_server_info(settings.home)
    if settings.public_url is None and info is not None:
        settings = _settings(public_url=info["base_url"])
    system = System(settings)
    system.migrate()
    return system


def _fail(message: str) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(1)


def _print(rows: list[dict[str, Any]], as_json: bool, columns: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        typer.echo("  ".join(f"{c}={json.dumps(row.get(c))}" for c in columns))


CapabilityOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--capability",
        "-c",
        help="Capability as ACL:ACTION[,ACTION], e.g. functionsAcl:READ,RUN. Repeatable.",
    ),
]


def _new_client(
    name: str, project: str | None, admin: bool | None, capability: list[str] | None, as_json: bool
) -> None:
    from fnhost.errors import FnhostError
    from fnhost.services.groups import parse_capability

    system = _operator_system()
    try:
        capabilities = [parse_capability(c) for c in capability or []]
        # a client given capabilities holds exactly those, so it is not an admin
        is_admin = admin if admin is not None else not capabilities
        # it joins the group of exactly those capabilities (made when missing), as in CDF
        creds = system.create_client(
            name, admin=is_admin, project=project, capabilities=capabilities
        )
    except FnhostError as exc:
        _fail(exc.message)
    finally:
        system.close()
    if as_json:
        typer.echo(json.dumps(creds))
    else:
        for key, value in creds.items():
            typer.echo(f"{key}: {value}")


@admin_app.command("create-client")
def create_client(
    name: Annotated[str, typer.Argument(help="A name for the client.")],
    project: Annotated[str | None, typer.Option(help="Project the client is for.")] = None,
    admin: Annotated[
        bool | None,
        typer.Option(
            "--admin/--no-admin",
            help="Grant every capability in every project (the default without --capability).",
        ),
    ] = None,
    capability: CapabilityOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Create a service client; prints its id and secret (shown only once)."""
    _new_client(name, project, admin, capability, as_json)


@admin_app.command("rotate-secrets")
def rotate_secrets(as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False) -> None:
    """Re-encrypt every secret at rest with the first key of FNHOST_SECRET_KEY."""
    from fnhost.services import secrets_at_rest

    system = _operator_system()
    try:
        report = secrets_at_rest.rotate(system.db, system.secret_box)
    finally:
        system.close()
    if as_json:
        typer.echo(json.dumps({"functions": report.total, "failed": report.failed}))
    if report.failed:
        _fail(f"{len(report.failed)} of {report.total} functions' secrets do not decrypt "
              f"with the configured keys (function ids {report.failed}); nothing was lost.")
    if not as_json:
        typer.echo(f"re-encrypted the secrets of {report.total} function(s) with the first key")


@admin_app.command("check-secrets")
def check_secrets(as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False) -> None:
    """Check that every secret at rest decrypts with the configured keys."""
    from fnhost.services import secrets_at_rest

    system = _operator_system()
    try:
        report = secrets_at_rest.check(system.db, system.secret_box)
    finally:
        system.close()
    if as_json:
        typer.echo(json.dumps({"functions": report.total, "failed": report.failed}))
    if report.failed:
        _fail(f"{len(report.failed)} of {report.total} functions' secrets do not decrypt "
              f"(function ids {report.failed}).")
    if not as_json:
        typer.echo(f"all secrets of {report.total} function(s) decrypt")


@admin_app.command("migrate")
def migrate(as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False) -> None:
    """Bring the database schema up to this version's (also done by `serve` at start)."""
    from fnhost.system import System

    system = System(_settings())
    try:
        before = system.db.revision()
        system.migrate()
        after = system.db.revision()
    finally:
        system.close()
    if as_json:
        typer.echo(json.dumps({"from": before, "to": after}))
    elif before == after:
        typer.echo(f"database schema is current (revision {after})")
    else:
        typer.echo(f"migrated the database schema from revision {before} to {after}")


# -- fnhost admin projects ------------------------------------------------------------------
projects_app = typer.Typer(help="Projects: the tenancy boundary.", no_args_is_help=True, rich_markup_mode=None)
admin_app.add_typer(projects_app, name="projects")


@projects_app.command("create")
def projects_create(
    name: Annotated[str, typer.Argument(help="Project name (URL name).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Create a project (no-op if it exists)."""
    import re

    from fnhost.store import projects as project_store

    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", name):
        _fail("A project name is 1-64 lowercase letters, digits and dashes, starting with a letter or digit.")
    system = _operator_system()
    try:
        with system.db.write() as s:
            project_store.ensure(name, session=s)
    finally:
        system.close()
    typer.echo(json.dumps({"name": name}) if as_json else f"project {name}")


@projects_app.command("list")
def projects_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False) -> None:
    """List projects."""
    from fnhost.store import projects as project_store

    system = _operator_system()
    try:
        with system.db.read() as s:
            rows = [{"name": p.name, "createdTime": p.created_time} for p in project_store.list_all(session=s)]
    finally:
        system.close()
    _print(rows, as_json, ["name", "createdTime"])


# -- fnhost admin clients -------------------------------------------------------------------
clients_app = typer.Typer(help="Service clients of the built-in identity provider.", no_args_is_help=True, rich_markup_mode=None)
admin_app.add_typer(clients_app, name="clients")


@clients_app.command("create")
def clients_create(
    name: Annotated[str, typer.Argument(help="A name for the client.")],
    project: Annotated[str | None, typer.Option(help="Project of --capability grants.")] = None,
    admin: Annotated[
        bool | None,
        typer.Option("--admin/--no-admin", help="Every capability in every project."),
    ] = None,
    capability: CapabilityOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Create a service client (same as `fnhost admin create-client`)."""
    _new_client(name, project, admin, capability, as_json)


@clients_app.command("list")
def clients_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False) -> None:
    """List service clients (never their secrets, which are stored only as hashes)."""
    from fnhost.store import clients as client_store

    system = _operator_system()
    try:
        with system.db.read() as s:
            rows = [
                {"clientId": c.client_id, "name": c.name, "admin": c.is_admin, "createdTime": c.created_time}
                for c in client_store.list_all(session=s)
            ]
    finally:
        system.close()
    _print(rows, as_json, ["clientId", "name", "admin"])


@clients_app.command("delete")
def clients_delete(
    client_id: Annotated[str, typer.Argument(help="The client id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Delete a client: its tokens and sessions stop working at once."""
    from fnhost.store import clients as client_store
    from fnhost.store import groups as group_store

    system = _operator_system()
    try:
        with system.db.write() as s:
            found = client_store.delete(client_id, session=s)
            for group in group_store.list_all(session=s):  # nor is it listed as a member
                if isinstance(group.members, list) and client_id in group.members:
                    group.members = [m for m in group.members if m != client_id]
    finally:
        system.close()
    if not found:
        _fail(f"No client {client_id!r}.")
    typer.echo(json.dumps({"deleted": client_id}) if as_json else f"deleted client {client_id}")


# -- fnhost admin groups --------------------------------------------------------------------
groups_app = typer.Typer(help="Groups: capabilities granted to members in a project.", no_args_is_help=True, rich_markup_mode=None)
admin_app.add_typer(groups_app, name="groups")


@groups_app.command("create")
def groups_create(
    name: Annotated[str, typer.Argument(help="Group name.")],
    capability: CapabilityOpt = None,
    project: Annotated[str | None, typer.Option(help="Project (default: FNHOST_DEFAULT_PROJECT).")] = None,
    member: Annotated[
        list[str] | None, typer.Option("--member", "-m", help="Client id (or external subject). Repeatable.")
    ] = None,
    source_id: Annotated[
        str | None, typer.Option(help="IdP group id: tokens whose groups claim holds it are members.")
    ] = None,
    all_users: Annotated[bool, typer.Option("--all-users", help="Every authenticated principal.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Create a group."""
    from fnhost.api.groups import group_out
    from fnhost.errors import FnhostError
    from fnhost.services.groups import ALL_USER_ACCOUNTS, GroupSpec, parse_capability

    system = _operator_system()
    project = project or system.settings.default_project
    try:
        spec = GroupSpec(
            name=name,
            capabilities=[parse_capability(c) for c in capability or []],
            source_id=source_id,
            members=ALL_USER_ACCOUNTS if all_users else (member or None),
        )
        (row,) = system.groups.add(project, [spec])
    except FnhostError as exc:
        _fail(exc.message)
    finally:
        system.close()
    out = {**group_out(row), "project": project}
    _print([out], as_json, ["id", "name", "project", "sourceId", "members", "capabilities"])


@groups_app.command("list")
def groups_list(
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List groups."""
    from fnhost.api.groups import group_out

    system = _operator_system()
    try:
        rows = [{**group_out(g), "project": g.project} for g in system.groups.list_all(project)]
    finally:
        system.close()
    _print(rows, as_json, ["id", "name", "project", "sourceId", "members", "capabilities"])


@groups_app.command("delete")
def groups_delete(
    group_id: Annotated[int, typer.Argument(help="Group id.")],
    project: Annotated[str | None, typer.Option(help="Project (default: FNHOST_DEFAULT_PROJECT).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Delete a group."""
    from fnhost.errors import FnhostError

    system = _operator_system()
    try:
        system.groups.remove(project or system.settings.default_project, [group_id])
    except FnhostError as exc:
        _fail(exc.message)
    finally:
        system.close()
    typer.echo(json.dumps({"deleted": group_id}) if as_json else f"deleted group {group_id}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
