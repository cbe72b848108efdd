"""A tuning study's own MLflow run: created once by the first worker, RUNNING while any worker
trains, and ended by the last worker to stop, with Optuna's figures; and the trials' runs.

Tuning reaches all of it through :class:`StudyRuns` (``StudyRuns.of(tracking)``), which does
nothing with a backend that has no store: tuning never holds a store.

The last worker decides the final status: FINISHED when it ends normally (it logs the figures
first, over every worker's trials), KILLED on Ctrl-C or SIGTERM, FAILED otherwise; while other
workers still run trials (dead workers' stale trials are failed first), the run stays RUNNING.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from reservoir_dqn.common.errors import first_line
from reservoir_dqn.common.process import Terminated
from reservoir_dqn.tracking.naming import RUN_KIND, RunKind, Tag
from reservoir_dqn.tracking.store import Store, retrying

if TYPE_CHECKING:
    from reservoir_dqn.tracking import Tracking

STUDY_TAG = Tag.OPTUNA_STUDY

log = logging.getLogger(__name__)


def study_run(store: Store, study: str, storage: str, wait_s: float = 60.0) -> str:
    """The MLflow run of the study, made once however many workers start together.

    The worker that created the study's experiment (its name is unique, so exactly one did)
    creates the run; the others wait up to ``wait_s`` for it to appear. An experiment that
    already had no study run (its run deleted, or its creator died first) leaves no such
    worker: then every worker creates one, and all but the oldest visible one are deleted
    (oldest by the clients' start times: workers on machines whose clocks differ by more than
    the time between their creations can still keep two).

    :param storage: the Optuna storage, as shown (without its password).
    """
    query = f"tags.{STUDY_TAG} = '{study}' and tags.{RUN_KIND} = '{RunKind.STUDY}'"

    def existing() -> list[Any]:
        runs = retrying(store.client.search_runs, [store.experiment_id], filter_string=query)
        return sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))

    found = existing()
    if not found and not store.created_experiment:
        deadline = time.monotonic() + wait_s
        while not found and time.monotonic() < deadline:
            time.sleep(0.5)
            found = existing()
    if found:
        return str(found[0].info.run_id)
    tags: dict[str, str] = {STUDY_TAG: study, RUN_KIND: RunKind.STUDY, Tag.OPTUNA_STORAGE: storage}
    mine = retrying(store.client.create_run, store.experiment_id, run_name=f"tune: {study}", tags=tags)
    # The oldest visible run wins, the creator's included: a worker that waited in vain (a creator
    # slower than wait_s) made one first, and both must end up with the same run.
    winner = existing()[0].info.run_id
    if winner != mine.info.run_id:
        retrying(store.client.delete_run, mine.info.run_id)
    return str(winner)


@contextlib.contextmanager
def study_run_status(store: Store | None, run_id: str | None, study: optuna.Study, own: set[int]) -> Iterator[None]:
    """The study's run is RUNNING while this worker works; its final status when it ends (see the module's docstring).

    :param own: the numbers of the trials this worker ran (an interrupted one may still be RUNNING in Optuna).
    """
    if store is None or run_id is None:
        yield
        return
    retrying(store.client.update_run, run_id, status="RUNNING")
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except (KeyboardInterrupt, Terminated):  # Ctrl-C and SIGTERM
        status = "KILLED"
        raise
    finally:
        _end_study_run(store, run_id, study, own, status)


def _end_study_run(store: Store, run_id: str, study: optuna.Study, own: set[int], status: str) -> None:
    try:
        others = others_running(study, own)
    except Exception as error:  # noqa: BLE001 - the storage failing may be why the worker ends: decide alone
        log.warning(f"study {study.study_name}: cannot see other workers' trials ({first_line(error)})")
        others = []
    if others:
        log.info(f"study {study.study_name}: trials {others} still run in other workers; its run stays RUNNING")
        return
    try:
        if status == "FINISHED":
            log_figures(store, run_id, study)
    except Exception as error:  # noqa: BLE001 - the trials are recorded: a figure that fails must not leave the run RUNNING
        log.warning(f"study {study.study_name}: its figures could not be logged ({first_line(error)})")
    try:
        retrying(store.client.set_terminated, run_id, status=status)
    except Exception as error:  # noqa: BLE001 - the tracking store failing may be why the worker ends
        log.warning(f"study {study.study_name}: its MLflow run could not be set {status} ({first_line(error)})")


def others_running(study: optuna.Study, own: set[int]) -> list[int]:
    """The trials that other workers are running; dead workers' trials (stale heartbeats) are failed first."""
    optuna.storages.fail_stale_trials(study)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return [trial.number for trial in running if trial.number not in own]


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
    retrying(store.client.set_tag, run_id, Tag.BEST_TRIAL, str(best.number))


def end_trial_runs(store: Store, run_id: str, status: str) -> None:
    """Mark a trial's run and its agents' runs ``status`` (``KILLED``: its worker stopped sending heartbeats)."""
    query = f"tags.`mlflow.parentRunId` = '{run_id}'"  # the trial's agents
    agents = retrying(store.client.search_runs, [store.experiment_id], filter_string=query)
    for run in (run_id, *(agent.info.run_id for agent in agents)):
        retrying(store.client.set_terminated, run, status=status)


def mark_running(store: Store, run_id: str) -> None:
    """Mark the study's run ``RUNNING`` again (a worker that stopped may have ended it meanwhile)."""
    retrying(store.client.update_run, run_id, status="RUNNING")


def record_invalid_trial(store: Store, name: str, tags: dict[str, str], parent: str | None, error: str) -> None:
    """A failed run for a trial whose suggested values do not validate, with the reason as its note."""
    note = {"mlflow.note.content": f"Invalid combination: {error}", Tag.OPTUNA_STATE: "invalid"}
    run = retrying(
        store.client.create_run,
        store.experiment_id,
        run_name=name,
        tags={**tags, **note, "mlflow.parentRunId": parent or ""},
    )
    retrying(store.client.set_terminated, run.info.run_id, status="FAILED")


class StudyRuns:
    """What tuning asks of tracking about a study: its own run, its status, the trials' runs (none without a store)."""

    def __init__(self, store: Store | None) -> None:
        self.store = store

    @classmethod
    def of(cls, tracking: Tracking) -> StudyRuns:
        """The study runs of a connected tracking (the study's experiment)."""
        return cls(tracking.store)

    def open(self, study: str, storage: str) -> str | None:
        """The study's own run, made once however many workers start together (:func:`study_run`)."""
        return None if self.store is None else study_run(self.store, study, storage)

    def running(
        self, run_id: str | None, study: optuna.Study, own: set[int]
    ) -> contextlib.AbstractContextManager[None]:
        """The study's run is RUNNING while this worker works, then ends as :func:`study_run_status` says."""
        return study_run_status(self.store, run_id, study, own)

    def mark_running(self, run_id: str | None) -> None:
        """The study's run RUNNING again (a worker that stopped may have ended it meanwhile)."""
        if self.store is not None and run_id is not None:
            mark_running(self.store, run_id)

    def record_invalid_trial(self, name: str, tags: dict[str, str], parent: str | None, error: str) -> None:
        """A failed run for a trial whose suggested values do not validate."""
        if self.store is not None:
            record_invalid_trial(self.store, name, tags, parent, error)

    def end_trial_runs(self, run_id: str | None, status: str) -> None:
        """A trial's runs ``status`` (``KILLED``: its worker stopped sending heartbeats)."""
        if self.store is not None and run_id:
            end_trial_runs(self.store, run_id, status)
