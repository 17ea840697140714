"""The import graph of the three packages: no cycle, and the layering of ARCHITECTURE.md holds
(format -> runtime -> exporter -> tools; nothing in the wheel imports the research tree).

The graph is read from the source (every ``import`` statement, module level or inside a function),
so it needs neither torch nor onnx and sees the lazy imports a runtime check would miss."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"adt.runtime": ROOT / "runtime", "adt.exporter": ROOT / "exporter", "adt.tools": ROOT / "tools"}
# What each room may import from the others (its own modules are always allowed).
ALLOWED = {
    "adt.runtime.format": set(),
    "adt.runtime": {"adt.runtime.format"},
    "adt.exporter": {"adt.runtime", "adt.runtime.format"},
    "adt.tools": {"adt.runtime", "adt.runtime.format", "adt.exporter"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """The adt modules an ``import from`` statement of ``module`` names (a module or a package)."""
    if node.level:
        base = module.split(".") if _is_package(module) else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    found = []
    for alias in node.names:  # `from pkg import sub` imports the submodule pkg.sub
        if f"{target}.{alias.name}" in MODULES:
            found.append(f"{target}.{alias.name}")
    if target in MODULES and len(found) < len(node.names):
        found.append(target)
    return found


def _imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in MODULES)
            bad = [a.name for a in node.names if a.name.split(".")[0] == "research"]
            assert not bad, f"{module} imports the research tree ({bad[0]})"
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] != "research" or node.level, \
                f"{module} imports the research tree ({node.module})"
            out.update(_resolve(module, node))
    out.discard(module)
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def _room(module: str) -> str:
    return "adt.runtime.format" if module.startswith("adt.runtime.format") else ".".join(module.split(".")[:2])


def test_the_graph_sees_known_edges():
    # guards the parser itself: if these vanish, the checks below check nothing
    assert "adt.runtime.format.reader" in GRAPH["adt.runtime.format"]
    assert "adt.runtime.rebuild" in GRAPH["adt.runtime"]
    assert any(m.startswith("adt.runtime") for m in GRAPH["adt.exporter.export"])
    assert any(m.startswith("adt.exporter") for m in set().union(*(GRAPH[m] for m in GRAPH if m.startswith("adt.tools"))))


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_layering(module):
    room = _room(module)
    for target in sorted(GRAPH[module]):
        other = _room(target)
        assert other == room or other in ALLOWED[room], f"{module} ({room}) imports {target} ({other})"
