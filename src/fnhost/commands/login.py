"""``fnhost login``: save a profile (base URL, project, credentials) after checking it works."""


import json
from pathlib import Path
from typing import Annotated

import typer

from fnhost.commands import _profiles
from fnhost.commands._common import USAGE, JsonOpt, console, emit_json, fail, guard, make_client
from fnhost.commands._profiles import Profile


def login(
    base_url: Annotated[str | None, typer.Option(help="Server URL, e.g. http://127.0.0.1:8000.")] = None,
    project: Annotated[str | None, typer.Option(help="Project to work in.")] = None,
    client_id: Annotated[str | None, typer.Option(help="OAuth client id (client credentials).")] = None,
    client_secret: Annotated[
        str | None, typer.Option(help="OAuth client secret; asked for (hidden) when omitted.")
    ] = None,
    token_url: Annotated[
        str | None, typer.Option(help="Token endpoint; defaults to {base-url}/oauth2/token.")
    ] = None,
    scope: Annotated[
        list[str] | None, typer.Option(help="OAuth scope (repeatable); defaults to {base-url}/.default.")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="A bearer token to use instead of client credentials.")
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file",
            help="Credentials JSON as printed by `fnhost admin create-client --json` "
            "(or the server's admin-client.json).",
        ),
    ] = None,
    profile: Annotated[str, typer.Option("--profile", "-p", help="Name to save the profile under.")] = (
        _profiles.DEFAULT_PROFILE
    ),
    verify: Annotated[bool, typer.Option(help="Check the credentials against the server first.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Save a profile: base URL, project and credentials, in a file only you can read."""
    values: dict[str, object] = {}
    if from_file is not None:
        try:
            values = json.loads(from_file.read_text())
        except (OSError, ValueError) as exc:
            fail(f"Cannot read {from_file}: {exc}", USAGE, as_json=as_json)
    base_url = base_url or values.get("base_url")  # type: ignore[assignment]
    if not base_url:
        fail("--base-url is required (or --from-file).", USAGE, as_json=as_json)
    base_url = base_url.rstrip("/")
    project = project or values.get("project") or "default"  # type: ignore[assignment]
    client_id = client_id or values.get("client_id")  # type: ignore[assignment]
    client_secret = client_secret or values.get("client_secret")  # type: ignore[assignment]
    if token is None:
        if not client_id:
            fail("Give --client-id (with --client-secret) or --token.", USAGE, as_json=as_json)
        if not client_secret:
            client_secret = typer.prompt("Client secret", hide_input=True)
    prof = Profile(
        base_url=base_url,
        project=str(project),
        client_id=None if token else client_id,
        client_secret=None if token else client_secret,
        token_url=token_url or values.get("token_url") or f"{base_url}/oauth2/token",  # type: ignore[arg-type]
        scopes=list(scope or values.get("scopes") or [f"{base_url}/.default"]),  # type: ignore[call-overload]
        token=token,
    )
    if verify:
        with guard(as_json):
            make_client(prof).functions.status()
    path = _profiles.save(profile, prof)
    if as_json:
        emit_json({"profile": profile, "path": str(path), **prof.public()})
    else:
        console.print(
            f"Saved profile [bold]{profile}[/bold] for project [bold]{prof.project}[/bold] at "
            f"{prof.base_url} in {path} (mode 0600).",
            highlight=False,
        )
