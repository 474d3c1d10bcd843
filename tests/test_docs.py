"""Docs that cannot rot: settings, CLI commands and metrics must be documented, and the
examples page must run against a live server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from fnhost.metrics import Metrics
from fnhost.settings import Settings, markdown_reference
from tests.clitree import commands
from tests.live import LiveServer, sdk_client

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_configuration_reference_is_current() -> None:
    text = (DOCS / "configuration.md").read_text()
    assert text == markdown_reference(), "docs/configuration.md is stale: run scripts/gen-config-docs"


def test_every_setting_is_described() -> None:
    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]
    assert undocumented == []


def test_every_setting_is_in_the_configuration_page() -> None:
    """Independent of the generator: each variable has its own row."""
    text = (DOCS / "configuration.md").read_text()
    rows = set(re.findall(r"^\| `(FNHOST_[A-Z0-9_]+)` \|", text, re.M))
    expected = {f"FNHOST_{name.upper()}" for name in Settings.model_fields}
    assert expected - rows == set(), "settings missing from docs/configuration.md"
    assert rows - expected == set(), "docs/configuration.md lists settings that do not exist"


# -- docs/cli.md --------------------------------------------------------------------------------
def cli_sections() -> dict[str, str]:
    """``{"fnhost deploy": "<text up to the next heading>"}`` for each command heading.

    A command heading is a Markdown heading whose code span is the command path followed
    only by its argument names (``### `fnhost deploy PATH` ``).
    """
    sections: dict[str, str] = {}
    current: str | None = None
    for line in (DOCS / "cli.md").read_text().splitlines():
        if line.startswith("#"):
            current = None
            m = re.match(r"^#+ `(fnhost(?: [a-z][a-z-]*)*)((?: \[?[A-Z_]+\]?(?:\.\.\.)?)*)`\s*$", line)
            if m:
                current = m.group(1)
                sections[current] = ""
            continue
        if current is not None:
            sections[current] += line + "\n"
    return sections


def test_every_cli_command_and_option_is_documented() -> None:
    sections = cli_sections()
    tree = commands()
    missing_commands = [c.path for c in tree if c.path not in sections]
    assert missing_commands == [], "commands missing from docs/cli.md"
    missing_options = {
        c.path: [o for o in c.options if f"`{o}`" not in sections[c.path] and f"`{o} " not in sections[c.path]]
        for c in tree
    }
    assert {k: v for k, v in missing_options.items() if v} == {}, "options missing from docs/cli.md"
    stale = sorted(set(sections) - {c.path for c in tree})
    assert stale == [], "docs/cli.md documents commands that do not exist"


def test_every_metric_is_documented() -> None:
    text = (DOCS / "operations.md").read_text()
    families = {metric.name for metric in Metrics().registry.collect()}
    names = {f"{n}_total" if f"{n}_total" in text else n for n in families}
    assert sorted(n for n in names if f"`{n}`" not in text) == []


# -- docs/examples.md ---------------------------------------------------------------------------
def example_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", (DOCS / "examples.md").read_text(), re.M | re.S)


def test_the_examples_compile() -> None:
    blocks = example_blocks()
    assert len(blocks) >= 10
    for number, block in enumerate(blocks, 1):
        compile(block, f"docs/examples.md python block {number}", "exec")


def test_the_examples_run_against_a_live_server(server: LiveServer, tmp_path: Path) -> None:
    """The page's Python blocks, in order, as one script: only the URL and credentials change."""
    creds = server.create_client("docs-examples")
    script = "\n\n".join(example_blocks())
    for placeholder, value in (
        ("http://127.0.0.1:8000", server.base_url),
        ("my-client-id", creds["client_id"]),
        ("my-client-secret", creds["client_secret"]),
    ):
        assert placeholder in script
        script = script.replace(placeholder, value)
    # the "Before you start" step of the page
    for project in ("cdf-project-name", "my-project"):
        server.cli("admin", "projects", "create", project)
    path = tmp_path / "examples.py"
    path.write_text(script)
    out = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # the notebook function answered with the asset's name, directly and through "caller"
    assert out.stdout.count("'assetName': 'Pump 1'") == 2, out.stdout
    assert "'inner_status': 'Completed'" in out.stdout
    assert "'has_api_key': True" in out.stdout
    _remove_example_functions(server, creds)


def _remove_example_functions(server: LiveServer, creds: dict[str, Any]) -> None:
    for project in ("my-project", "cdf-project-name"):
        client = sdk_client({**creds, "project": project})
        ids = [f.id for f in client.functions.list(limit=None)]
        if ids:
            client.functions.delete(id=ids)
    assert json.loads(server.cli("admin", "projects", "list", "--json").stdout)
