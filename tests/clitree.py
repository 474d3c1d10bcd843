"""The ``fnhost`` command tree as Typer builds it: every command path with its options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import typer

from fnhost.cli import app


@dataclass(frozen=True)
class Command:
    path: str  # "fnhost functions ls"
    options: tuple[str, ...]  # long option names, e.g. ("--json", "--profile")
    arguments: tuple[str, ...]  # argument names in upper case, e.g. ("PATH",)


def commands() -> list[Command]:
    """Every runnable command (not the groups), walking sub-apps.

    Typer vendors its own click, so groups and parameters are told apart by what they
    have (``commands``, ``param_type_name``) rather than by click's classes.
    """
    found: list[Command] = []

    def walk(cmd: Any, path: str) -> None:
        subcommands = getattr(cmd, "commands", None)
        if subcommands is not None:
            for name, sub in sorted(subcommands.items()):
                walk(sub, f"{path} {name}")
            return
        options: list[str] = []
        arguments: list[str] = []
        for param in cmd.params:
            if param.param_type_name == "option":
                names = [*param.opts, *param.secondary_opts]
                options.extend(n for n in names if n.startswith("--") and n != "--help")
            else:
                arguments.append((param.name or "").upper())
        found.append(Command(path, tuple(options), tuple(arguments)))

    walk(typer.main.get_command(app), "fnhost")
    return found
