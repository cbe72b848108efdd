"""The workspace a stage runs in: the parameter file changing under it, and what a failed experiment leaves.

``dvc exp run -S key=value`` writes the value into params.yaml before any stage runs, and
leaves it there when the experiment fails. Two things follow, and this module handles both:

- **Experiments side by side in one workspace.** DVC refuses a second ``dvc exp run`` or
  ``dvc repro`` while one runs (its lock names the running process), but only after the
  second has written its ``-S`` values into params.yaml, under the first. Each stage
  therefore snapshots the parameter file when it starts (:class:`ParamsSnapshot`) and,
  before it replaces any output, checks that the sections it reads are unchanged; a stage
  also checks that the training it builds on was made with the parameters it now reads
  (:func:`mismatch_with_training`). Either failure is one line and nothing is written, so
  MLflow runs, registry versions and outputs always match the params that made them.
  Experiments run side by side with ``--queue`` or ``--temp``, each in its own copy.
- **A failed experiment's values.** DVC rewrites git's index after writing params.yaml;
  when the value it wrote has the same length and lands in the same second, git's stat
  cache says "unchanged": ``git status`` shows nothing and ``git checkout`` restores
  nothing. :func:`reveal_params_change` makes git look at the content again, and
  :func:`failed_experiment_hint` tells the user, in the failure's own line, how to restore
  the committed values.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reservoir_dqn.config import ENV_PARAMS, Config
from reservoir_dqn.config.tree import flatten

GIT_TIMEOUT_S = 10.0
# The params whose values make a training (train.json records them): the environment's own settings
# section only, as dvc.yaml's train stage lists them.
TRAINED_PARAMS = ("seed", *ENV_PARAMS, "dqn", "train")


def _flat_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return flatten(data) if isinstance(data, dict) else {}


def _in_sections(key: str, sections: Sequence[str] | None) -> bool:
    return sections is None or any(key == section or key.startswith(f"{section}.") for section in sections)


def _differences(
    before: Mapping[str, Any], after: Mapping[str, Any], sections: Sequence[str] | None, limit: int = 3
) -> str:
    """``dqn.gamma: 0.9 -> 0.8, ...`` for the keys of ``sections`` (``None``: all) that differ ('' when none)."""
    keys = sorted(key for key in set(before) | set(after) if _in_sections(key, sections))
    changed = [
        f"{key}: {before.get(key, '(unset)')} -> {after.get(key, '(unset)')}"
        for key in keys
        if before.get(key) != after.get(key)
    ]
    more = f" and {len(changed) - limit} more" if len(changed) > limit else ""
    return ", ".join(changed[:limit]) + more


@dataclass(frozen=True)
class ParamsSnapshot:
    """The parameter file's values when a stage started."""

    path: Path
    values: dict[str, Any]
    config: Config

    @classmethod
    def take(cls, config: Config) -> ParamsSnapshot:
        return cls(config.source, _flat_file(config.source), config)

    def changes(self, sections: Sequence[str]) -> str:
        """What changed in ``sections`` (as dvc.yaml lists them) of the file since the snapshot ('' when nothing)."""
        return _differences(self.values, _flat_file(self.path), self.config.env.resolve(sections))

    def check_unchanged(self, stage: str, sections: Sequence[str]) -> str | None:
        """The one line to fail with when the file's ``sections`` changed while the stage ran, else ``None``."""
        changes = self.changes(sections)
        if not changes:
            return None
        return (
            f"{self.path} changed while {stage} ran ({changes}): another experiment or an edit in this workspace? "
            f"Nothing was written; run experiments side by side with `dvc exp run --queue` or `--temp`"
        )


def trained_params(config: Config) -> dict[str, Any]:
    """The values of the sections that make a training, as train.json records them."""
    return {
        key: value
        for key, value in flatten(config.model_dump(mode="json")).items()
        if _in_sections(key, config.env.resolve(TRAINED_PARAMS))
    }


def mismatch_with_training(
    config: Config, recorded: Mapping[str, Any] | None, sections: Sequence[str], summary: Path
) -> str | None:
    """The one line to fail with when ``config``'s ``sections`` differ from the params training ``recorded``, else None.

    A training without the record (run outside the train stage) is not judged.
    """
    if recorded is None:
        return None
    shared = config.env.resolve([section for section in sections if section in TRAINED_PARAMS])
    changes = _differences(recorded, trained_params(config), shared)
    if not changes:
        return None
    return (
        f"{summary} was trained with other parameters than params.yaml now holds ({changes}): "
        "run the train stage again (`dvc repro`), or restore the parameters it was trained with"
    )


def git(*args: str) -> subprocess.CompletedProcess[str] | None:
    """``git *args`` in the current folder, its output captured; ``None`` when git is missing or hangs."""
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def reveal_params_change(path: Path) -> None:
    """Make git see that ``path`` differs from its index entry, whatever git's stat cache holds.

    ``dvc exp run -S`` rewrites params.yaml with a line of the same length (``gamma: 5`` keeps
    its comment's column), and DVC writes git's index in the same second: git compares
    only the seconds of a file's modification time, so once the index is written again the
    entry looks clean and ``git status`` hides the experiment's values. When the file's
    content differs from the index's blob, its modification time moves one second on,
    which makes git compare the content. Nothing happens outside a git work tree, when git
    is missing, or when the content is the index's.
    """
    listed = git("ls-files", "--stage", "--", str(path))
    if listed is None or listed.returncode != 0 or not listed.stdout.strip():
        return
    indexed = listed.stdout.split()[1]
    current = git("hash-object", "--", str(path))
    if current is None or current.returncode != 0 or current.stdout.strip() == indexed:
        return
    status = path.stat()
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))


def failed_experiment_hint(path: Path) -> str:
    """For a stage failing inside ``dvc exp run`` in the workspace: how to restore the committed params ('' else).

    Queued and ``--temp`` experiments run in a copy of the repository, which DVC removes:
    their failure leaves the workspace untouched, and nothing is said.
    """
    root = os.environ.get("DVC_ROOT")
    if not os.environ.get("DVC_EXP_NAME") or not root or Path(root).resolve() != Path.cwd().resolve():
        return ""
    head = git("show", f"HEAD:{path.as_posix()}")
    if head is None or head.returncode != 0:
        return ""
    committed = yaml.safe_load(head.stdout)
    if not _differences(flatten(committed) if isinstance(committed, dict) else {}, _flat_file(path), None):
        return ""
    reveal_params_change(path)
    return f" ({path} keeps the experiment's values: `git checkout {path}` restores the committed ones)"
