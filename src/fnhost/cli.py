"""The ``fnhost`` command: ``serve`` and ``admin …`` (operator commands)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from fnhost import serverlog
from fnhost.commands import register_user_commands
from fnhost.settings import Settings

app = typer.Typer(help="fnhost: a self-hosted Functions service for Python.", no_args_is_help=True)
admin_app = typer.Typer(help="Operator commands: projects, clients, groups.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
register_user_commands(app)


def _settings(**overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**values)  # type: ignore[arg-type]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (FNHOST_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (FNHOST_PORT).")] = None,
    log_level: Annotated[str, typer.Option(help="Server log level.")] = "info",
) -> None:
    """Run the server: API, builder, executor, scheduler and web pages in one process."""
    import uvicorn

    from fnhost.api.app import create_app
    from fnhost.services.container import System

    settings = _settings(host=host, port=port)
    serverlog.configure(log_level, settings.log_format)
    system = System(settings)
    system.migrate()
    creds = system.ensure_first_admin()
    system.write_server_info()
    if creds is not None:
        typer.echo(
            "Created an admin client (saved to "
            f"{system.home / 'admin-client.json'}, readable only by you):\n"
            f"  client_id={creds['client_id']}\n  client_secret={creds['client_secret']}\n"
            f"Use it with cognite-sdk: base_url={creds['base_url']}, "
            f"token_url={creds['token_url']}, project={creds['project']}",
            err=True,
        )
    uvicorn.run(
        create_app(settings, system),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        log_config=None,  # serverlog.configure set up every logger (text or JSON)
        access_log=False,
        timeout_graceful_shutdown=10,
    )


@admin_app.command("create-client")
def create_client(
    name: Annotated[str, typer.Argument(help="A name for the client.")],
    project: Annotated[str | None, typer.Option(help="Project the client is for.")] = None,
    admin: Annotated[bool, typer.Option(help="Grant every capability in every project.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Create a service client; prints its id and secret (shown only once)."""
    from fnhost.services.container import System, read_server_info

    settings = _settings()
    info = read_server_info(settings.home)
    if settings.public_url is None and info is not None:
        settings = _settings(public_url=info["base_url"])
    system = System(settings)
    system.migrate()
    creds = system.create_client(name, admin=admin, project=project)
    system.close()
    if as_json:
        typer.echo(json.dumps(creds))
    else:
        for key, value in creds.items():
            typer.echo(f"{key}: {value}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
