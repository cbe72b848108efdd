"""Names that tell runs apart: what changed against the baseline's params.yaml, and the kinds of runs.

A run is named by the parameters that differ from the committed ``params.yaml`` of its
baseline (DVC's baseline revision for an experiment, else ``HEAD``): ``gamma=0.95``,
``lr=0.001, n_steps=1``; ``baseline`` when nothing differs; a DVC experiment's name follows
in parentheses. A name fits MLflow's run-name column without wrapping (:data:`NAME_LIMIT`):
values keep three significant digits (``lr=0.00106``), and changes that do not fit are
counted (``gamma=0.988, n_steps=1 +4``). The description and the ``changed`` tag list the
changes in full, with the budget and the seed count.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from reservoir_dqn.config import Config, flatten


class Tag(StrEnum):
    """Every tag this package puts on a run or a model version, declared once (searches and views read them)."""

    RUN_KIND = "run_kind"  # every run: one of RunKind
    GIT_COMMIT = "git_commit"  # a pipeline run: the commit it ran at, and its baseline, experiment and budget
    BASELINE_REV = "baseline_rev"
    DVC_EXP_NAME = "dvc_exp_name"
    ENV = "env"
    SEEDS = "seeds"
    TOTAL_FRAMES = "total_frames"
    BUDGET = "budget"
    CHANGED = "changed"
    PARAMS_HASH = "params_hash"
    CONTINUES_RUN = "continues_run"  # the run whose checkpoints a larger budget continued
    SEED_INDEX = "seed_index"  # an agent's run: which seed
    SYNC_STATUS = "sync_status"  # complete | incomplete: whether the outbox still holds something
    SYNC_OUTBOX = "sync_outbox"
    BASELINES_RUN = "baselines_run"  # the reference run of the baselines' results
    REFERENCE_KEY = "reference_key"  # a baselines' run: the configuration it measured
    MODEL_VERSION = "model_version"  # the registered version of the run's policy
    ONNX_SHA256 = "onnx_sha256"  # a model version: its file's digest (one file, one version)
    CHAMPION_STATUS = "champion_status"  # a model version: candidate | champion | former champion
    SEED_SCORES = "seed_scores"  # a model version: each seed's test score, the champion's evidence
    CONDITIONS_DIGEST = "conditions_digest"  # ... and what they were measured under
    OPTUNA_STUDY = "optuna_study"  # a tuning study's run and its trials
    OPTUNA_STORAGE = "optuna_storage"
    OPTUNA_TRIAL = "optuna_trial"
    OPTUNA_STATE = "optuna_state"  # a trial: complete, pruned, killed, failed, invalid
    BEST_TRIAL = "best_trial"  # a study's run: its best trial's number
    CHAMPION_HISTORY = "champion_history"  # a registered model: the moves of 'champion' (JSON)
    COMPARED_TO = "compared_to"  # a pipeline run that `compare` judged: its baseline (and <metric>_verdict tags)


RUN_KIND = Tag.RUN_KIND  # the tag every run of this package carries: one of RunKind


class RunKind(StrEnum):
    """What a run is, as its ``run_kind`` tag says (the views and searches filter on it)."""

    PIPELINE = "pipeline"  # a pipeline execution: params, the evaluation's aggregates, the model
    AGENT = "agent"  # one agent (seed) of a pipeline execution or trial: its training curves
    TRIAL = "trial"  # a tuning trial (in place of a pipeline execution)
    STUDY = "study"  # a tuning study: its trials are its children
    BASELINES = "baselines"  # the reference policies' results of one environment configuration


# Sections whose keys change what is trained and measured (paths, tracking, compare and tune do not).
TRAINING_SECTIONS = ("seed", "env", "dqn", "train", "evaluate")
# Characters a run name may have: what MLflow's run-name column (views.FIXED_COLUMNS, 200 px) shows on one line.
NAME_LIMIT = 32
SIGNIFICANT_DIGITS = 3  # of a float in a name: lr=0.00106 (the description keeps every digit)


@dataclass(frozen=True)
class RunIdentity:
    """How a pipeline execution presents itself in MLflow, TensorBoard and the registry."""

    name: str
    description: str
    changes: dict[str, tuple[Any, Any]]  # dotted key -> (baseline value, this run's value)
    baseline_rev: str
    commit: str

    def tags(self, config: Config) -> dict[str, str]:
        return {
            "mlflow.source.git.commit": self.commit,
            Tag.GIT_COMMIT: self.commit,
            Tag.BASELINE_REV: self.baseline_rev,
            Tag.DVC_EXP_NAME: os.environ.get("DVC_EXP_NAME", ""),
            Tag.ENV: config.env.name,
            Tag.SEEDS: str(config.train.seeds),
            Tag.TOTAL_FRAMES: str(config.train.total_frames),
            Tag.BUDGET: f"{config.train.total_frames:,} frames x {config.train.seeds} seeds",
            Tag.CHANGED: ", ".join(f"{key}={new}" for key, (_, new) in self.changes.items()) or "nothing",
            Tag.PARAMS_HASH: config.training_hash[:12],
        }


def identify(config: Config, root: Path) -> RunIdentity:
    """Name, describe and tag this configuration against its baseline revision's params.yaml."""
    baseline_rev = os.environ.get("DVC_EXP_BASELINE_REV") or _git(root, "rev-parse", "HEAD") or "unknown"
    baseline = _params_at(root, baseline_rev)
    changes = _changes(config, baseline) if baseline is not None else {}
    exp = os.environ.get("DVC_EXP_NAME")
    suffix = f" ({exp})" if exp else ""
    name = (_name(changes, config, NAME_LIMIT - len(suffix)) if baseline is not None else "unversioned params") + suffix
    lines = [
        f"**{name}**: {config.env.name}, {config.train.seeds} seeds x {config.train.total_frames:,} frames each.",
        "",
        f"Against params.yaml of `{baseline_rev[:12]}`: "
        + (", ".join(f"`{key}` {old!r} -> {new!r}" for key, (old, new) in changes.items()) or "no change."),
    ]
    return RunIdentity(name, "\n".join(lines), changes, baseline_rev, _git(root, "rev-parse", "HEAD") or "unknown")


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _params_at(root: Path, revision: str) -> dict[str, Any] | None:
    text = _git(root, "show", f"{revision}:params.yaml")
    if text is None:
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def _changes(config: Config, baseline: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    current = config.flat()
    old = flatten(baseline)
    return {
        key: (old.get(key), value)
        for key, value in current.items()
        if _names_the_run(key, config) and _differs(old.get(key), value)
    }


def _names_the_run(key: str, config: Config) -> bool:
    """A key that changes what is trained and measured: of the env section, the name, the copies and the
    current environment's own settings (``env.section`` follows from the name)."""
    section = key.split(".")[0]
    if section != "env":
        return section in TRAINING_SECTIONS
    own = f"env.{config.env.section}."
    return key in ("env.name", "env.num_envs") or key.startswith(own)


def _differs(old: Any, new: Any) -> bool:
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return list(old) != list(new)
    return bool(old != new)


def _name(changes: dict[str, tuple[Any, Any]], config: Config, limit: int) -> str:
    """``gamma=0.95, lr=0.002``, within ``limit`` characters: the changes that do not fit are counted (`` +2``)."""
    if not changes:
        return "baseline"
    leaves = [key.rsplit(".", 1)[-1] for key in config.flat() if _names_the_run(key, config)]  # a leaf names its key
    parts = []
    for key, (_, value) in changes.items():
        leaf = key.rsplit(".", 1)[-1]
        parts.append(f"{leaf if leaves.count(leaf) == 1 else key}={_short(value)}")
    for shown in range(len(parts), 0, -1):
        more = f" +{len(parts) - shown}" if shown < len(parts) else ""
        name = ", ".join(parts[:shown]) + more
        if len(name) <= limit:
            return name
    more = f" +{len(parts) - 1}" if len(parts) > 1 else ""
    return parts[0][: max(limit - len(more) - 3, 1)] + "..." + more


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_short(item) for item in value) + "]"
    return f"{value:.{SIGNIFICANT_DIGITS}g}" if isinstance(value, float) else str(value)
