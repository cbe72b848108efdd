"""The MLflow runs of one pipeline execution, their training curves, and the outbox that keeps what a lost store
did not take.

One **parent run** per pipeline execution holds the params, the evaluation's aggregate
metrics with their intervals, the figures and the registered model; one **child run** per agent (seed)
holds that agent's training curves. Train creates them and records their ids in the
training metrics; evaluate, plot and export attach to the parent.

A store lost mid-run never stops training. Whatever could not be sent (metric values,
artifact uploads, the model) goes to one **outbox** per parent run, a JSON-lines file under
``<root>/.mlflow-outbox/``; it is replayed as soon as the store answers again, or by the
next stage that reaches it, and the parent is tagged ``sync_status=incomplete`` until then.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunInfo, RunTag

from reservoir_dqn.common.errors import first_line
from reservoir_dqn.tracking.naming import RUN_KIND, RunKind, Tag
from reservoir_dqn.tracking.store import Store, retrying

if TYPE_CHECKING:
    import torch

    from reservoir_dqn.common.metrics import Record

OUTBOX_FOLDER = ".mlflow-outbox"
FLUSH_SECONDS = 2.0  # the MLflow sink sends what has accumulated at least this often
BATCH_LIMIT = 1000  # MLflow accepts at most 1000 metrics per log_batch call
PARAM_LIMIT = 100  # ... and 100 params

log = logging.getLogger(__name__)

MetricValue = tuple[str, str, float, int, int]  # run id, key, value, timestamp in ms, step
ModelPublisher = Callable[["PipelineRun", Mapping[str, Any]], None]  # logs a model release (JSON) to the parent


class Outbox:
    """Operations a store did not take, one JSON line each, replayed in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def add(self, operations: Sequence[Mapping[str, Any]]) -> None:
        if not operations:
            return
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as file:
                file.writelines(json.dumps(dict(operation)) + "\n" for operation in operations)

    def take(self) -> list[dict[str, Any]]:
        """Everything waiting, removed from the file (give back what could not be done with :meth:`add`)."""
        with self._lock:
            if not self.path.exists():
                return []
            operations = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            self.path.unlink()
            return operations

    def __bool__(self) -> bool:
        return self.path.exists()


class PipelineRun:
    """The parent run and the per-agent child runs of one pipeline execution, in a connected store.

    :param model_logger: what logs and registers a model release (:mod:`reservoir_dqn.tracking.registry`),
        for outbox operations of kind ``model``; only the export stage has one. Without it such an
        operation waits in the outbox for the next export of the run.
    """

    def __init__(
        self, store: Store, parent_id: str, child_ids: Sequence[str], model_logger: ModelPublisher | None
    ) -> None:
        self.store = store
        self.parent_id = parent_id
        self.child_ids = list(child_ids)
        self.model_logger = model_logger
        self.outbox = Outbox(store.root / OUTBOX_FOLDER / f"{parent_id}.jsonl")

    @property
    def client(self) -> MlflowClient:
        return self.store.client

    @property
    def run_ids(self) -> dict[str, str]:
        """What the training metrics record: ``parent`` and ``seed-<k>``."""
        return {"parent": self.parent_id, **{f"seed-{index}": run for index, run in enumerate(self.child_ids)}}

    @classmethod
    def create(
        cls,
        store: Store,
        name: str,
        description: str,
        tags: Mapping[str, str],
        agents: int,
        model_logger: ModelPublisher | None,
        parent_of: str | None = None,
    ) -> PipelineRun:
        """A new parent run named ``name`` (itself a child of ``parent_of``, when given) and one child run per agent."""
        client = store.client
        # A tuning trial's tags say RunKind.TRIAL instead.
        parent_tags = {RUN_KIND: RunKind.PIPELINE, **tags, "mlflow.note.content": description}
        if parent_of is not None:
            parent_tags["mlflow.parentRunId"] = parent_of
        parent = retrying(client.create_run, store.experiment_id, run_name=name, tags=parent_tags)
        parent_id = parent.info.run_id
        children = []
        for index in range(agents):
            child_tags = {**tags, "mlflow.parentRunId": parent_id, RUN_KIND: RunKind.AGENT, Tag.SEED_INDEX: str(index)}
            child = retrying(client.create_run, store.experiment_id, run_name=f"{name} · seed {index}", tags=child_tags)
            children.append(child.info.run_id)
        return cls(store, parent_id, children, model_logger)

    @classmethod
    def existing(
        cls, store: Store, run_ids: Mapping[str, str], model_logger: ModelPublisher | None
    ) -> PipelineRun | None:
        """The runs a previous process of this pipeline execution created, if the store still has them."""
        parent = run_ids.get("parent")
        children = [run_ids[key] for key in sorted(run_ids, key=_seed_order) if key.startswith("seed-")]
        if not parent or not all(_exists(store, run) for run in (parent, *children)):
            return None
        return cls(store, parent, children, model_logger)

    # ------------------------------------------------------------------ sending

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [
            Param(key, json.dumps(value) if isinstance(value, (list, dict)) else str(value))
            for key, value in params.items()
        ]
        for start in range(0, len(items), PARAM_LIMIT):
            self._batch(self.parent_id, params=items[start : start + PARAM_LIMIT])

    def set_tags(self, tags: Mapping[str, str], run_id: str | None = None) -> None:
        self._batch(run_id or self.parent_id, tags=[RunTag(key, value) for key, value in tags.items()])

    def probe(self) -> None:
        """Raise unless the store answers (a cheap read of the parent run)."""
        self.client.get_run(self.parent_id)

    def tag(self, name: str) -> str | None:
        """A tag of the parent run (for example ``model_version``, which export sets)."""
        value = retrying(self.client.get_run, self.parent_id).data.tags.get(name)
        return None if value is None else str(value)

    def send_metrics(self, values: Sequence[MetricValue]) -> None:
        """Send metric values to their runs, in batches MLflow accepts."""
        by_run: dict[str, list[Metric]] = {}
        for run_id, key, value, stamp, step in values:
            by_run.setdefault(run_id, []).append(Metric(key, value, stamp, step))
        for run_id, metrics in by_run.items():
            for start in range(0, len(metrics), BATCH_LIMIT):
                self._batch(run_id, metrics=metrics[start : start + BATCH_LIMIT])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Metrics of the parent run (the evaluation's aggregates)."""
        stamp = int(time.time() * 1000)
        self.send_metrics([(self.parent_id, key, float(value), stamp, step) for key, value in metrics.items()])

    def _batch(self, run_id: str, **batch: Any) -> None:
        retrying(self.client.log_batch, run_id, synchronous=True, **batch)

    # ------------------------------------------------------------------ publishing, with the outbox

    def publish(
        self, artifacts: Sequence[tuple[Path, str | None]] = (), model: Mapping[str, Any] | None = None
    ) -> bool:
        """Upload artifacts and a model release (its file under ``onnx``) to the parent run; keep what fails in the
        outbox. True when all went."""
        operations: list[dict[str, Any]] = [{"kind": "artifact", "path": str(path), "to": to} for path, to in artifacts]
        if model is not None:
            operations.append({"kind": "model", "path": str(model["onnx"]), "release": dict(model)})
        return self._run(operations)

    def catch_up(self) -> int:
        """Replay the outbox (metrics, uploads, the model) left by this or an earlier process; how many went.

        A model release waits for a stage that can publish one (the export stage).
        """
        operations = self.outbox.take()
        stale = [op for op in operations if op["kind"] == "model" and "release" not in op]
        if stale:  # kept by a version whose train stage registered the model file; export registers it now
            log.warning(f"MLflow: {len(stale)} pending model registration(s) of an older version are dropped")
        operations = [op for op in operations if op not in stale]
        if self.model_logger is None:
            self.outbox.add([op for op in operations if op["kind"] == "model"])
            operations = [op for op in operations if op["kind"] != "model"]
        present = [op for op in operations if op["kind"] == "metrics" or Path(op["path"]).exists()]
        if len(present) < len(operations):
            log.warning(f"MLflow: {len(operations) - len(present)} pending upload(s) no longer exist and are skipped")
        if present and self._run(present):
            log.info(f"MLflow: re-sent {len(present)} pending item(s) to run {self.parent_id}")
        if present and not self.outbox:
            self.mark_synced()
        return len(present)

    def _run(self, operations: Sequence[Mapping[str, Any]]) -> bool:
        for index, operation in enumerate(operations):
            try:
                self._perform(operation)
            except Exception as error:  # noqa: BLE001 - keep what is left for later, never lose it
                self.outbox.add(operations[index:])
                self.mark_incomplete()
                model = any(op["kind"] == "model" for op in operations[index:])
                log.warning(
                    f"MLflow: publishing to run {self.parent_id} failed ({first_line(error)}); "
                    f"{len(operations) - index} item(s) kept in {self.outbox.path} "
                    "for the next stage that reaches the store"
                    + (" (the model's registration: the next `reservoir-dqn export`)" if model else "")
                )
                return False
        return True

    def _perform(self, operation: Mapping[str, Any]) -> None:
        kind = operation["kind"]
        if kind == "metrics":
            values = operation["values"]
            self.send_metrics(
                [(str(run), str(key), float(v), int(stamp), int(step)) for run, key, v, stamp, step in values]
            )
        elif kind == "model":
            if self.model_logger is None:
                raise RuntimeError("only the export stage publishes a model release")
            self.model_logger(self, operation["release"])
        else:
            path, to = Path(operation["path"]), operation["to"]
            if path.is_dir():
                retrying(self.client.log_artifacts, self.parent_id, str(path), to)
            else:
                retrying(self.client.log_artifact, self.parent_id, str(path), to)

    def mark_incomplete(self) -> None:
        with contextlib.suppress(Exception):
            self.set_tags({Tag.SYNC_STATUS: "incomplete", Tag.SYNC_OUTBOX: str(self.outbox.path)})

    def mark_synced(self) -> None:
        with contextlib.suppress(Exception):
            self.set_tags({Tag.SYNC_STATUS: "complete"})

    def sink(self, resumed_from: int | None = None) -> MlflowSink:
        """The agents' training curves, sent to their child runs from a background thread.

        A metric's history in MLflow cannot be cut, so a resumed run's child runs hold the points
        logged after its checkpoint twice (MLflow's charts draw the later ones over them).
        """
        return MlflowSink(self)

    def info(self) -> RunInfo:
        """The parent run's name, status and times, as the store holds them now."""
        return retrying(self.client.get_run, self.parent_id).info

    def set_status(self, status: str) -> None:
        """RUNNING while a stage works on the run; FINISHED, FAILED or KILLED after."""
        for run_id in (self.parent_id, *self.child_ids):
            with contextlib.suppress(Exception):
                if status == "RUNNING":
                    retrying(self.client.update_run, run_id, status="RUNNING")
                else:
                    retrying(self.client.set_terminated, run_id, status=status)


class MlflowSink:
    """Sends the curves to the agents' MLflow child runs from a background thread, in batches.

    ``emit`` only enqueues, so training never waits on the store. The thread sends what
    accumulated every ``FLUSH_SECONDS``. When the store fails, it says so once, puts the
    values in the run's outbox, keeps trying and replays the outbox as soon as the store
    answers; ``close`` leaves what could not be sent in the outbox.
    """

    def __init__(self, run: PipelineRun) -> None:
        self.run = run
        self._queue: queue.Queue[MetricValue | None] = queue.Queue()
        self._failed = False
        self._thread = threading.Thread(target=self._work, name="mlflow-sink", daemon=True)
        self._thread.start()

    def emit(self, records: Sequence[Record], histograms: Sequence[torch.Tensor]) -> None:
        stamp = int(time.time() * 1000)
        for record in records:
            for agent, row in record.rows:
                runs = self.run.child_ids if agent is None else [self.run.child_ids[agent]]
                for run_id in runs:
                    for field, value in row.items():
                        self._queue.put((run_id, record.group.key(field), value, stamp, record.step))

    def _work(self) -> None:
        closing = False
        while not closing:
            pending: list[MetricValue] = []
            deadline = time.monotonic() + FLUSH_SECONDS
            while not closing:
                try:
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    break
                if item is None:
                    closing = True
                else:
                    pending.append(item)
            self._send(pending)

    def _send(self, values: list[MetricValue]) -> None:
        try:
            if values:
                self.run.send_metrics(values)
            elif self._failed:
                self.run.probe()
        except Exception as error:  # noqa: BLE001 - any store failure: keep the values, keep training
            self.run.outbox.add([{"kind": "metrics", "values": [list(value) for value in values]}] if values else [])
            if not self._failed:
                self._failed = True
                log.warning(
                    f"MLflow: logging failed ({first_line(error)}); training continues, metrics are kept in "
                    f"{self.run.outbox.path} and re-sent when the store answers"
                )
            return
        if self._failed:
            self._failed = False
            log.info(f"MLflow: the tracking store answers again; catching up run {self.run.parent_id}")
        if self.run.outbox:
            self.run.catch_up()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)
        if self.run.outbox:
            self.run.mark_incomplete()


def reference_run(store: Store, key: str, name: str, metrics: Mapping[str, float]) -> str:
    """The id of the run tagged ``reference_key=key``, created with ``metrics`` if there is none yet."""
    query = f"tags.{Tag.REFERENCE_KEY} = '{key}'"
    found = retrying(store.client.search_runs, [store.experiment_id], filter_string=query, max_results=1)
    if found:
        return str(found[0].info.run_id)
    tags = {
        Tag.REFERENCE_KEY: key,
        RUN_KIND: RunKind.BASELINES,
        "mlflow.note.content": "Baseline policies on the test seeds.",
    }
    run = retrying(store.client.create_run, store.experiment_id, run_name=name, tags=tags)
    stamp = int(time.time() * 1000)
    values = [Metric(metric, float(value), stamp, 0) for metric, value in metrics.items()]
    for start in range(0, len(values), BATCH_LIMIT):
        retrying(store.client.log_batch, run.info.run_id, metrics=values[start : start + BATCH_LIMIT])
    retrying(store.client.set_terminated, run.info.run_id)
    return str(run.info.run_id)


def _seed_order(key: str) -> int:
    return int(key.split("-", 1)[1]) if key.startswith("seed-") else -1


def _exists(store: Store, run_id: str) -> bool:
    try:
        retrying(store.client.get_run, run_id)
    except Exception:  # noqa: BLE001 - unknown run (another store, deleted)
        return False
    return True
