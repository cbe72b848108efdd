"""``reservoir-dqn tune``: hyperparameter search with Optuna, by any number of workers on any number of machines.

The search space, objective, sampler and pruner are the ``tune`` section of params.yaml.
Workers share one study through Optuna's relational storage: an embedded SQLite file by
default, ``postgresql://...`` for workers on many machines, each started as

    reservoir-dqn tune --storage postgresql://... --study NAME

Each trial is a real training run of this package (every agent of ``train.seeds``, with
the trial's overrides and ``tune.overrides``, the tuning budget). After each periodic
validation it reports the agents' mean (or IQM) validation score, and Optuna's median
pruner stops hopeless trials. The objective is that score of the final networks, on the
validation seeds; the test seeds are never seen. A worker that dies mid-trial stops
sending heartbeats; after ``tune.grace_s`` another worker marks the trial failed and
re-queues it (Optuna's ``RetryFailedTrialCallback``). ``reservoir-dqn tune --best`` writes
the best trial's parameters as ``-S key=value`` arguments for ``dvc exp run``, so the
normal pipeline reproduces and compares the winner with its full budget.

**Tracking.** A study has its own MLflow experiment, ``reservoir-dqn/tune/<study>``
(:func:`study_experiment`), so that the environment's experiment holds the pipeline's runs
only. In it, the study's run (``tune: <study>``) has Optuna's figures, and every trial is
its child run, tagged with the study and the trial number and named by its values
(:func:`trial_name`: ``trial 7: lr=3e-4, gamma=0.97``).

**Final statuses.** A trial's run ends FINISHED (complete or pruned), FAILED (an error, or an
invalid combination of values) or KILLED (Ctrl-C or SIGTERM in its worker, or a worker that
died, seen through its stale heartbeats). Optuna fails a trial stopped by Ctrl-C, a
deliberate stop; a trial stopped by SIGTERM (what schedulers send to preempt) is left to
the heartbeats, as a dead worker's: once ``tune.grace_s`` passed, the next worker to start
a trial re-queues it with the same values.

The study's run is shared by every worker, and its status says whether the study is being
worked on, then how the work ended: each worker sets it RUNNING when it starts and at the
start of every trial, and, when it ends, sets it to its own outcome (FINISHED when the study
reached ``tune.trials``, KILLED on Ctrl-C or SIGTERM, FAILED on an error) unless another
worker still runs a trial, in which case it leaves the run RUNNING for that worker to end.
So the last worker to end decides, and the run is RUNNING whenever a trial trains. The
limits: two workers ending at the same moment both decide (the later write stands); a
worker killed by SIGKILL writes nothing, and its trial counts as running until its
heartbeats are ``tune.grace_s`` old, so a worker ending before then leaves the run RUNNING,
until a worker joins the study again and ends.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import optuna
import torch
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, Trial, TrialState

from reservoir_dqn.commands import StageFailed, connect_tracking, run_stage
from reservoir_dqn.config import (
    TUNE_SEED_BASE,
    Config,
    ConfigError,
    TuneConfig,
    add_config_arguments,
    config_from_args,
    load_config,
)
from reservoir_dqn.config.sections import SearchDimension
from reservoir_dqn.envs import profile
from reservoir_dqn.errors import first_line
from reservoir_dqn.files import write_text
from reservoir_dqn.process import Terminated, exit_process
from reservoir_dqn.session import start
from reservoir_dqn.statistics import iqm
from reservoir_dqn.tracking import Tracking
from reservoir_dqn.tracking.naming import RUN_KIND, RunKind
from reservoir_dqn.tracking.outcomes import describe_experiment
from reservoir_dqn.tracking.store import EXPERIMENT_PREFIX, Store, project_root, with_postgres_driver
from reservoir_dqn.tracking.study import (
    STUDY_TAG,
    end_trial_runs,
    mark_running,
    record_invalid_trial,
    study_run,
    study_run_status,
)
from reservoir_dqn.training import train

log = logging.getLogger(__name__)
TABLE_RACE_ATTEMPTS = 5
TRIAL_TAG = "optuna_trial"
RUN_ATTRIBUTE = "mlflow_run_id"
INTERRUPTIONS = (KeyboardInterrupt, Terminated)  # Ctrl-C and SIGTERM: the runs end KILLED


def study_experiment(study: str) -> str:
    """The study's own MLflow experiment: its trials stay out of the environment's (the pipeline's runs)."""
    return f"{EXPERIMENT_PREFIX}/tune/{study}"


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


def storage_url(configured: str, root: Path) -> str:
    """``--storage``/``tune.storage``, else the embedded ``sqlite:///<root>/optuna.db``."""
    return configured or f"sqlite:///{root / 'optuna.db'}"


# What losing the race to create Optuna's tables looks like: PostgreSQL, then SQLite.
RACE_SIGNS = ("duplicate key", "already exists", "unique constraint failed", "database is locked")


def open_storage(url: str, settings: TuneConfig, store: Store | None = None) -> RDBStorage:
    """Optuna's RDB storage with heartbeats and retries of failed trials; one line when it cannot be reached.

    Workers that start together on a fresh database race to create Optuna's tables; the
    losers see a duplicate-key error and simply try again.
    """
    for attempt in range(TABLE_RACE_ATTEMPTS):
        try:
            storage = RDBStorage(
                with_postgres_driver(url),
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=settings.heartbeat_s,
                grace_period=settings.grace_s,
                heartbeat_stale_trial_callback=_retry(settings.retries, store),
            )
            storage.get_all_studies()  # a real round trip
            return storage
        except Exception as error:  # noqa: BLE001 - any failure here means "this storage cannot be used"
            racing = any(sign in str(error).lower() for sign in RACE_SIGNS)
            if not racing or attempt == TABLE_RACE_ATTEMPTS - 1:
                raise StageFailed(f"Optuna storage {_safe(url)} cannot be reached ({first_line(error)})") from None
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _safe(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{credentials.split(':')[0]}{':***' if ':' in credentials else ''}{at}{host}" if at else url


def _retry(retries: int, store: Store | None) -> Callable[[optuna.Study, FrozenTrial], None]:
    """Re-queue a trial whose worker died, and mark its MLflow run killed."""
    retry = RetryHeartbeatStaleTrialCallback(max_retry=retries)

    def stale(study: optuna.Study, trial: FrozenTrial) -> None:
        log.info(f"trial {trial.number}: its worker stopped sending heartbeats; re-queued for another worker")
        retry(study, trial)
        run_id = trial.user_attrs.get(RUN_ATTRIBUTE)
        if store is not None and run_id:
            end_trial_runs(store, run_id, "KILLED")

    return stale


def make_study(storage: RDBStorage, name: str, settings: TuneConfig) -> optuna.Study:
    sampler: optuna.samplers.BaseSampler
    if settings.sampler == "tpe":
        # The constant liar: parallel workers do not propose the point a running trial explores.
        sampler = optuna.samplers.TPESampler(n_startup_trials=settings.startup_trials, constant_liar=True)
    else:
        sampler = optuna.samplers.RandomSampler()
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    if settings.pruner == "median":
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=settings.startup_trials, n_warmup_steps=settings.warmup_validations
        )
    return optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction="maximize", load_if_exists=True
    )


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

    def __init__(self, params: Path, overrides: Sequence[str], config: Config, store: Store | None, parent: str | None):
        self.params, self.overrides, self.config = params, list(overrides), config
        self.store, self.parent = store, parent
        self.workdir = Path(tempfile.mkdtemp(prefix="reservoir-dqn-tune-"))
        self.numbers: set[int] = set()  # the trials this worker ran

    def score(self, scores: torch.Tensor) -> float:
        values = [float(value) for value in scores]
        return iqm(values) if self.config.tune.objective == "score_iqm" else sum(values) / len(values)

    def __call__(self, trial: Trial) -> float:
        self.numbers.add(trial.number)
        if self.store is not None and self.parent is not None:  # a worker may have ended it meanwhile
            mark_running(self.store, self.parent)
        suggested = suggest(trial, self.config.tune)
        space = self.config.tune.space
        name = trial_name(trial.number, {key: trial.params[key] for key in space}, space)
        tags = {STUDY_TAG: trial.study.study_name, TRIAL_TAG: str(trial.number), RUN_KIND: RunKind.TRIAL}
        try:
            config = load_config(self.params, [*self.overrides, *self.config.tune.overrides, *suggested])
        except ConfigError as error:
            log.info(f"trial {trial.number}: {', '.join(suggested)}: pruned, an invalid combination ({error})")
            if self.store is not None:
                record_invalid_trial(self.store, name, tags, self.parent, str(error))
            raise optuna.TrialPruned(str(error)) from None
        # Trial n trains with master seed TUNE_SEED_BASE + n: its agents never replay the pipeline's (seeds
        # below TUNE_SEED_BASE). Set after validation, which keeps params.yaml's seed below that range.
        config = config.model_copy(update={"seed": TUNE_SEED_BASE + trial.number})
        folder = self.workdir / f"trial-{trial.number}"
        log.info(f"trial {trial.number}: {', '.join(suggested)}")
        tracking = Tracking(config, self.store, project_root())
        run_ids = tracking.start_training({}, parent_of=self.parent, tags=tags, name=name) if self.store else {}
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
            tracking.run.set_tags({"optuna_state": state.split(" ")[0]})
            if value is not None:
                tracking.run.log_metrics({"tune/objective": value})
            tracking.finish(status)


def _interruption(error: BaseException) -> str:
    return "SIGTERM" if isinstance(error, Terminated) else "Ctrl-C"


def best_overrides(study: optuna.Study) -> list[str]:
    """The best trial's parameters as ``-S key=value`` arguments of ``dvc exp run``."""
    finished = [trial for trial in study.trials if trial.state == TrialState.COMPLETE]
    if not finished:
        raise StageFailed(f"study '{study.study_name}' has no completed trial yet")
    best = study.best_trial
    return [
        f"-S {key}={value!r}" if isinstance(value, float) else f"-S {key}={value}" for key, value in best.params.items()
    ]


def run(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="reservoir-dqn tune", description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--storage", help="Optuna storage URL (default: tune.storage, else sqlite:///<root>/optuna.db)")
    parser.add_argument("--study", help="study name (default: tune.study)")
    parser.add_argument(
        "--best", action="store_true", help="write the best trial's params for `dvc exp run`, then stop"
    )
    parser.add_argument("--output", type=Path, default=Path("tune-best.args"), help="where --best writes them")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=ExperimentalWarning)  # heartbeats, the matplotlib figures
    config = config_from_args(args)
    env_profile = profile(config.env)  # an unknown or unsupported environment is refused before any trial
    root = project_root()
    url = storage_url(args.storage or config.tune.storage, root)
    name = args.study or config.tune.study
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial comes from here instead
    if args.best:
        storage = open_storage(url, config.tune)
        study = optuna.load_study(study_name=name, storage=storage)
        overrides = best_overrides(study)
        write_text(args.output, " ".join(overrides) + "\n")
        print(f"best of {len(study.trials)} trials: trial {study.best_trial.number}, objective {study.best_value:.4f}")
        print(f"wrote {args.output}; reproduce it with the full budget: .venv/bin/dvc exp run $(cat {args.output})")
        return
    tracking = connect_tracking(config, study_experiment(name))
    describe_experiment(tracking, [metric.name for metric in env_profile.headline])
    storage = open_storage(url, config.tune, tracking.store)
    study = make_study(storage, name, config.tune)
    parent = study_run(tracking.store, name, _safe(url)) if tracking.store is not None else None
    objective = Objective(args.params, args.overrides, config, tracking.store, parent)
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    with study_run_status(tracking.store, parent, study, objective.numbers):
        try:
            study.optimize(objective, callbacks=[MaxTrialsCallback(config.tune.trials, states=done)], catch=())
        finally:
            shutil.rmtree(objective.workdir, ignore_errors=True)
    counts = {state.name.lower(): len(study.get_trials(states=(state,))) for state in TrialState}
    print(f"study {name}: " + ", ".join(f"{count} {state}" for state, count in counts.items() if count))


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)


if __name__ == "__main__":
    exit_process(main())
