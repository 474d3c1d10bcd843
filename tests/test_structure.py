"""The shape of src/fnhost: layers only import downwards, nothing imports in a cycle, and
docs/architecture.md draws the structure as it is (``uv run python -m tests.structure``)."""

from __future__ import annotations

from pathlib import Path

from tests import structure


def test_no_layer_imports_one_above_and_nothing_imports_in_a_cycle() -> None:
    assert structure.problems(structure.load()) == []


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """An upward import and a cycle written the way they used to be hidden (in a function)."""
    graph = structure.load()
    graph.imports["fnhost.store.calls"] = {**graph.imports["fnhost.store.calls"], "fnhost.services.calls": 1}
    graph.imports["fnhost.run.abc"] = {**graph.imports["fnhost.run.abc"], "fnhost.run.local": 1}
    found = structure.problems(graph)
    assert any("fnhost.store (infrastructure) imports fnhost.services (domain)" in p for p in found), found
    assert any("modules import each other in a cycle" in p and "fnhost.run.abc" in p for p in found), found
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from fnhost.services import calls\n    return calls\n")
    assert "fnhost.services.calls" in structure._imports_of("fnhost.x", source, graph.modules)


def test_architecture_md_draws_the_structure_as_it_is() -> None:
    assert structure.BEGIN in structure.ARCHITECTURE.read_text(), "docs/architecture.md lost its drawing markers"
    assert structure.drawn_in_docs() == structure.drawing(structure.load()).strip(), (
        "docs/architecture.md's structure drawing is stale: run `uv run python -m tests.structure --write`"
    )
