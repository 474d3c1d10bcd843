"""Docs that cannot rot: the configuration reference must match the settings."""

from __future__ import annotations

from pathlib import Path

from fnhost.settings import Settings, markdown_reference

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_configuration_reference_is_current() -> None:
    text = (DOCS / "configuration.md").read_text()
    assert text == markdown_reference(), "docs/configuration.md is stale: run scripts/gen-config-docs"


def test_every_setting_is_described() -> None:
    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]
    assert undocumented == []
