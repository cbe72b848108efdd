"""The structure the next features build on: tracking behind its package, small modules, no import cycles.

Read from the source with ``ast`` (every import: at the top, lazy in a function, or for type
checking only), so the rules hold for the import graph, not for a text search.
"""

from __future__ import annotations

import ast
import re
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


# The packages by layer, bottom first: a module may import its own package and those below it, never above.
# Each package's __init__ says the same in words ("May import: ...").
LAYERS = ("common", "config", "envs", "agent", "evaluation", "training", "release", "tracking", "commands")
TOP_LEVEL_MODULES = 4  # at most, __init__ included: everything else lives in a package of its concern


def _layer_violations(modules: dict[str, Path]) -> list[str]:
    """Every import that runs up the layers, as ``importer -> imported (rule)``."""
    found = []
    for name, path in modules.items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in LAYERS:
            continue
        layer = LAYERS.index(parts[1])
        imports = _imports(path)
        for imported in sorted(name for name in imports if name.rsplit(".", 1)[0] not in imports):  # not its names
            target = imported.split(".")
            if target[0] != "reservoir_dqn" or len(target) < 2 or target[1] not in LAYERS:
                continue
            if LAYERS.index(target[1]) > layer:
                allowed = ", ".join(LAYERS[:layer]) or "nothing"
                found.append(f"{name} -> {imported} ({parts[1]} may import {allowed} and itself, not {target[1]})")
    return found


def test_every_package_is_a_layer_and_imports_only_down() -> None:
    names = {_name(path): path for path in _modules()}
    packages = {
        name.split(".")[1] for name in names if name.count(".") >= 1 and (PACKAGE / name.split(".")[1]).is_dir()
    }
    assert packages == set(LAYERS), f"packages without a layer, or layers without a package: {packages ^ set(LAYERS)}"
    assert _layer_violations(names) == []


def test_a_wrong_import_fails_the_layer_rule_and_names_it(tmp_path: Path) -> None:
    """The rule can fail: the environments may not import the training loop, even lazily."""
    module = tmp_path / "wrong.py"
    module.write_text("def later():\n    from reservoir_dqn.training.loop import train\n")
    assert _layer_violations({"reservoir_dqn.envs.wrong": module}) == [
        "reservoir_dqn.envs.wrong -> reservoir_dqn.training.loop "
        "(envs may import common, config and itself, not training)"
    ]


def test_each_package_init_says_what_lives_there_and_what_it_may_import() -> None:
    """The words of each ``__init__`` ("May import: ...") name exactly the layers below it."""
    for layer, package in enumerate(LAYERS):
        doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text())) or ""
        assert "May import:" in doc, f"{package}/__init__.py does not say what it may import"
        said = doc.split("May import:", 1)[1].split("(", 1)[0]
        named = {word for word in re.findall(r"[a-z]+", said) if word in LAYERS}
        expected = set(LAYERS[:layer]) if 0 < layer < len(LAYERS) - 1 else set()
        assert named == expected, (
            f"{package}/__init__.py says it may import {sorted(named)}, the layers say {sorted(expected)}"
        )


def test_at_most_four_modules_at_the_top() -> None:
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= TOP_LEVEL_MODULES, f"modules at the top of the package: {top}"


def _readme_layout() -> list[str]:
    """The lines of the Layout block (docs/reference/layout.md) under ``src/reservoir_dqn/``."""
    text = (REPO / "docs/reference/layout.md").read_text()
    block = text.split("# Layout", 1)[1].split("```text\n", 1)[1].split("```", 1)[0].splitlines()
    start = next(index for index, line in enumerate(block) if line.startswith("src/reservoir_dqn/"))
    end = next(index for index in range(start + 1, len(block)) if not block[index].startswith(" "))
    return block[start + 1 : end]


def test_the_readme_layout_names_every_package_and_only_files_that_exist() -> None:
    named: list[str] = []
    stack: list[str] = []
    for line in _readme_layout():
        match = re.match(r"^( +)(\w+)/ ", line)
        if match:  # a package line: its indentation says whose subpackage it is
            depth = len(match.group(1)) // 2 - 1
            stack[depth:] = [match.group(2)]
            named.append("/".join(stack))
    packages = sorted(
        str(path.parent.relative_to(PACKAGE)) for path in PACKAGE.rglob("__init__.py") if path.parent != PACKAGE
    )
    assert named == sorted(named, key=lambda name: (LAYERS.index(name.split("/")[0]), name)), "out of layer order"
    assert sorted(named) == packages, (
        f"the Layout page (docs/reference/layout.md) and the tree differ: {sorted(set(named) ^ set(packages))}"
    )
    text = "\n".join(_readme_layout())
    for module in set(re.findall(r"(?<![/\w])(\w+)\.py\b", text)):  # tests/... paths are the tests'
        assert list(PACKAGE.rglob(f"{module}.py")), f"the Layout page names {module}.py, which does not exist"
