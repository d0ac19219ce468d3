"""The package's import structure: `import equilibria` loads the core and the stability toolkit
only, and no module of the library imports one that imports it back (lazy imports included)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "equilibria"

APPLICATION = (
    "equilibria.training",
    "equilibria.cli",
    "equilibria.lm",
    "equilibria.ssl",
    "equilibria.inr",
    "equilibria.config",
    "equilibria.data",
    "equilibria.neural.training",
    "matplotlib",
)


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run: module level and inside functions, not the ones under
    `if TYPE_CHECKING:`."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skipped
    ]


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that importing `name` runs: each module it imports by name, and
    the packages above it that are not already above `name`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in runtime_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    edges = set()
    for target in targets & modules.keys():
        parts = target.split(".")
        edges.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {e for e in edges if e in modules and e not in own and e != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that ends where it starts, or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for nxt in sorted(graph[node]):
            if nxt in on_path:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in done and (cycle := visit(nxt)):
                return cycle
        on_path.discard(path.pop())
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done and (cycle := visit(start)):
            return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def test_the_library_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_imports_the_package_face():
    """The face's own lazy imports are invisible to the graph, so nothing may import it."""
    assert [name for name, imports in import_graph().items() if "equilibria" in imports] == []


def test_the_cycle_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def loaded_by(statement: str) -> list[str]:
    """The modules a fresh interpreter holds after `statement`."""
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
    )
    return json.loads(result.stdout)


def application_modules(loaded: list[str]) -> list[str]:
    return [m for m in loaded for a in APPLICATION if m == a or m.startswith(a + ".")]


def test_import_equilibria_loads_no_application_module():
    loaded = loaded_by("import equilibria")
    assert "equilibria.deq" in loaded and "equilibria.stability" in loaded
    assert application_modules(loaded) == []


def test_the_models_load_without_the_application():
    assert application_modules(loaded_by("import equilibria.models")) == []


def test_application_names_stay_reachable_from_the_face():
    import equilibria as eq

    assert callable(eq.ssl.nt_xent) and callable(eq.fit_neural_solver)
    assert eq.models.MDEQ and eq.SolverTraining and eq.jacobian_loss and eq.cells.TanhCell
