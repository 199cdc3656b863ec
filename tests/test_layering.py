"""The package's shape: no import cycles, nemic.core loads no file/terminal/plot libraries, metrics import nothing
above core, physics never imports nn/train/cli, and no module is over 500 lines."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "nemic"
MAX_LINES = 500


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """nemic modules imported by ``path`` (at any depth: imports inside functions count for cycles too)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            if n in modules:
                out.add(n)
    out.discard(_module_name(path))
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle among modules (ignoring a package's imports of its own submodules in __init__), or None."""
    color: dict[str, int] = {}
    stack: list[str] = []

    def edges(m):
        # a package __init__ re-exporting its submodules is not a dependency of those submodules on it
        return {d for d in graph[m] if not d.startswith(m + ".")}

    def visit(m):
        color[m] = 1
        stack.append(m)
        for d in sorted(edges(m)):
            if color.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in color:
                c = visit(d)
                if c:
                    return c
        stack.pop()
        color[m] = 2
        return None

    for m in sorted(graph):
        if m not in color:
            c = visit(m)
            if c:
                return c
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "a.x": {"a"}}) is None


def test_no_import_cycles():
    cycle = _find_cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def _layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


FORBIDDEN = {
    "core": {"io", "models", "processes", "nn", "train", "metrics", "data", "experiments", "cli"},
    "models": {"io", "nn", "train", "experiments", "cli", "processes"},
    "metrics": {"io", "models", "processes", "nn", "train", "data", "experiments", "cli"},
    "nn": {"io", "train", "experiments", "cli"},
    "processes": {"io", "train", "experiments", "cli"},
    "io": {"train", "experiments", "cli"},
}


def test_layers_import_only_downwards():
    bad = []
    for mod, deps in _graph().items():
        for d in deps:
            if _layer(d) in FORBIDDEN.get(_layer(mod), set()):
                bad.append(f"{mod} imports {d}")
    assert not bad, "\n".join(sorted(bad))


def test_core_loads_no_xarray_rich_or_matplotlib():
    code = ("import sys, nemic.core; "
            "bad = [m for m in ('xarray', 'rich', 'matplotlib', 'typer', 'optax') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"nemic.core loaded {out.stdout.strip()}"


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_over_500_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(SRC)} has {n} lines (split it: one concept per module)"
