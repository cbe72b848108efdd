"""dvc.yaml declares, for every stage, exactly the package modules the stage imports (transitively).

DVC reruns a stage when one of its ``deps`` changes, so a module the stage imports but does
not declare would let a code change go unnoticed, and one it declares but does not import
would rerun it for nothing. The imports are read from the source with ``ast``; those under
``if TYPE_CHECKING:`` never run, so they are no dependency.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import yaml

from tests.conftest import REPO

PACKAGE = "reservoir_dqn"
SOURCE = REPO / "src"


def module_file(module: str) -> Path | None:
    path = SOURCE / Path(*module.split("."))
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else None


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` that runs: the bodies of ``if TYPE_CHECKING:`` are left out (only mypy reads them)."""
    nodes, pending = [], [tree]
    while pending:
        node = pending.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            pending += node.orelse
            continue
        pending += list(ast.iter_child_nodes(node))
    return nodes


def imported_modules(path: Path) -> set[str]:
    """Package modules imported by one file when it runs, at any depth (lazy imports included, type-only ones not)."""
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith(PACKAGE)}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE) and not node.level:
            found.add(node.module)
            found |= {
                f"{node.module}.{alias.name}" for alias in node.names if module_file(f"{node.module}.{alias.name}")
            }
    return found


def closure(module: str) -> set[Path]:
    """Every package file a module needs: itself, the ``__init__`` of each package on its path, what it imports."""
    seen: set[Path] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py too
            path = module_file(".".join(parts[:depth]))
            if path is not None and path not in seen:
                seen.add(path)
                pending += sorted(imported_modules(path))
    return seen


def declared(stage: dict) -> set[Path]:
    """The package files a stage's deps cover (a folder covers every file in it)."""
    files: set[Path] = set()
    for dep in stage["deps"]:
        path = REPO / dep
        if path.is_dir():
            files |= set(path.rglob("*.py"))
        elif path.suffix == ".py":
            files.add(path)
    return {file for file in files if "__pycache__" not in file.parts}


def test_every_stage_declares_exactly_the_modules_it_imports() -> None:
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for name, stage in pipeline["stages"].items():
        module = re.search(r"tools/stage (\w+)", stage["cmd"])
        assert module, f"stage {name}: its command does not run tools/stage"
        needed = closure(f"{PACKAGE}.commands.cli") | closure(
            f"{PACKAGE}.commands.{module.group(1)}"
        )  # tools/stage runs the cli
        listed = declared(stage)
        missing = sorted(str(path.relative_to(REPO)) for path in needed - listed)
        extra = sorted(str(path.relative_to(REPO)) for path in listed - needed)
        assert not missing, f"stage {name} imports but does not declare: {missing}"
        assert not extra, f"stage {name} declares but does not import: {extra}"


def test_the_import_reader_follows_lazy_and_package_imports() -> None:
    files = closure(f"{PACKAGE}.commands.plot")
    relative = {str(path.relative_to(SOURCE)) for path in files}
    assert "reservoir_dqn/envs/reservoir/figures.py" in relative  # imported inside a method
    assert "reservoir_dqn/__init__.py" in relative and "reservoir_dqn/envs/__init__.py" in relative


def test_each_stage_checks_the_params_sections_dvc_yaml_gives_it() -> None:
    """A stage refuses to write when its sections of params.yaml changed while it ran: the same sections DVC hashes."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name in ("train", "evaluate", "plot", "export"):
        module = importlib.import_module(f"reservoir_dqn.commands.{name}")
        assert tuple(stages[name]["params"]) == module.PARAMS, name


def test_an_import_made_only_for_type_checking_is_no_dependency(tmp_path: Path) -> None:
    source = tmp_path / "module.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import reservoir_dqn.common.files\n"
        "if TYPE_CHECKING:\n"
        "    from reservoir_dqn.agent import Agent\n"
        "else:\n"
        "    import reservoir_dqn.commands.exits\n"
        "def lazy():\n"
        "    from reservoir_dqn.evaluation import statistics\n"
    )
    assert imported_modules(source) == {
        "reservoir_dqn.common.files",
        "reservoir_dqn.commands.exits",
        "reservoir_dqn.evaluation",
        "reservoir_dqn.evaluation.statistics",
    }
