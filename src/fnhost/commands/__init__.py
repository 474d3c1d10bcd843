"""The user-facing ``fnhost`` commands: they talk to a server over HTTP, as any user would.

``cli.py`` owns ``serve`` and ``admin …``; it calls ``register_user_commands`` to add these.
Each command prints Rich text for people, or JSON with ``--json`` for scripts, and exits
non-zero when what it was asked to do did not happen (a failed build, a failed call).

The modules that define commands (and ``cli.py``) do without ``from __future__ import
annotations`` on purpose: Typer reads every command's parameter annotations to build the
command tree, on every start, and string annotations cost it a compile each (about half
of ``fnhost --help``'s time after the imports).
"""

from __future__ import annotations

import typer


def register_user_commands(app: typer.Typer) -> None:
    from fnhost.commands import calls, functions, login, run, schedules, versions

    app.command("login")(login.login)
    app.command("deploy")(functions.deploy)
    app.command("call")(functions.call)
    app.command("logs")(calls.logs)
    app.command("run")(run.run)
    functions.app.command("versions")(versions.versions)
    functions.app.command("rollback")(versions.rollback)
    app.add_typer(functions.app, name="functions")
    app.add_typer(calls.app, name="calls")
    app.add_typer(schedules.app, name="schedules")
