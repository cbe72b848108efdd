"""A tuning trial: the search space's values for it, a real training run, and its objective.

Each trial is a real training run of this package (every agent of ``train.seeds``, with the
trial's overrides and ``tune.overrides``, the tuning budget). After each periodic validation
it reports the agents' mean (or IQM) validation score, so that Optuna's pruner can stop it;
its objective is that score of the final networks, on the validation seeds (the test seeds
are never seen). Its MLflow run is a child of the study's, named by its values
(:func:`trial_name`: ``trial 7: lr=3e-4, gamma=0.97``).
"""

from __future__ import annotations

import itertools
import logging
import math
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import Trial, TrialState

from reservoir_dqn.commands.tuning.storage import RUN_ATTRIBUTE
from reservoir_dqn.common.process import Terminated
from reservoir_dqn.config import TUNE_SEED_BASE, Config, ConfigError, TuneConfig, load_config
from reservoir_dqn.config.sections import SearchDimension
from reservoir_dqn.evaluation.statistics import iqm
from reservoir_dqn.tracking import Tracking
from reservoir_dqn.tracking.naming import RUN_KIND, RunKind, Tag
from reservoir_dqn.tracking.study import StudyRuns
from reservoir_dqn.training.loop import train
from reservoir_dqn.training.session import start

log = logging.getLogger(__name__)
TRIAL_TAG = Tag.OPTUNA_TRIAL
INTERRUPTIONS = (KeyboardInterrupt, Terminated)  # Ctrl-C and SIGTERM: the runs end KILLED


def compact(value: float) -> str:
    """Three significant digits, in the shorter of plain and scientific notation: ``0.97``, ``3e-4``, ``1.5e5``."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    scientific = f"{_trimmed(mantissa)}e{int(exponent)}"
    plain = _trimmed(f"{float(scientific):.{max(0, 2 - int(exponent))}f}")
    return plain if len(plain) <= len(scientific) else scientific


def _trimmed(number: str) -> str:
    """A decimal number without trailing zeros after its point (``3.00`` is ``3``, ``0.970`` is ``0.97``)."""
    return number.rstrip("0").rstrip(".") if "." in number else number


def trial_name(number: int, values: Mapping[str, Any], space: Mapping[str, SearchDimension]) -> str:
    """``trial 7: lr=3e-4, gamma=0.97``: the run name of a trial with these values of the search space.

    Each key shows as its last component (the whole key where two keys share it); floats in
    three significant digits (:func:`compact`), integers and categorical choices as they are.
    """
    leaves = [key.rsplit(".", 1)[-1] for key in values]
    labels = [
        f"{leaf if leaves.count(leaf) == 1 else key}="
        + (compact(value) if space[key].distribution == "float" else str(value))
        for (key, value), leaf in zip(values.items(), leaves, strict=True)
    ]
    return f"trial {number}: " + ", ".join(labels)


def suggest(trial: Trial, settings: TuneConfig) -> list[str]:
    """The trial's values of the search space, as ``key=value`` overrides (exact: floats written with repr)."""
    overrides = []
    for key, dimension in settings.space.items():
        value: Any
        if dimension.distribution == "categorical":
            assert dimension.choices is not None
            value = trial.suggest_categorical(key, list(dimension.choices))
        elif dimension.distribution == "int":
            assert dimension.low is not None and dimension.high is not None
            value = trial.suggest_int(key, int(dimension.low), int(dimension.high), log=dimension.log)
        else:
            assert dimension.low is not None and dimension.high is not None
            value = trial.suggest_float(key, dimension.low, dimension.high, log=dimension.log)
        overrides.append(f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}")
    return overrides


class Objective:
    """One trial: a training run with the trial's overrides, reporting its validation score for pruning."""

    def __init__(
        self,
        params: Path,
        overrides: Sequence[str],
        config: Config,
        tracking: Tracking,
        study_runs: StudyRuns,
        parent: str | None,
    ):
        """:param tracking: the study's tracking (each trial's runs are made over its connection, under ``parent``,
        the study's run in ``study_runs``)."""
        self.params, self.overrides, self.config = params, list(overrides), config
        self.tracking, self.study_runs, self.parent = tracking, study_runs, parent
        self.workdir = Path(tempfile.mkdtemp(prefix="reservoir-dqn-tune-"))
        self.numbers: set[int] = set()  # the trials this worker ran

    def score(self, scores: torch.Tensor) -> float:
        values = [float(value) for value in scores]
        return iqm(values) if self.config.tune.objective == "score_iqm" else sum(values) / len(values)

    def __call__(self, trial: Trial) -> float:
        self.numbers.add(trial.number)
        self.study_runs.mark_running(self.parent)  # a worker may have ended it meanwhile
        suggested = suggest(trial, self.config.tune)
        space = self.config.tune.space
        name = trial_name(trial.number, {key: trial.params[key] for key in space}, space)
        tags: dict[str, str] = {
            Tag.OPTUNA_STUDY: trial.study.study_name,
            TRIAL_TAG: str(trial.number),
            RUN_KIND: RunKind.TRIAL,
        }
        try:
            config = load_config(self.params, [*self.overrides, *self.config.tune.overrides, *suggested])
        except ConfigError as error:
            log.info(f"trial {trial.number}: {', '.join(suggested)}: pruned, an invalid combination ({error})")
            self.study_runs.record_invalid_trial(name, tags, self.parent, str(error))
            raise optuna.TrialPruned(str(error)) from None
        # Trial n trains with master seed TUNE_SEED_BASE + n: its agents never replay the pipeline's (seeds
        # below TUNE_SEED_BASE). Set after validation, which keeps params.yaml's seed below that range.
        config = config.model_copy(update={"seed": TUNE_SEED_BASE + trial.number})
        folder = self.workdir / f"trial-{trial.number}"
        log.info(f"trial {trial.number}: {', '.join(suggested)}")
        tracking = self.tracking.for_config(config)
        run_ids = tracking.start_training({}, parent_of=self.parent, tags=tags, name=name)  # {}: not tracked
        if run_ids:
            trial.set_user_attr(RUN_ATTRIBUTE, run_ids["parent"])
        validations = itertools.count()  # the pruner's steps: warmup_validations counts these

        def report(frames: int, scores: torch.Tensor) -> None:
            trial.report(self.score(scores), next(validations))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at {frames:,} frames")

        try:  # from the runs' creation on: whatever ends the trial ends its runs
            session = start(config, None)  # a trial never resumes: no checkpoints
            sinks = tracking.training_sinks(folder / "log", session.metric_groups, tensorboard=False)
            result = train(session, sinks, on_validation=report)
        except optuna.TrialPruned as pruned:
            self._finish(tracking, trial, f"pruned ({pruned})", "FINISHED")
            raise
        except INTERRUPTIONS as interruption:
            self._finish(tracking, trial, f"killed ({_interruption(interruption)})", "KILLED")
            raise
        except BaseException:
            self._finish(tracking, trial, "failed", "FAILED")
            raise
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        value = self.score(torch.tensor([agent.final_validation_score for agent in result.summary.agents]))
        self._finish(tracking, trial, "complete", "FINISHED", value)
        return value

    @staticmethod
    def _finish(tracking: Tracking, trial: Trial, state: str, status: str, value: float | None = None) -> None:
        """Log the trial's end; its runs get the state as a tag, the objective, and ``status``."""
        log.info(f"trial {trial.number}: {state}" + ("" if value is None else f", objective {value:.4f}"))
        if tracking.run is not None:
            tracking.run.set_tags({Tag.OPTUNA_STATE: state.split(" ")[0]})
            if value is not None:
                tracking.run.log_metrics({"tune/objective": value})
            tracking.finish(status)


def _interruption(error: BaseException) -> str:
    return "SIGTERM" if isinstance(error, Terminated) else "Ctrl-C"


def best_overrides(study: optuna.Study) -> list[str]:
    """The best trial's parameters as ``-S key=value`` arguments of ``dvc exp run``."""
    finished = [trial for trial in study.trials if trial.state == TrialState.COMPLETE]
    if not finished:
        raise LookupError(f"study '{study.study_name}' has no completed trial yet")
    best = study.best_trial
    return [
        f"-S {key}={value!r}" if isinstance(value, float) else f"-S {key}={value}" for key, value in best.params.items()
    ]
