"""Experiment tracking: MLflow runs and registry, TensorBoard, the CSV training log.

A package of one concern per module: :mod:`.store` (where the store is, connecting to it,
the experiment), :mod:`.runs` (the parent and child runs of a pipeline execution and their
outbox), :mod:`.sinks` (CSV, TensorBoard, MLflow), :mod:`.naming` (what a run is called) and
:mod:`.registry` (the model registry and its champion). :class:`Tracking` is what a stage
holds: it connects first (failing fast), then opens or joins the runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reservoir_dqn.config import Config
from reservoir_dqn.errors import first_line
from reservoir_dqn.metrics import MetricGroup, Sink
from reservoir_dqn.process import interruption
from reservoir_dqn.tracking.naming import RunIdentity, identify
from reservoir_dqn.tracking.sinks import CsvSink, MlflowSink, TensorBoardSink
from reservoir_dqn.tracking.store import (
    Store,
    TrackingMisconfigured,
    TrackingUnavailable,
    connect,
    experiment_name,
    project_root,
    registered_model_name,
)

if TYPE_CHECKING:  # the MLflow modules are imported only once a store answered (mlflow takes a second)
    from reservoir_dqn.tracking.runs import ModelPublisher, PipelineRun

log = logging.getLogger(__name__)


class Tracking:
    """One stage's tracking: the connected store (``None`` when tracking is off) and the pipeline's runs."""

    def __init__(self, config: Config, store: Store | None, root: Path) -> None:
        self.config = config
        self.store = store
        self.root = root
        self.run: PipelineRun | None = None
        self.identity: RunIdentity = identify(config, root)

    @classmethod
    def connect(cls, config: Config, experiment: str | None = None) -> Tracking:
        """Check the store answers (within ``tracking.connect_timeout_s``) before any real work.

        :param experiment: the MLflow experiment, instead of the environment's.
        """
        root = project_root()
        return cls(config, connect(config, root, experiment), root)

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
        if self.store is None:
            return {}
        from reservoir_dqn.tracking.runs import PipelineRun

        self.run = PipelineRun.existing(self.store, run_ids, None) if run_ids else None
        continued = None
        if self.run is not None and (info := self.run.info()).run_name != (name or self.identity.name):
            continued, self.run = self.run, None
            if info.status == "RUNNING":  # its process was killed before it could say so
                continued.set_status("KILLED")
        if self.run is not None:
            self.run.set_status("RUNNING")
            log.info(f"MLflow: continuing run {self.run.parent_id} ({self.identity.name})")
        else:
            self.run = PipelineRun.create(
                self.store,
                name or self.identity.name,
                self.identity.description,
                {
                    **self.identity.tags(self.config),
                    **(tags or {}),
                    **({"continues_run": continued.parent_id} if continued is not None else {}),
                },
                self.config.train.seeds,
                None,
                parent_of,
            )
            self.run.log_params(self.config.flat())
            log.info(f"MLflow: run {self.run.parent_id} ({self.identity.name})")
        self.run.catch_up()
        return self.run.run_ids

    def attach(self, run_ids: dict[str, str], model_logger: ModelPublisher | None = None) -> None:
        """Join the runs that training created (evaluate, plot and export).

        :param model_logger: what publishes a model release (the export stage's registry).
        """
        if self.store is None:
            return
        from reservoir_dqn.tracking.runs import PipelineRun

        self.run = PipelineRun.existing(self.store, run_ids, model_logger)
        if self.run is None:
            log.warning("MLflow: the training run is unknown to this store; this stage is not tracked")
            return
        self.run.set_status("RUNNING")
        self.run.catch_up()

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
        """The CSV training log, TensorBoard (when on, and wanted) and MLflow (when connected).

        :param tensorboard: ``False``: no TensorBoard folder (a tuning trial's curves are its MLflow run's).
        """
        sinks: list[Sink] = [CsvSink(log_folder, groups, resumed_from)]
        ids = self.run.run_ids if self.run is not None else {}
        if tensorboard and self.config.tracking.tensorboard:
            sinks.append(TensorBoardSink(self.tensorboard_dir(ids), self.config.train.seeds, env=self.config.env.name))
        if self.run is not None:
            sinks.append(MlflowSink(self.run))
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
                log.warning(f"MLflow: could not mark the runs {status} ({first_line(tracking_error)})")
            raise
        self.finish()


__all__ = [
    "Tracking",
    "TrackingMisconfigured",
    "TrackingUnavailable",
    "experiment_name",
    "project_root",
    "registered_model_name",
]
