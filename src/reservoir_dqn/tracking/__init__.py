"""Experiment tracking: the runs of a pipeline execution (MLflow, or plain files), TensorBoard, the CSV training log.

A package of one concern per module: :mod:`.store` (where the MLflow store is, connecting to
it, the experiment), :mod:`.runs` (the parent and child runs of a pipeline execution in
MLflow, their curves and their outbox), :mod:`.file_runs` (the same runs as plain files: the second
backend, ``tracking.backend: files``), :mod:`.backends` (the backends by name, each registered once with
:func:`register_backend`), :mod:`.sinks` (the CSV training log, TensorBoard),
:mod:`.naming` (what a run is called, its kinds and tags) and :mod:`.registry` (the model
registry; :mod:`.champion`, its champion). :class:`Tracking`
is what a stage holds, whichever backend records the runs (a :class:`Run`): it connects
first (failing fast), then opens or joins the runs. Nothing outside this package imports
MLflow (``tests/test_house.py``).

May import: release, training, evaluation, agent, envs, config, common (``tests/test_house.py`` checks every
layer).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reservoir_dqn.common.errors import first_line
from reservoir_dqn.common.metrics import MetricGroup, Sink
from reservoir_dqn.common.process import interruption
from reservoir_dqn.config import Config
from reservoir_dqn.tracking.backends import BACKENDS, Backend, Run, RunInfo, RunsAt, register_backend
from reservoir_dqn.tracking.naming import RunIdentity, Tag, identify
from reservoir_dqn.tracking.sinks import CsvSink, TensorBoardSink
from reservoir_dqn.tracking.store import (
    Store,
    TrackingMisconfigured,
    TrackingUnavailable,
    connect,
    experiment_name,
    project_root,
    registered_model_name,
    study_experiment,
)

if TYPE_CHECKING:  # the MLflow modules are imported only once a store answered (mlflow takes a second)
    from reservoir_dqn.tracking.runs import ModelPublisher

log = logging.getLogger(__name__)


class Tracking:
    """One stage's tracking: the connected MLflow store (``None`` when off or plain files) and the pipeline's runs."""

    def __init__(self, config: Config, store: Store | None, root: Path) -> None:
        self.config = config
        self.store = store
        self.root = root
        named = BACKENDS.get(config.tracking.backend)  # a name no backend has is refused, even with tracking off
        kind = named if config.tracking.enabled else None
        # The backend that records the runs: none when tracking is off, or when its store is not connected.
        self.recorder: Backend | None = (
            kind if kind is not None and (store is not None or not kind.uses_store) else None
        )
        self.run: Run | None = None
        self.identity: RunIdentity = identify(config, root)

    @property
    def backend(self) -> str:
        """What the notices call the backend."""
        return BACKENDS.get(self.config.tracking.backend).label

    def _existing(self, run_ids: Mapping[str, str], model_logger: ModelPublisher | None) -> Run | None:
        assert self.recorder is not None
        return self.recorder.existing(RunsAt(self.root, self.store), run_ids, model_logger)

    def _create(self, name: str, tags: Mapping[str, str], parent_of: str | None) -> Run:
        assert self.recorder is not None
        description, agents = self.identity.description, self.config.train.seeds
        return self.recorder.create(RunsAt(self.root, self.store), name, description, tags, agents, parent_of)

    @classmethod
    def connect(cls, config: Config, experiment: str | None = None) -> Tracking:
        """Check the store answers (within ``tracking.connect_timeout_s``) before any real work.

        :param experiment: the MLflow experiment, instead of the environment's.
        """
        root = project_root()
        kind = BACKENDS.get(config.tracking.backend) if config.tracking.enabled else None  # off: __init__ checks it
        store = connect(config, root, experiment) if kind is not None and kind.uses_store else None
        return cls(config, store, root)

    def for_config(self, config: Config) -> Tracking:
        """The tracking of another configuration over the same connection (a tuning trial's)."""
        return Tracking(config, self.store, self.root)

    def start_training(
        self,
        run_ids: dict[str, str],
        parent_of: str | None = None,
        tags: dict[str, str] | None = None,
        name: str | None = None,
    ) -> dict[str, str]:
        """The training's runs: those of ``run_ids`` when resuming and they still exist, else new ones.

        A checkpoint whose runs carry another name (a finished training continued with a larger
        ``train.total_frames``, whose checkpoints it shares) gets new runs, named for what this one
        trains: a run's name always says what trained it. The earlier runs keep their status, or
        end ``KILLED`` when their process was killed while they ran.

        :param parent_of: make the pipeline's run a child of this run (a tuning study's).
        :param tags: more tags for the new runs.
        :param name: the run's name, instead of what changed against the baseline.
        """
        if self.recorder is None:
            return {}
        self.run = self._existing(run_ids, None) if run_ids else None
        continued = None
        if self.run is not None and (info := self.run.info()).run_name != (name or self.identity.name):
            continued, self.run = self.run, None
            if info.status == "RUNNING":  # its process was killed before it could say so
                continued.set_status("KILLED")
        if self.run is not None:
            self.run.set_status("RUNNING")
            log.info(f"{self.backend}: continuing run {self.run.parent_id} ({self.identity.name})")
        else:
            self.run = self._create(
                name or self.identity.name,
                {
                    **self.identity.tags(self.config),
                    **(tags or {}),
                    **({Tag.CONTINUES_RUN: continued.parent_id} if continued is not None else {}),
                },
                parent_of,
            )
            self.run.log_params(self.config.flat())
            log.info(f"{self.backend}: run {self.run.parent_id} ({self.identity.name})")
        self.run.catch_up()
        return self.run.run_ids

    def attach(self, run_ids: dict[str, str], model_logger: ModelPublisher | None = None) -> None:
        """Join the runs that training created (evaluate, plot and export).

        :param model_logger: what publishes a model release (the export stage's registry).
        """
        if self.recorder is None:
            return
        self.run = self._existing(run_ids, model_logger)
        if self.run is None:
            log.warning(f"{self.backend}: the training run is unknown to this store; this stage is not tracked")
            return
        self.run.set_status("RUNNING")
        self.run.catch_up()

    def find(self, run_ids: Mapping[str, str]) -> Run | None:
        """The runs of ``run_ids`` as they are (no status changes), to annotate; ``None`` when not tracked here."""
        return None if self.recorder is None or not run_ids else self._existing(run_ids, None)

    def tensorboard_dir(self, run_ids: dict[str, str]) -> Path:
        """``<root>/runs/<env>/<run name> [<id>]``: readable, and unique per pipeline execution."""
        tag = run_ids.get("parent", "")[:8] or os.environ.get("DVC_EXP_NAME") or "workspace"
        return self.root / "runs" / self.config.env.name / f"{self.identity.name} [{tag}]"

    def training_sinks(
        self,
        log_folder: Path,
        groups: Sequence[MetricGroup],
        resumed_from: int | None = None,
        *,
        tensorboard: bool = True,
    ) -> list[Sink]:
        """The CSV training log, TensorBoard (when on, and wanted) and the runs' backend (when tracking).

        :param tensorboard: ``False``: no TensorBoard folder (a tuning trial's curves are its MLflow run's).
        """
        sinks: list[Sink] = [CsvSink(log_folder, groups, resumed_from)]
        ids = self.run.run_ids if self.run is not None else {}
        if tensorboard and self.config.tracking.tensorboard:
            sinks.append(TensorBoardSink(self.tensorboard_dir(ids), self.config.train.seeds, env=self.config.env.name))
        if self.run is not None:
            sinks.append(self.run.sink(resumed_from))
        return sinks

    def publish(
        self, artifacts: Sequence[tuple[Path, str | None]] = (), model: Mapping[str, Any] | None = None
    ) -> None:
        """Upload artifacts (and a model release) to the parent run; what fails waits in the outbox."""
        if self.run is not None:
            self.run.publish(artifacts, model)

    def finish(self, status: str = "FINISHED") -> None:
        if self.run is not None:
            self.run.set_status(status)

    @contextlib.contextmanager
    def finishing(self) -> Iterator[Tracking]:
        """The runs end ``FINISHED`` after the block, ``KILLED`` when SIGINT or SIGTERM interrupts it, ``FAILED`` else.

        No run is left ``RUNNING``. A store that fails while a failure is being reported is
        only warned about: the stage's own error is what the user must read.
        """
        try:
            yield self
        except BaseException as error:
            status = "KILLED" if interruption(error) is not None else "FAILED"
            try:
                self.finish(status)
            except Exception as tracking_error:  # noqa: BLE001 - keep the stage's own error
                log.warning(f"{self.backend}: could not mark the runs {status} ({first_line(tracking_error)})")
            raise
        self.finish()


__all__ = [
    "BACKENDS",
    "Backend",
    "Run",
    "RunInfo",
    "Tracking",
    "TrackingMisconfigured",
    "TrackingUnavailable",
    "experiment_name",
    "project_root",
    "register_backend",
    "registered_model_name",
    "study_experiment",
]
