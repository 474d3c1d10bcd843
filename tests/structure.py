"""The import structure of ``src/fnhost``: its layers, who imports whom, and the drawing of it.

``tests/test_structure.py`` fails when a module imports one of a layer above its own, when
packages (or modules) import each other in a cycle, or when the drawing in
docs/architecture.md is not this one. Every import counts: at module level, inside a
function, or under ``TYPE_CHECKING``, because an import moved into a function to dodge a
cycle is still the cycle.

    uv run python -m tests.structure           # print the drawing
    uv run python -m tests.structure --write   # put it in docs/architecture.md
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "fnhost"

# Bottom to top. A unit may import units of its own layer or below, never above; within a
# layer, units may depend on each other as long as no two do so both ways.
LAYERS: list[tuple[str, list[str]]] = [
    ("base", ["fnhost", "fnhost.settings", "fnhost.errors", "fnhost.clock", "fnhost.statuses",
              "fnhost.metrics", "fnhost.serverlog"]),
    ("infrastructure", ["fnhost.core", "fnhost.store", "fnhost.blobs", "fnhost.auth", "fnhost.run",
                        "fnhost.build", "fnhost.schedule"]),
    ("domain", ["fnhost.services"]),
    ("edge", ["fnhost.api", "fnhost.ui", "fnhost.commands"]),
    ("composition root", ["fnhost.system"]),
    ("entry point", ["fnhost.cli"]),
]


@dataclass
class Graph:
    modules: dict[str, Path]
    # module -> modules of this package it imports, with the line of each import
    imports: dict[str, dict[str, int]] = field(default_factory=dict)

    def unit_of(self, module: str) -> str:
        best = ""
        for _, units in LAYERS:
            for unit in units:
                if (module == unit or module.startswith(unit + ".")) and len(unit) > len(best):
                    best = unit
        return best

    @staticmethod
    def layer_of(unit: str) -> int:
        return next(i for i, (_, units) in enumerate(LAYERS) if unit in units)

    def unit_edges(self) -> dict[tuple[str, str], list[tuple[str, str, int]]]:
        """(importing unit, imported unit) → the module imports behind it."""
        edges: dict[tuple[str, str], list[tuple[str, str, int]]] = defaultdict(list)
        for src, targets in self.imports.items():
            for dst, line in targets.items():
                a, b = self.unit_of(src), self.unit_of(dst)
                if a != b:
                    edges[(a, b)].append((src, dst, line))
        return dict(edges)


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def load() -> Graph:
    modules = {module_name(p): p for p in (SRC / PACKAGE).rglob("*.py")}
    graph = Graph(modules)
    for name, path in modules.items():
        graph.imports[name] = _imports_of(name, path, modules)
    return graph


def _imports_of(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        # the module itself, or the package it is in when it names a package's attribute
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.setdefault(target, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    here = here.rpartition(".")[0]
                base = f"{here}.{base}" if base else here
            if base != PACKAGE and not base.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                add(full if full in modules else base, node.lineno)
    return found


def cycles(nodes: Iterable[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def problems(graph: Graph) -> list[str]:
    found = []
    for module in sorted(graph.modules):
        if not graph.unit_of(module):
            found.append(f"{module} belongs to no layer in tests/structure.py")
    unit_edges = graph.unit_edges()
    for (a, b), where in sorted(unit_edges.items()):
        if graph.layer_of(b) > graph.layer_of(a):
            src, dst, line = where[0]
            found.append(
                f"{a} ({LAYERS[graph.layer_of(a)][0]}) imports {b} ({LAYERS[graph.layer_of(b)][0]}), "
                f"a layer above it: {src} line {line} imports {dst}"
            )
    units = {u for _, us in LAYERS for u in us}
    unit_graph: dict[str, set[str]] = defaultdict(set)
    for a, b in unit_edges:
        unit_graph[a].add(b)
    for cycle in cycles(units, unit_graph):
        found.append("packages import each other in a cycle: " + " ↔ ".join(cycle))
    module_graph = {m: set(t) for m, t in graph.imports.items()}
    for cycle in cycles(graph.modules, module_graph):
        found.append("modules import each other in a cycle: " + " ↔ ".join(cycle))
    return found


def drawing(graph: Graph) -> str:
    """The layers top to bottom, and what each unit imports from the layers below."""
    edges = graph.unit_edges()
    lines = []
    for i in range(len(LAYERS) - 1, -1, -1):
        title, units = LAYERS[i]
        lines.append(f"{title}")
        for unit in units:
            uses = sorted({b for (a, b) in edges if a == unit})
            short = unit.removeprefix("fnhost.") if unit != "fnhost" else "fnhost (package)"
            used = ", ".join(u.removeprefix("fnhost.") for u in uses) or "—"
            lines.append(f"    {short:<14} → {used}")
    return "\n".join(lines)


ARCHITECTURE = SRC.parent / "docs" / "architecture.md"
BEGIN, END = "<!-- structure: begin -->", "<!-- structure: end -->"


def drawn_in_docs() -> str:
    text = ARCHITECTURE.read_text()
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip().strip("`").strip() if BEGIN in text else ""


def write_docs(graph: Graph) -> None:
    text = ARCHITECTURE.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    ARCHITECTURE.write_text(f"{head}{BEGIN}\n```\n{drawing(graph)}\n```\n{END}{tail}")


if __name__ == "__main__":
    g = load()
    if "--write" in sys.argv:
        write_docs(g)
    print(drawing(g))
    for problem in problems(g):
        print("PROBLEM:", problem, file=sys.stderr)
