"""The plain-files backend: a pipeline execution's runs as folders of JSON and CSV, for a machine without MLflow.

``tracking.backend: files`` records what the MLflow backend records, in the same shape, under
``<root>/file-runs/<parent id>/``:

- ``run.json``: the parent run's name, description, status, params, tags and metrics (the
  evaluation's aggregates, named as in ``metrics/summary.json``), and its child runs, one per
  agent, with their names, statuses and tags;
- ``curves/seed-<k>.csv``: each agent's training curves (``step``, ``key``, ``value``; the keys
  MLflow shows, ``validation/score``);
- ``artifacts/``: what the stages publish (the evaluation files, the figures, the ONNX policy
  and its model release, ``model.json``: the model card, the file's digest, the input example).

Everything is plain text a reader opens with any tool; there is no model registry (``promote``
needs MLflow) and no outbox (a write to a local folder either works or fails the stage). The
stages use it through the same :class:`~reservoir_dqn.tracking.Tracking` as the MLflow backend.
"""

from __future__ import annotations

import csv
import json
import shutil
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reservoir_dqn.common.files import write_json
from reservoir_dqn.common.metrics import Record
from reservoir_dqn.tracking.naming import RUN_KIND, RunKind, Tag

FOLDER = "file-runs"  # under the tracking root


@dataclass(frozen=True)
class RunInfo:
    """What :class:`~reservoir_dqn.tracking.Tracking` reads of a run: its name and status."""

    run_name: str
    status: str


class FileRun:
    """The parent run and the per-agent child runs of one pipeline execution, as files under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()

    @property
    def parent_id(self) -> str:
        return self.folder.name

    @property
    def child_ids(self) -> list[str]:
        return list(self._read()["children"])

    @property
    def run_ids(self) -> dict[str, str]:
        """What the training metrics record: ``parent`` and ``seed-<k>``."""
        return {"parent": self.parent_id, **{f"seed-{index}": run for index, run in enumerate(self.child_ids)}}

    @classmethod
    def create(
        cls, root: Path, name: str, description: str, tags: Mapping[str, str], agents: int, parent_of: str | None
    ) -> FileRun:
        """A new parent run named ``name`` and one child run per agent."""
        parent = uuid.uuid4().hex
        run = cls(root / FOLDER / parent)
        children = {
            f"{parent}-seed-{index}": {
                "name": f"{name} · seed {index}",
                "status": "RUNNING",
                "tags": {**tags, RUN_KIND: RunKind.AGENT, Tag.SEED_INDEX: str(index)},
            }
            for index in range(agents)
        }
        record = {
            "name": name,
            "description": description,
            "status": "RUNNING",
            "parent_of": parent_of,
            "tags": {RUN_KIND: RunKind.PIPELINE, **tags},
            "params": {},
            "metrics": {},
            "children": children,
        }
        run.folder.mkdir(parents=True)
        write_json(run.folder / "run.json", record)
        return run

    @classmethod
    def existing(cls, root: Path, run_ids: Mapping[str, str]) -> FileRun | None:
        """The runs an earlier stage of this pipeline execution created, if their folder is still there."""
        parent = run_ids.get("parent", "")
        folder = root / FOLDER / parent
        return cls(folder) if parent and (folder / "run.json").is_file() else None

    def _read(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.folder / "run.json").read_text(encoding="utf-8"))
        return data

    def _update(self, **changes: Any) -> None:
        with self._lock:
            record = self._read()
            for key, value in changes.items():
                record[key] = {**record[key], **value} if isinstance(record.get(key), dict) else value
            write_json(self.folder / "run.json", record)

    def info(self) -> RunInfo:
        record = self._read()
        return RunInfo(record["name"], record["status"])

    def set_status(self, status: str) -> None:
        """The parent's status and its children's: RUNNING while a stage works, then FINISHED, FAILED or KILLED."""
        children = {child: {**values, "status": status} for child, values in self._read()["children"].items()}
        self._update(status=status, children=children)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._update(params=dict(params))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._update(tags=dict(tags))

    def tag(self, name: str) -> str | None:
        value = self._read()["tags"].get(name)
        return None if value is None else str(value)

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        self._update(metrics={key: float(value) for key, value in metrics.items()})

    def publish(
        self, artifacts: Sequence[tuple[Path, str | None]] = (), model: Mapping[str, Any] | None = None
    ) -> bool:
        """Copy artifacts (a file, or a folder's files) under ``artifacts/``; a model release beside them."""
        for path, to in artifacts:
            target = self.folder / "artifacts" / (to or "")
            target.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                shutil.copytree(path, target / path.name if to is None else target, dirs_exist_ok=True)
            else:
                shutil.copy2(path, target / path.name)
        if model is not None:  # the release (card, digest, input example) beside the ONNX file published with it
            (self.folder / "artifacts").mkdir(exist_ok=True)
            write_json(self.folder / "artifacts" / "model.json", dict(model))
        return True

    def catch_up(self) -> int:
        """Nothing is ever pending: a local write either works or fails the stage."""
        return 0

    def sink(self, resumed_from: int | None = None) -> FileCurveSink:
        return FileCurveSink(self, resumed_from)


class FileCurveSink:
    """The training curves of each agent's child run, one CSV per agent (``step``, ``key``, ``value``).

    On resume, the points logged after the checkpoint (by the process that stopped) are dropped
    first, so the files match an uninterrupted run's, as the CSV training log does.
    """

    def __init__(self, run: FileRun, resumed_from: int | None = None) -> None:
        self.run = run
        self.agents = len(run.child_ids)  # read once: run.json is read from disk
        self.folder = run.folder / "curves"
        self.folder.mkdir(exist_ok=True)
        if resumed_from is not None:
            for path in self.folder.glob("seed-*.csv"):
                rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
                with path.open("w", newline="", encoding="utf-8") as file:
                    csv.writer(file).writerows([rows[0], *(row for row in rows[1:] if int(row[0]) <= resumed_from)])

    def emit(self, records: Sequence[Record], histograms: Sequence[torch.Tensor]) -> None:
        rows: dict[int, list[tuple[int, str, float]]] = {}
        for record in records:
            for agent, row in record.rows:
                for index in range(self.agents) if agent is None else [agent]:
                    rows.setdefault(index, []).extend(
                        (record.step, record.group.key(field), value) for field, value in row.items()
                    )
        for index, values in rows.items():
            path = self.folder / f"seed-{index}.csv"
            new = not path.exists()
            with path.open("a", newline="", encoding="utf-8") as file:
                writer = csv.writer(file)
                if new:
                    writer.writerow(["step", "key", "value"])
                writer.writerows(values)

    def close(self) -> None:
        return None
