"""Saved connections ("profiles"): base URL, project and credentials, in a file only you can read.

The file is ``~/.config/fnhost/profiles.json`` (``$XDG_CONFIG_HOME`` is honoured), or the
path in ``FNHOST_CLI_CONFIG``. It is written with mode 0600 and refused when others can
read it, because it holds client secrets.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PROFILE = "default"


class ProfileError(Exception):
    pass


@dataclass
class Profile:
    base_url: str
    project: str
    client_id: str | None = None
    client_secret: str | None = None
    token_url: str | None = None
    scopes: list[str] = field(default_factory=list)
    token: str | None = None  # a static bearer token instead of client credentials

    def public(self) -> dict[str, Any]:
        """What may be printed: everything but the secrets."""
        out = asdict(self)
        for key in ("client_secret", "token"):
            if out[key]:
                out[key] = "***"
        return out


def config_path() -> Path:
    explicit = os.environ.get("FNHOST_CLI_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "fnhost" / "profiles.json"


def _read() -> dict[str, Any]:
    path = config_path()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return {"current": None, "profiles": {}}
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ProfileError(
            f"{path} can be read by other users; it holds secrets. Run: chmod 600 {path}"
        )
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ProfileError(f"{path} is not valid JSON: {exc}") from None
    data.setdefault("profiles", {})
    return data


def _write(data: dict[str, Any]) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def save(name: str, profile: Profile, *, make_current: bool = True) -> Path:
    data = _read()
    data["profiles"][name] = asdict(profile)
    if make_current or not data.get("current"):
        data["current"] = name
    return _write(data)


def load(name: str | None = None) -> tuple[str, Profile]:
    data = _read()
    name = name or os.environ.get("FNHOST_PROFILE") or data.get("current") or DEFAULT_PROFILE
    raw = data["profiles"].get(name)
    if raw is None:
        known = ", ".join(sorted(data["profiles"])) or "none"
        raise ProfileError(
            f"No profile named {name!r} in {config_path()} (known: {known}). Run `fnhost login` first."
        )
    return name, Profile(**raw)
