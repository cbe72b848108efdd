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
(:func:`reservoir_dqn.commands.tuning.objective.trial_name`: ``trial 7: lr=3e-4, gamma=0.97``).

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
import logging
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from reservoir_dqn.commands.plumbing import StageFailed, connect_tracking, run_stage
from reservoir_dqn.commands.tuning.objective import Objective, best_overrides
from reservoir_dqn.commands.tuning.storage import StorageUnavailable, make_study, open_storage, safe_url, storage_url
from reservoir_dqn.common.files import write_text
from reservoir_dqn.common.process import exit_process
from reservoir_dqn.config import TuneConfig, add_config_arguments, config_from_args
from reservoir_dqn.envs import profile
from reservoir_dqn.tracking import project_root, study_experiment
from reservoir_dqn.tracking.outcomes import describe_experiment
from reservoir_dqn.tracking.study import StudyRuns

log = logging.getLogger(__name__)


def run(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="reservoir-dqn tune", description=__doc__.splitlines()[0])
    add_config_arguments(parser, training=True)
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
        study = optuna.load_study(study_name=name, storage=_open(url, config.tune))
        try:
            overrides = best_overrides(study)
        except LookupError as error:
            raise StageFailed(str(error)) from None
        write_text(args.output, " ".join(overrides) + "\n")
        print(f"best of {len(study.trials)} trials: trial {study.best_trial.number}, objective {study.best_value:.4f}")
        again = f".venv/bin/reservoir-dqn dvc exp run $(cat {args.output})"
        print(f"wrote {args.output}; reproduce it with the full budget: {again}")
        return
    tracking = connect_tracking(config, study_experiment(name))
    describe_experiment(tracking, [metric.name for metric in env_profile.headline])
    study_runs = StudyRuns.of(tracking)
    study = make_study(_open(url, config.tune, study_runs), name, config.tune)
    parent = study_runs.open(name, safe_url(url))
    objective = Objective(args.params, args.overrides, config, tracking, study_runs, parent)
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    with study_runs.running(parent, study, objective.numbers):
        try:
            study.optimize(objective, callbacks=[MaxTrialsCallback(config.tune.trials, states=done)], catch=())
        finally:
            shutil.rmtree(objective.workdir, ignore_errors=True)
    counts = {state.name.lower(): len(study.get_trials(states=(state,))) for state in TrialState}
    print(f"study {name}: " + ", ".join(f"{count} {state}" for state, count in counts.items() if count))


def _open(url: str, settings: TuneConfig, study_runs: StudyRuns | None = None) -> RDBStorage:
    try:
        return open_storage(url, settings, study_runs)
    except StorageUnavailable as error:
        raise StageFailed(str(error)) from None


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)


if __name__ == "__main__":
    exit_process(main())
