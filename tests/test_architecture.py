"""The package's shape: modules grouped by concern, and no import cycles between modules.

Imports are read from the source (top-level and function-level alike, since a cycle through a
lazy import is still a cycle in the design), resolved to the package's own modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tvm_pipeline"
CONCERNS = {"cli", "models", "frontend", "target", "lowering", "tuning", "codegen", "run",
            "observe"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            for alias in node.names:
                candidate = f"{base_name}.{alias.name}"
                found.add(candidate if candidate in known else base_name)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    # a package's __init__ is not an edge of its own submodules' design
    return {m for m in found if m in known and m != name and not name.startswith(m + ".")
            and m != "tvm_pipeline"}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_cycle_detector_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_package_is_grouped_by_concern():
    top_modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert top_modules <= {"api", "console", "errors", "numbers", "paths", "resources", "schema"}, \
        top_modules
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert folders == CONCERNS, folders
