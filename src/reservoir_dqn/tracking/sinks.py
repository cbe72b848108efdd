"""Where the training curves go: the CSV training log and TensorBoard (the runs' backend has its own sink:
:class:`~reservoir_dqn.tracking.runs.MlflowSink`, :class:`~reservoir_dqn.tracking.file_runs.FileCurveSink`).

Every sink receives the same records (:class:`~reservoir_dqn.common.metrics.Record`: a metric group
at a step, a row per agent) and derives its names from the group: ``logs/train/<group>.csv``
with a column per field, ``<group>/<field>`` in MLflow (whose experiments are per environment)
and ``<env>/<group>/<field>`` in TensorBoard, whose charts take every run under its log
folder: with the environment first, ``tensorboard --logdir runs`` draws each environment's
curves in charts of their own, grouped under its name. Per-agent rows go to
that agent's TensorBoard run and MLflow child run; rows of a per-run group (the schedules)
go to every agent's, so each agent's curves are complete on their own.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch

from reservoir_dqn.common.metrics import MetricGroup, Record

if TYPE_CHECKING:  # TensorBoard and pandas are imported only where they are used
    import pandas as pd

ACTIONS = "policy/actions"  # TensorBoard histogram of the actions taken since the previous point
# Per-agent groups whose mean over the agents the run's own folder also gets (training.curves.VALIDATION's name): the
# run's line beside its agents', ending where the evaluate stage puts the test results (tracking.hparams).
MEAN_OVER_AGENTS = ("validation",)

log = logging.getLogger(__name__)


class CsvSink:
    """The training log: one CSV file per metric group, one row per point (and agent).

    Later stages plot it and ``dvc plots`` renders it; no row has an empty cell. On resume
    the rows written after the checkpoint are dropped, so the files match an uninterrupted run's.

    :param folder: the training-log folder (``paths.train_log``).
    :param groups: every group that can arrive; each gets its file, header only until rows come.
    :param resume_from: keep existing rows up to and including this step; ``None`` starts afresh.
    """

    def __init__(self, folder: Path, groups: Sequence[MetricGroup], resume_from: int | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        expected = {group.file for group in groups}
        for stale in folder.glob("*.csv"):  # a group this configuration does not have (another environment's)
            if stale.name not in expected:
                stale.unlink()
        self._files: dict[str, IO[str]] = {}
        self._writers: dict[str, Any] = {}
        for group in groups:
            path = folder / group.file
            kept = _rows_up_to(path, group.columns(), resume_from) if resume_from is not None else None
            file = path.open("w", newline="", encoding="utf-8")
            writer = csv.writer(file)
            writer.writerow(group.columns())
            if kept is not None:
                writer.writerows(kept.itertuples(index=False, name=None))
            file.flush()
            self._files[group.name], self._writers[group.name] = file, writer

    def emit(self, records: Sequence[Record], histograms: Sequence[torch.Tensor]) -> None:
        for record in records:
            if record.group.name not in self._writers:
                raise ValueError(f"metric group '{record.group.name}' has no training-log file")
            writer = self._writers[record.group.name]
            for agent, row in record.rows:
                seed = [] if agent is None else [agent]
                writer.writerow([record.step, *seed, *(repr(row[field]) for field in record.group.fields)])
            self._files[record.group.name].flush()

    def close(self) -> None:
        for file in self._files.values():
            file.close()


def _rows_up_to(path: Path, columns: list[str], step: int) -> pd.DataFrame | None:
    if not path.exists():
        return None
    import pandas as pd

    frame = pd.read_csv(path)
    if list(frame.columns) != columns:
        return None
    return frame[frame["frames"] <= step]


class TensorBoardSink:
    """Scalars and action histograms as TensorBoard event files, one run folder per agent (``seed-<k>``).

    Every tag starts with the environment (``reservoir/learning/td_loss``), so a chart never
    mixes two environments. The groups of :data:`MEAN_OVER_AGENTS` also go, as the mean over
    the agents that reported, to the run's own folder, where the test results follow them at
    the frames the tested networks trained for: the validation score is a line per agent and
    one for the run. The writers queue events and background threads write them, so
    logging never waits on the disk.

    :param folder: the run's folder, ``runs/<env>/<run name> [<id>]``.
    :param agents: how many agents train (a ``seed-<k>`` folder each).
    :param env: the environment, the first part of every tag; ``None``: the name of the
        folder above ``folder`` (``runs/<env>/``).
    """

    def __init__(self, folder: Path, agents: int, env: str | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = folder
        self.prefix = env or folder.parent.name
        self._writers = [
            SummaryWriter(log_dir=str(folder / f"seed-{index}"), max_queue=10_000, flush_secs=5)
            for index in range(agents)
        ]
        self._run_writer = SummaryWriter(log_dir=str(folder), max_queue=10_000, flush_secs=5)

    def emit(self, records: Sequence[Record], histograms: Sequence[torch.Tensor]) -> None:
        step = 0
        for record in records:
            step = record.step
            for agent, row in record.rows:
                targets = self._writers if agent is None else [self._writers[agent]]
                for writer in targets:
                    for field, value in row.items():
                        writer.add_scalar(self.tag(record.group.key(field)), value, global_step=record.step)
            if record.group.name in MEAN_OVER_AGENTS and record.group.per_agent and record.rows:
                for field in record.group.fields:
                    mean = sum(row[field] for _, row in record.rows) / len(record.rows)
                    self._run_writer.add_scalar(self.tag(record.group.key(field)), mean, global_step=record.step)
        for writer, actions in zip(self._writers, histograms, strict=False):
            writer.add_histogram(self.tag(ACTIONS), actions, global_step=step, bins="auto")

    def tag(self, name: str) -> str:
        """The TensorBoard tag of the metric ``name`` (its MLflow name): ``<env>/<name>``."""
        return f"{self.prefix}/{name}"

    def close(self) -> None:
        for writer in (*self._writers, self._run_writer):
            writer.close()
