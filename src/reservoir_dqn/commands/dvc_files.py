"""What the pipeline reads and writes, as dvc.yaml declares it with params' values, and what git holds of it.

``reservoir-dqn dvc`` (:mod:`reservoir_dqn.commands.dvc_wrapper`) asks which files a stage reads
that no stage writes (the record, the code) and whether an experiment's copy would hold
them; ``reservoir-dqn promote`` asks which changed files are the pipeline's own outputs.
dvc.yaml is read as plain YAML and its ``${key}`` filled from params, the only
interpolation it uses: no stage imports this module, and it needs no DVC repository object.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reservoir_dqn.commands.workspace import git

VARIABLE = re.compile(r"\$\{\s*([\w.-]+)\s*\}")
OUTPUT_KEYS = ("outs", "metrics", "plots")
LOCK = "dvc.lock"


def _resolve(text: str, values: Mapping[str, Any]) -> str | None:
    """``text`` with dvc.yaml's ``${key}`` replaced from params (``None`` when a key is unknown)."""
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        if match[1] not in values:
            missing = True
            return ""
        return str(values[match[1]])

    resolved = VARIABLE.sub(value, text)
    return None if missing else resolved.rstrip("/")


def _entries(items: Any) -> list[str]:
    """The paths of a dvc.yaml list (``outs``, ``deps``, ...): plain strings or one-key mappings."""
    paths: list[str] = []
    for item in items or []:
        if isinstance(item, str):
            paths.append(item)
        elif isinstance(item, dict):
            paths += [str(key) for key in item]
    return paths


def _under(path: str, folders: Iterable[str]) -> bool:
    return any(path == folder or path.startswith(folder + "/") for folder in folders)


@dataclass(frozen=True)
class Dependency:
    """A file a stage reads that no stage writes: as dvc.yaml declares it, and resolved."""

    declared: str  # as dvc.yaml writes it (``${env.reservoir.record.path}``)
    path: str  # relative to the repository's root


@dataclass(frozen=True)
class Pipeline:
    """dvc.yaml's stages with params' values: what they write, and what they read from outside."""

    outputs: frozenset[str]
    dependencies: tuple[Dependency, ...]

    @classmethod
    def read(cls, root: Path, values: Mapping[str, Any]) -> Pipeline:
        """``root/dvc.yaml`` resolved with the dotted ``values`` of params (empty when it cannot be read: DVC says
        what is wrong with its own file)."""
        try:
            data = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            return cls(frozenset(), ())
        stages = [stage for stage in (data.get("stages") or {}).values() if isinstance(stage, dict)]
        outputs = {
            resolved
            for stage in stages
            for key in OUTPUT_KEYS
            for declared in _entries(stage.get(key))
            if (resolved := _resolve(declared, values)) is not None
        }
        dependencies: dict[str, Dependency] = {}
        for stage in stages:
            for declared in _entries(stage.get("deps")):
                path = _resolve(declared, values)
                if path is not None and not _under(path, outputs):
                    dependencies.setdefault(path, Dependency(declared, path))
        return cls(frozenset(outputs), tuple(dependencies.values()))

    def writes(self, path: str) -> bool:
        """Whether ``path`` is an output of a stage (or inside one), or ``dvc.lock``, which records them."""
        return path == LOCK or _under(path, self.outputs)


def tracked_files(root: Path) -> set[str] | None:
    """Every file git's index holds (committed or staged), relative to ``root``; ``None`` outside git."""
    listed = git("-C", str(root), "ls-files", "-z")
    if listed is None or listed.returncode != 0:
        return None
    return set(filter(None, listed.stdout.split("\0")))


def visible(path: str, tracked: set[str], copied: Sequence[str] = ()) -> bool:
    """Whether a copy of the repository made of what git and DVC track holds ``path``: tracked by git, tracked by a
    ``.dvc`` file (of itself or a folder above), or among ``copied`` (``dvc exp run -C``)."""
    if path in tracked or any(name.startswith(path + "/") for name in tracked):
        return True
    parts = Path(path).parts
    if {"/".join(parts[:depth]) + ".dvc" for depth in range(1, len(parts) + 1)} & tracked:
        return True
    return _under(path, [given.rstrip("/") for given in copied])


def changed_files(root: Path) -> list[str] | None:
    """The tracked files that differ from HEAD, staged or not (``None`` when git cannot tell)."""
    status = git("-C", str(root), "status", "--porcelain", "-z", "--untracked-files=no")
    if status is None or status.returncode != 0:
        return None
    entries = status.stdout.split("\0")
    changed, index = [], 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if not entry:
            continue
        changed.append(entry[3:])
        if entry[0] in "RC":  # a rename or copy: the next entry is its source, changed too
            changed.append(entries[index])
            index += 1
    return changed


def dvc_status(python: str, root: Path) -> list[str] | None:
    """The stages ``dvc status`` finds out of date against dvc.lock (none: every output is what dvc.lock records);
    ``None`` when DVC cannot tell."""
    try:
        result = subprocess.run(
            [python, "-m", "dvc", "status", "--json"], cwd=root, capture_output=True, text=True, timeout=600
        )
        status = json.loads(result.stdout or "{}") if result.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    return sorted(status) if isinstance(status, dict) else None
