"""Runtimes are the Python interpreters present on the host (uv cannot download them here)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

KNOWN = ("py310", "py311", "py312", "py313", "py314")


@dataclass(frozen=True)
class Runtime:
    name: str  # "py311"
    executable: str  # absolute path of the interpreter
    version: str  # "3.11.7"

    @property
    def display_version(self) -> str:
        return f"Python {self.version}"


def discover() -> dict[str, Runtime]:
    """Interpreters that actually run (a pyenv shim without its version installed does not)."""
    found: dict[str, Runtime] = {}
    for name in KNOWN:
        minor = name[3:]
        candidate = shutil.which(f"python3.{minor}")
        if candidate is None:
            continue
        try:
            out = subprocess.run(
                [candidate, "-I", "-S", "-c", "import sys, platform; print(sys.executable); print(platform.python_version())"],
                capture_output=True,
                text=True,
                timeout=15,
                check=True,
            ).stdout.split("\n")
        except (subprocess.SubprocessError, OSError):
            continue
        executable, version = out[0].strip(), out[1].strip()
        if executable and version.startswith(f"3.{minor}"):
            found[name] = Runtime(name, executable, version)
    return found
