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
re-queues it (Optuna's ``RetryFailedTrialCallback``). Every trial is an MLflow run, a
child of the study's run, tagged with the study and the trial number; the study's run
gets Optuna's figures. ``reservoir-dqn tune --best`` writes the best trial's parameters as
``-S key=value`` arguments for ``dvc exp run``, so the normal pipeline reproduces and
compares the winner with its full budget.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
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

from reservoir_dqn.config import (
    TUNE_SEED_BASE,
    Config,
    ConfigError,
    TuneConfig,
    add_config_arguments,
    config_from_args,
    load_config,
)
from reservoir_dqn.errors import first_line
from reservoir_dqn.files import write_text
from reservoir_dqn.metrics import Sink
from reservoir_dqn.process import exit_process
from reservoir_dqn.session import start
from reservoir_dqn.stages import StageFailed, connect_tracking, run_stage
from reservoir_dqn.statistics import iqm
from reservoir_dqn.tracking import Tracking
from reservoir_dqn.tracking.sinks import CsvSink, MlflowSink
from reservoir_dqn.tracking.store import Store, project_root, retrying
from reservoir_dqn.training import train

log = logging.getLogger(__name__)
STUDY_TAG = "optuna_study"
TABLE_RACE_ATTEMPTS = 5
TRIAL_TAG = "optuna_trial"
RUN_ATTRIBUTE = "mlflow_run_id"


def storage_url(configured: str, root: Path) -> str:
    """``--storage``/``tune.storage``, else the embedded ``sqlite:///<root>/optuna.db``."""
    return configured or f"sqlite:///{root / 'optuna.db'}"


def _engine_url(url: str) -> str:
    """``postgresql://`` means the installed driver, psycopg2 (SQLAlchemy 2.1 would otherwise look for psycopg 3)."""
    return "postgresql+psycopg2://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


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
                _engine_url(url),
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
            retrying(store.client.set_terminated, run_id, status="KILLED")

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


def study_run(store: Store, study: str, storage: str) -> str:
    """The MLflow run of the study, created by the first worker (the oldest one wins a race; the others drop theirs)."""
    query = f"tags.{STUDY_TAG} = '{study}' and tags.run_kind = 'study'"

    def existing() -> list[Any]:
        runs = retrying(store.client.search_runs, [store.experiment_id], filter_string=query)
        return sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))

    found = existing()
    if found:
        return str(found[0].info.run_id)
    tags = {STUDY_TAG: study, "run_kind": "study", "optuna_storage": _safe(storage)}
    mine = retrying(store.client.create_run, store.experiment_id, run_name=f"tune: {study}", tags=tags)
    winner = existing()[0].info.run_id
    if winner != mine.info.run_id:
        retrying(store.client.delete_run, mine.info.run_id)
    return str(winner)


class Objective:
    """One trial: a training run with the trial's overrides, reporting its validation score for pruning."""

    def __init__(self, params: Path, overrides: Sequence[str], config: Config, store: Store | None, parent: str | None):
        self.params, self.overrides, self.config = params, list(overrides), config
        self.store, self.parent = store, parent
        self.workdir = Path(tempfile.mkdtemp(prefix="reservoir-dqn-tune-"))

    def score(self, scores: torch.Tensor) -> float:
        values = [float(value) for value in scores]
        return iqm(values) if self.config.tune.objective == "score_iqm" else sum(values) / len(values)

    def __call__(self, trial: Trial) -> float:
        suggested = suggest(trial, self.config.tune)
        name = f"trial {trial.number}: " + ", ".join(override.split(".")[-1] for override in suggested)
        tags = {STUDY_TAG: trial.study.study_name, TRIAL_TAG: str(trial.number), "run_kind": "trial"}
        try:
            config = load_config(self.params, [*self.overrides, *self.config.tune.overrides, *suggested])
        except ConfigError as error:
            log.info(f"trial {trial.number}: {', '.join(suggested)}: pruned, an invalid combination ({error})")
            if self.store is not None:
                note = {"mlflow.note.content": f"Invalid combination: {error}", "optuna_state": "invalid"}
                run = retrying(
                    self.store.client.create_run,
                    self.store.experiment_id,
                    run_name=name,
                    tags={**tags, **note, "mlflow.parentRunId": self.parent or ""},
                )
                retrying(self.store.client.set_terminated, run.info.run_id, status="FAILED")
            raise optuna.TrialPruned(str(error)) from None
        # Trial n trains with master seed TUNE_SEED_BASE + n: its agents never replay the pipeline's (seeds
        # below TUNE_SEED_BASE). Set after validation, which keeps params.yaml's seed below that range.
        config = config.model_copy(update={"seed": TUNE_SEED_BASE + trial.number})
        folder = self.workdir / f"trial-{trial.number}"
        tracking = Tracking(config, self.store, project_root())
        run_ids = tracking.start_training({}, parent_of=self.parent, tags=tags, name=name) if self.store else {}
        if run_ids:
            trial.set_user_attr(RUN_ATTRIBUTE, run_ids["parent"])
        session = start(config, None)  # a trial never resumes: no checkpoints
        sinks: list[Sink] = [CsvSink(folder / "log", session.metric_groups)]
        if tracking.run is not None:
            sinks.append(MlflowSink(tracking.run))
        log.info(f"trial {trial.number}: {', '.join(suggested)}")

        validations = itertools.count()  # the pruner's steps: warmup_validations counts these

        def report(frames: int, scores: torch.Tensor) -> None:
            trial.report(self.score(scores), next(validations))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at {frames:,} frames")

        try:
            result = train(session, sinks, on_validation=report)
        except optuna.TrialPruned as pruned:
            self._finish(tracking, trial, f"pruned ({pruned})", None)
            raise
        except BaseException:
            self._finish(tracking, trial, "failed", None)
            raise
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        value = self.score(torch.tensor([agent["final_validation_score"] for agent in result.summary["agents"]]))
        self._finish(tracking, trial, "complete", value)
        return value

    @staticmethod
    def _finish(tracking: Tracking, trial: Trial, state: str, value: float | None) -> None:
        log.info(f"trial {trial.number}: {state}" + ("" if value is None else f", objective {value:.4f}"))
        if tracking.run is not None:
            tracking.run.set_tags({"optuna_state": state.split(" ")[0]})
            if value is not None:
                tracking.run.log_metrics({"tune/objective": value})
            tracking.finish("FAILED" if state == "failed" else "FINISHED")


def log_figures(store: Store, run_id: str, study: optuna.Study) -> None:
    """Optuna's optimisation history, parameter importances and parallel coordinates, on the study's run."""
    import matplotlib.pyplot as plt

    finished = [trial for trial in study.trials if trial.state == TrialState.COMPLETE]
    if not finished:
        return
    plots: dict[str, Callable[[optuna.Study], Any]] = {
        "optimization_history.png": optuna.visualization.matplotlib.plot_optimization_history,
        "parallel_coordinate.png": optuna.visualization.matplotlib.plot_parallel_coordinate,
    }
    if len(finished) >= 2:
        plots["param_importances.png"] = optuna.visualization.matplotlib.plot_param_importances
    with tempfile.TemporaryDirectory() as folder:
        for name, plot in plots.items():
            axes = plot(study)
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.set_size_inches(10, 6)
            figure.savefig(Path(folder) / name, dpi=100, bbox_inches="tight")
            plt.close(figure)
        retrying(store.client.log_artifacts, run_id, folder, "optuna")
    best = study.best_trial
    retrying(store.client.log_metric, run_id, "tune/best_objective", float(best.value or 0.0), step=len(finished))
    retrying(store.client.set_tag, run_id, "best_trial", str(best.number))


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
    tracking = connect_tracking(config)
    storage = open_storage(url, config.tune, tracking.store)
    study = make_study(storage, name, config.tune)
    parent = study_run(tracking.store, name, url) if tracking.store is not None else None
    objective = Objective(args.params, args.overrides, config, tracking.store, parent)
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    try:
        study.optimize(objective, callbacks=[MaxTrialsCallback(config.tune.trials, states=done)], catch=())
    finally:
        shutil.rmtree(objective.workdir, ignore_errors=True)
    counts = {state.name.lower(): len(study.get_trials(states=(state,))) for state in TrialState}
    if tracking.store is not None and parent is not None:
        log_figures(tracking.store, parent, study)
    print(f"study {name}: " + ", ".join(f"{count} {state}" for state, count in counts.items() if count))


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)


if __name__ == "__main__":
    exit_process(main())
