"""The structure the next features build on: tracking behind its package, small modules, no import cycles.

Read from the source with ``ast`` (every import: at the top, lazy in a function, or for type
checking only), so the rules hold for the import graph, not for a text search.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "src/reservoir_dqn"
TRACKING = PACKAGE / "tracking"
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts)


def _name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (its own package's relative imports resolved)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = _name(path).split(".")[: -node.level if path.name != "__init__.py" else None]
                if path.name == "__init__.py" and node.level > 1:
                    parent = parent[: -(node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def test_nothing_outside_tracking_imports_mlflow_or_reaches_for_its_client() -> None:
    """The stages, compare, promote and tune go through ``reservoir_dqn.tracking``; only it speaks MLflow."""
    outside = [path for path in _modules() if TRACKING not in path.parents]
    importers = sorted(
        _name(path) for path in outside if any(name.split(".")[0] == "mlflow" for name in _imports(path))
    )
    assert importers == [], f"modules outside tracking/ that import mlflow: {importers}"
    reaching = sorted(
        _name(path)
        for path in outside
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "client"
    )
    assert reaching == [], f"modules outside tracking/ that use a store's MLflow client: {reaching}"


def test_the_import_rule_sees_lazy_and_type_only_imports(tmp_path: Path) -> None:
    """The rule above can fail: a lazy import and one for type checking are both imports."""
    module = tmp_path / "module.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from mlflow import MlflowClient\n"
        "def later():\n    import mlflow.pyfunc\n"
    )
    assert {"mlflow", "mlflow.MlflowClient", "mlflow.pyfunc"} <= _imports(module)


def test_no_module_is_over_400_lines() -> None:
    long = {_name(path): n for path in _modules() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"


def test_the_package_has_no_import_cycle() -> None:
    """Modules as a graph: an import of ``a.b`` is an edge to module ``a.b``, or to ``a`` when ``b`` is a name."""
    names = {_name(path): path for path in _modules()}
    edges = {
        name: {
            target
            for imported in _imports(path)
            if imported.startswith("reservoir_dqn")
            for target in [imported if imported in names else imported.rsplit(".", 1)[0]]
            if target in names and target != name
        }
        for name, path in names.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for name in sorted(names):
        if name not in state:
            visit(name, [name])
    assert cycles == [], f"import cycles: {cycles[:3]}"
