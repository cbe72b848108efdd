"""The one place metrics are emitted: a :class:`Tracker` fans out to every sink.

Sinks: the CSV training log (a pipeline output), TensorBoard event files and an MLflow
run. Metric names carry namespaces (``train/loss``, ``episode/return_mean``, ``agent/``,
``eval/``, ``reservoir/``), identical in every sink, and the step is always the number of
environment frames collected.

MLflow. With no configuration the store is embedded: ``sqlite:///<root>/mlflow.db`` with
artifacts under ``<root>/mlartifacts``, where ``<root>`` is ``$DVC_ROOT`` when set (queued
DVC experiments run in a temporary copy that DVC deletes) and the repository root
otherwise. ``tracking.uri`` or ``$MLFLOW_TRACKING_URI`` point at a tracking server instead.
Train creates the run and writes its id into the training metrics; evaluate and plot attach
to it, so one run holds params, curves, evaluation metrics, figures and the model.

Failures. An unreachable server stops a stage before any work, in one line. A server lost
mid-run never stops training: the metric sink reports the failure once, keeps every
pending value in a local spool file, re-sends it when the server answers again (or when
the next stage opens the run) and tags the run ``sync_status=incomplete`` until then.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import math
import os
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

import torch

from reservoir_dqn.config import Config
from reservoir_dqn.errors import first_line

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from reservoir_dqn.agent import NetworkSpec

ROOT_MARKERS = (".dvc", ".git")
EXPERIMENT_PREFIX = "reservoir-dqn"
SPOOL_FOLDER = ".mlflow-spool"  # under <root>: metric values a lost server has not received yet
BATCH_LIMIT = 1000  # MLflow accepts at most 1000 metrics per log_batch call
FLUSH_SECONDS = 2.0  # the MLflow sink sends what has accumulated at least this often


class MetricSink(Protocol):
    """Something that records metrics against a step."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class TrackingUnavailable(RuntimeError):
    """The configured tracking store cannot be used; the message is one line for the user."""


# --------------------------------------------------------------------------- where things go


def project_root(start: Path | None = None) -> Path:
    """``$DVC_ROOT`` when set, else the nearest folder holding ``.dvc`` or ``.git``, else the start folder."""
    dvc_root = os.environ.get("DVC_ROOT")
    if dvc_root:
        return Path(dvc_root).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / marker).exists() for marker in ROOT_MARKERS):
            return folder
    return here


def tracking_uri(configured: str | None, root: Path) -> str:
    """``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded SQLite store under ``root``."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def experiment_name(env_name: str) -> str:
    """One MLflow experiment per environment."""
    return f"{EXPERIMENT_PREFIX}/{env_name}"


def registered_model_name(env_name: str) -> str:
    """One registered model per environment; its versions are the trained agents."""
    return f"{EXPERIMENT_PREFIX}-{env_name}"


def check_reachable(uri: str, timeout: float) -> None:
    """Raise :class:`TrackingUnavailable` (one line) unless the tracking store answers within ``timeout``."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
                if response.status == 200:
                    return
                reason = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            reason = f"HTTP {error.code}"
        except (urllib.error.URLError, OSError) as error:
            reason = str(getattr(error, "reason", error)) or type(error).__name__
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} cannot be reached ({reason}); start it, correct tracking.uri or "
            "MLFLOW_TRACKING_URI, or set tracking.enabled: false"
        )
    if parsed.scheme == "sqlite":
        database = Path(parsed.path[1:] if parsed.path.startswith("//") else parsed.path)
        folder = database.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TrackingUnavailable(f"MLflow store {uri}: cannot create {folder} ({error.strerror})") from None
        if not os.access(folder, os.W_OK):
            raise TrackingUnavailable(f"MLflow store {uri}: folder {folder} is not writable")
    elif parsed.scheme in ("", "file"):
        raise TrackingUnavailable(
            f"MLflow tracking URI {uri!r} is a file store, which MLflow 3.13+ refuses; use sqlite:///path/mlflow.db"
        )


def _git_commit(folder: Path) -> str:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


@contextlib.contextmanager
def _store_lock(root: Path, uri: str) -> Iterator[None]:
    """Serialise the first contact with an embedded SQLite store across processes.

    Two processes that find no ``mlflow.db`` would otherwise both create its tables.
    """
    if not uri.startswith("sqlite:"):
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".mlflow.db.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _fluent_store(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (which ``mlflow.pytorch.log_model`` uses) at ``uri`` for a moment.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI`` to the environment; left
    behind, it would redirect every later store lookup of this process, so both the module
    state and the environment are put back afterwards.
    """
    import mlflow

    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None resets it
        mlflow.set_registry_uri(None)  # type: ignore[arg-type]
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _retrying(call: Callable[[], Any], attempts: int = 8, delay: float = 0.25) -> Any:
    """Run a store call, retrying while SQLite reports a concurrent writer ('database is locked')."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as error:
            if "locked" not in str(error).lower() or attempt == attempts - 1:
                raise
            time.sleep(delay * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- sinks


class CsvLog:
    """The training log: one CSV row per call, ``frames`` first, a fixed set of columns.

    Later stages plot it and DVC renders it with ``dvc plots``. On resume the rows written
    after the checkpoint are dropped, so the file matches an uninterrupted run's.

    :param path: the CSV file.
    :param columns: metric names, in column order; a metric missing from a row stays empty.
    :param resume_from: keep existing rows up to and including this step; ``None`` starts a new file.
    """

    def __init__(self, path: Path, columns: Sequence[str], resume_from: int | None = None) -> None:
        self.path = path
        self.columns = ["frames", *columns]
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = self._rows_up_to(resume_from) if resume_from is not None else []
        self._file = path.open("w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="ignore")
        self._writer.writeheader()
        self._writer.writerows(kept)
        self._file.flush()

    def _rows_up_to(self, step: int) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            if reader.fieldnames != self.columns:
                return []
            return [row for row in reader if row["frames"] and int(row["frames"]) <= step]

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._writer.writerow({"frames": step, **{key: _format(value) for key, value in metrics.items()}})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _format(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))


class TensorBoardSink:
    """Scalars (and the action histogram) as TensorBoard event files.

    The writer queues events and a background thread writes them; the queue is large and
    flushed every few seconds, so logging never waits on the disk.
    """

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        self._writer = SummaryWriter(log_dir=str(log_dir), max_queue=10_000, flush_secs=5)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            if not math.isnan(value):
                self._writer.add_scalar(key, value, global_step=step)

    def log_histogram(self, name: str, values: torch.Tensor, step: int) -> None:
        self._writer.add_histogram(name, values, global_step=step, bins="auto")

    def close(self) -> None:
        self._writer.close()


class MlflowSink:
    """Sends metrics to an MLflow run from a background thread, in batches.

    ``log_metrics`` only enqueues, so training never waits on the store. The thread sends
    what accumulated every ``FLUSH_SECONDS`` with ``log_batch``. When the store fails, it
    reports it once, appends the pending values to a local spool file, keeps retrying and
    re-sends the spool as soon as the store answers; ``close`` leaves whatever could not be
    sent in the spool and tags the run incomplete when it can.
    """

    def __init__(self, run: MlflowRun, say: Callable[[str], None] = print) -> None:
        self.run = run
        self.say = say
        self._queue: queue.Queue[tuple[str, float, int, int] | None] = queue.Queue()
        self._failed = False
        self._thread = threading.Thread(target=self._work, name="mlflow-sink", daemon=True)
        self._thread.start()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        stamp = int(time.time() * 1000)
        for key, value in metrics.items():
            if not math.isnan(value):
                self._queue.put((key, float(value), stamp, step))

    def _work(self) -> None:
        closing = False
        while not closing:
            pending: list[tuple[str, float, int, int]] = []
            deadline = time.monotonic() + FLUSH_SECONDS
            while not closing and len(pending) < BATCH_LIMIT:
                try:
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    break
                if item is None:
                    closing = True
                else:
                    pending.append(item)
            self._send(pending)
        self._send([])  # one last attempt at the spool

    def _send(self, values: list[tuple[str, float, int, int]]) -> None:
        try:
            self.run.send_spool()
            if values:
                self.run.log_values(values)
            if self._failed:
                self._failed = False
                self.say(f"MLflow: the tracking store answers again; run {self.run.run_id} is in sync")
                self.run.mark_synced()
        except Exception as error:  # noqa: BLE001 - any store failure: keep the values, keep training
            self.run.spool(values)
            if not self._failed:
                self._failed = True
                first = first_line(error)
                self.say(
                    f"MLflow: logging failed ({first}); training continues, metrics are kept in "
                    f"{self.run.spool_path} and re-sent when the store answers"
                )

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)
        if self.run.spool_path.exists():
            self.run.mark_incomplete()


class Tracker:
    """Fans every metric out to all sinks; the single emission point of the pipeline."""

    def __init__(self, sinks: Iterable[MetricSink] = ()) -> None:
        self.sinks = list(sinks)

    def log(
        self, metrics: Mapping[str, float], step: int, histograms: Mapping[str, torch.Tensor] | None = None
    ) -> None:
        """Record ``metrics`` at ``step`` in every sink.

        :param metrics: namespaced names (``train/loss``) to numbers; NaN means "none this time".
        :param step: frames collected so far.
        :param histograms: distributions, such as the actions taken, for the sinks that draw them.
        """
        for sink in self.sinks:
            if histograms and isinstance(sink, (TensorBoardSink, ThinnedSink)):
                for name, values in histograms.items():
                    sink.log_histogram(name, values, step)
            sink.log_metrics(metrics, step)

    def flush(self) -> None:
        """Send what thinned sinks hold now (a periodic evaluation is worth its own point)."""
        for sink in self.sinks:
            if isinstance(sink, ThinnedSink):
                sink.flush()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class ThinnedSink:
    """Passes ``sink`` one point per ``interval`` frames instead of one per collected batch.

    MLflow stores every value as a database row and TensorBoard encodes each one, so a point
    per batch of a few frames would cost training time for curves no one can tell apart.
    A point holds, for each metric logged since the previous point, its newest value (so the
    return of episodes that ended a few batches earlier is not lost to the batches after them
    where none ended), and the histograms of everything logged since. ``flush`` sends a point
    now; ``close`` sends what is pending, so the last batch always arrives.

    :param sink: MLflow or TensorBoard.
    :param interval: frames between points; at most one point per call of ``log_metrics``.
    :param start: frames already trained (a resumed run continues the same grid of points).
    """

    def __init__(self, sink: MetricSink, interval: int, start: int = 0) -> None:
        self.sink, self.interval = sink, interval
        self._sent = start
        self._step: int | None = None
        self._latest: dict[str, float] = {}
        self._histograms: dict[str, list[torch.Tensor]] = {}

    def log_histogram(self, name: str, values: torch.Tensor, step: int) -> None:
        """Keep ``values`` for the next point's histogram (TensorBoard only; MLflow has none)."""
        if isinstance(self.sink, TensorBoardSink):
            self._histograms.setdefault(name, []).append(values.detach().reshape(-1).cpu())

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Keep the newest value of each metric; send a point when ``step`` enters a new interval."""
        self._latest.update((key, value) for key, value in metrics.items() if not math.isnan(value))
        self._step = step
        if step // self.interval > self._sent // self.interval:
            self.flush()

    def flush(self) -> None:
        """Send what is held as a point at the newest step (nothing when nothing new was logged)."""
        if self._step is None or self._step == self._sent:
            return
        if isinstance(self.sink, TensorBoardSink):
            for name, parts in self._histograms.items():
                self.sink.log_histogram(name, torch.cat(parts), self._step)
        self.sink.log_metrics(self._latest, self._step)
        self._sent, self._latest, self._histograms = self._step, {}, {}

    def close(self) -> None:
        """Send what is pending, then close the sink."""
        self.flush()
        self.sink.close()


def attached_tracking(config: Config, train_metrics: Path) -> Tracking:
    """For the stages after train: connect (failing fast) and join the run named in the training metrics."""
    tracking = Tracking(config).connect()
    run_id = None
    if train_metrics.exists():
        with train_metrics.open(encoding="utf-8") as file:
            run_id = json.load(file).get("mlflow_run_id")
    if tracking.uri is not None:
        tracking.attach(run_id)
    return tracking


def read_csv_log(path: Path) -> dict[str, list[float]]:
    """Read a training log back as columns of floats (empty cells become NaN)."""
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        return {}
    return {key: [float(row[key]) if row[key] else math.nan for row in rows] for key in rows[0]}


# --------------------------------------------------------------------------- MLflow runs


class MlflowRun:
    """One MLflow run of the pipeline, as seen from one stage process."""

    def __init__(self, client: MlflowClient, run_id: str, root: Path) -> None:
        self.client = client
        self.run_id = run_id
        self.spool_path = root / SPOOL_FOLDER / f"{run_id}.jsonl"
        self._spool_lock = threading.Lock()

    def log_values(self, values: Sequence[tuple[str, float, int, int]]) -> None:
        """Send ``(key, value, timestamp_ms, step)`` tuples, in batches MLflow accepts."""
        from mlflow.entities import Metric

        for start in range(0, len(values), BATCH_LIMIT):
            chunk = values[start : start + BATCH_LIMIT]
            self._send(metrics=[Metric(key, value, stamp, step) for key, value, stamp, step in chunk])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        stamp = int(time.time() * 1000)
        self.log_values([(key, float(value), stamp, step) for key, value in metrics.items() if not math.isnan(value)])

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [
            Param(key, json.dumps(value) if isinstance(value, (list, dict)) else str(value))
            for key, value in params.items()
        ]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self._send(params=items[start : start + 100])

    def _send(self, **batch: Any) -> None:
        _retrying(lambda: self.client.log_batch(self.run_id, synchronous=True, **batch))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self._send(tags=[RunTag(key, value) for key, value in tags.items()])

    def tag(self, name: str) -> str | None:
        """A tag of the run (for example ``model_version``, which train sets)."""
        run = _retrying(lambda: self.client.get_run(self.run_id))
        value = run.data.tags.get(name)
        return None if value is None else str(value)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file, or a folder's contents, to the run's artifacts."""
        if path.is_dir():
            _retrying(lambda: self.client.log_artifacts(self.run_id, str(path), artifact_path))
        elif path.exists():
            _retrying(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def spool(self, values: Sequence[tuple[str, float, int, int]]) -> None:
        """Keep values the store did not take, one JSON line each."""
        if not values:
            return
        with self._spool_lock:
            self.spool_path.parent.mkdir(parents=True, exist_ok=True)
            with self.spool_path.open("a", encoding="utf-8") as file:
                file.writelines(json.dumps(value) + "\n" for value in values)

    def send_spool(self) -> int:
        """Re-send spooled values; the spool file is removed once the store took all of them."""
        with self._spool_lock:
            if not self.spool_path.exists():
                return 0
            values = [tuple(json.loads(line)) for line in self.spool_path.read_text().splitlines() if line.strip()]
            self.log_values(values)  # type: ignore[arg-type]
            self.spool_path.unlink()
            return len(values)

    def mark_incomplete(self) -> None:
        with contextlib.suppress(Exception):
            self.set_tags({"sync_status": "incomplete", "sync_spool": str(self.spool_path)})

    def mark_synced(self) -> None:
        with contextlib.suppress(Exception):
            self.set_tags({"sync_status": "complete"})

    def finish(self, status: str = "FINISHED") -> None:
        with contextlib.suppress(Exception):
            _retrying(lambda: self.client.set_terminated(self.run_id, status=status))


class Tracking:
    """Tracking for one stage process: fails fast, opens the pipeline's run, makes the sinks.

    :param config: the validated parameters (``tracking`` section, env and seed for tags).
    :param say: where one-line notices go.
    """

    def __init__(self, config: Config, say: Callable[[str], None] = print) -> None:
        self.config = config
        self.settings = config.tracking
        self.say = say
        self.root = project_root()
        self.uri = tracking_uri(self.settings.uri, self.root) if self.settings.enabled else None
        self.run: MlflowRun | None = None
        self._client: MlflowClient | None = None

    def connect(self) -> Tracking:
        """Check the store answers (in at most ``connect_timeout_s``) before any real work."""
        if self.uri is None:
            return self
        check_reachable(self.uri, self.settings.connect_timeout_s)
        # Bound how long one request to a server that vanishes later may hang the sink thread.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        from mlflow import MlflowClient

        with _store_lock(self.root, self.uri):
            self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
            try:
                self.experiment_id = self._experiment_id()
            except Exception as error:  # noqa: BLE001 - any failure here means "cannot track"
                first = first_line(error)
                raise TrackingUnavailable(f"MLflow store {self.uri} cannot be used ({first})") from None
        return self

    def _experiment_id(self) -> str:
        client, name = self._client, experiment_name(self.config.env.name)
        assert client is not None

        def existing() -> str | None:
            found = _retrying(lambda: client.get_experiment_by_name(name))
            return None if found is None else str(found.experiment_id)

        if (found := existing()) is not None:
            return found
        artifacts = None
        if self.uri is not None and self.uri.startswith("sqlite:"):
            # Without this MLflow would put artifacts in ./mlruns of whatever folder runs the stage.
            artifacts = (self.root / "mlartifacts" / self.config.env.name).as_uri()
        try:
            return str(_retrying(lambda: client.create_experiment(name, artifact_location=artifacts)))
        except Exception:
            # Parallel experiments starting together: another process may have created it first.
            if (found := existing()) is None:
                raise
            return found

    def start_run(self, resume_run_id: str | None) -> str | None:
        """Open the training run: the checkpoint's run when resuming and it still exists, else a new one."""
        if self._client is None:
            return None
        if resume_run_id and self._exists(resume_run_id):
            self.run = MlflowRun(self._client, resume_run_id, self.root)
            _retrying(lambda: self._client.update_run(resume_run_id, status="RUNNING"))  # type: ignore[union-attr]
            self.say(f"MLflow: continuing run {resume_run_id}")
        else:
            tags = self._tags()
            run = _retrying(
                lambda: self._client.create_run(  # type: ignore[union-attr]
                    self.experiment_id, run_name=os.environ.get("DVC_EXP_NAME") or None, tags=tags
                )
            )
            self.run = MlflowRun(self._client, run.info.run_id, self.root)
            self.run.log_params(self.config.flat())
        self._catch_up()
        return self.run.run_id

    def attach(self, run_id: str | None) -> bool:
        """Join the run that training created (evaluate and plot); False when there is none to join."""
        if self._client is None:
            return False
        if not run_id or not self._exists(run_id):
            self.say("MLflow: the training run is unknown to this store; this stage is not tracked")
            return False
        self.run = MlflowRun(self._client, run_id, self.root)
        _retrying(lambda: self._client.update_run(run_id, status="RUNNING"))  # type: ignore[union-attr]
        self._catch_up()
        return True

    def _exists(self, run_id: str) -> bool:
        try:
            _retrying(lambda: self._client.get_run(run_id))  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - unknown run (another store, deleted)
            return False
        return True

    def _tags(self) -> dict[str, str]:
        commit = _git_commit(Path.cwd())
        return {
            "mlflow.source.git.commit": commit,
            "git_commit": commit,
            "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
            "dvc_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
            "env": self.config.env.name,
            "seed": str(self.config.seed),
            "params_hash": self.config.training_hash[:12],
        }

    def sinks(self, start: int | None = None) -> list[MetricSink]:
        """The metric sinks of this stage: MLflow (when a run is open) and TensorBoard (when enabled).

        :param start: for training, the frames already trained: the sinks then get one point
            per ``tracking.log_interval_frames`` (see :class:`ThinnedSink`); ``None``: every call.
        """
        sinks: list[MetricSink] = []
        if self.run is not None:
            sinks.append(MlflowSink(self.run, self.say))
        if self.settings.tensorboard:
            sinks.append(TensorBoardSink(self.tensorboard_dir))
        if start is None:
            return sinks
        return [ThinnedSink(sink, self.settings.log_interval_frames, start) for sink in sinks]

    @property
    def tensorboard_dir(self) -> Path:
        """``<root>/runs/<env>/<run>``: the MLflow run id, else the DVC experiment name, else 'workspace'."""
        name = self.run.run_id if self.run is not None else os.environ.get("DVC_EXP_NAME", "workspace")
        return self.root / "runs" / self.config.env.name / name

    @property
    def pending_path(self) -> Path:
        """Uploads a lost store did not take (artifacts, the model), replayed by the next stage."""
        assert self.run is not None
        return self.root / SPOOL_FOLDER / f"{self.run.run_id}.pending.jsonl"

    def publish(self, artifacts: Sequence[tuple[Path, str | None]] = (), model: Path | None = None) -> None:
        """Upload artifacts, log and register the model file, then close the run.

        A store that fails here does not fail the stage (its outputs are already on disk):
        the operations not done are kept in :attr:`pending_path`, said once, and replayed
        when a later stage reaches the store.
        """
        if self.run is None:
            return
        operations: list[dict[str, Any]] = [{"artifact": str(path), "to": to} for path, to in artifacts]
        if model is not None:
            operations.append({"model": str(model)})
        if self._run_operations(operations):
            self.finish()

    def _run_operations(self, operations: Sequence[Mapping[str, Any]]) -> bool:
        assert self.run is not None
        for index, operation in enumerate(operations):
            try:
                if "artifact" in operation:
                    self.run.log_artifact(Path(operation["artifact"]), operation["to"])
                else:
                    self._log_model_file(Path(operation["model"]))
            except Exception as error:  # noqa: BLE001 - keep what is left for later, never lose it
                self.pending_path.parent.mkdir(parents=True, exist_ok=True)
                with self.pending_path.open("a", encoding="utf-8") as file:
                    file.writelines(json.dumps(dict(rest)) + "\n" for rest in operations[index:])
                first = first_line(error)
                self.say(
                    f"MLflow: publishing to run {self.run.run_id} failed ({first}); {len(operations) - index} "
                    f"upload(s) kept in {self.pending_path} for the next stage that reaches the store"
                )
                return False
        return True

    def _catch_up(self) -> None:
        """Re-send what an earlier process of this run could not: spooled metrics, pending uploads."""
        assert self.run is not None
        sent = self.run.send_spool()
        if self.pending_path.exists():
            operations = [json.loads(line) for line in self.pending_path.read_text().splitlines() if line.strip()]
            self.pending_path.unlink()
            present = [op for op in operations if Path(op.get("artifact") or op["model"]).exists()]
            if len(present) < len(operations):
                self.say(
                    f"MLflow: {len(operations) - len(present)} pending upload(s) of run {self.run.run_id} "
                    "no longer exist on disk and are skipped"
                )
            self._run_operations(present)
            sent += len(present)
        if sent:
            self.run.mark_synced()
            self.say(f"MLflow: re-sent {sent} pending item(s) to run {self.run.run_id}")

    def _log_model_file(self, model_path: Path) -> None:
        """Log the model file's greedy policy with ``mlflow.pytorch.log_model``; register it as a new version."""
        from reservoir_dqn.agent import GreedyPolicy, load_model

        q_network, spec = load_model(model_path)
        version = self.log_model(GreedyPolicy(q_network), spec)
        if version is not None:
            self.run.set_tags({"model_version": version})  # type: ignore[union-attr]

    def log_model(self, policy: torch.nn.Module, spec: NetworkSpec) -> str | None:
        """Log the greedy policy with ``mlflow.pytorch.log_model`` and register it; return the version."""
        if self.run is None or self.uri is None:
            return None
        import mlflow
        import numpy as np
        from mlflow.models import infer_signature

        example = np.zeros((2, spec.obs_dim), dtype=np.float32)
        with torch.no_grad():
            signature = infer_signature(example, policy(torch.from_numpy(example)).numpy())
        requirements = [f"torch=={torch.__version__.split('+')[0]}", "torchrl", "reservoir-dqn"]
        name = registered_model_name(spec.env_name) if self.settings.register_model else None
        with _fluent_store(self.uri), mlflow.start_run(run_id=self.run.run_id):
            info = _retrying(
                lambda: mlflow.pytorch.log_model(
                    policy,
                    name="model",
                    input_example=example,
                    signature=signature,
                    registered_model_name=name,
                    pip_requirements=requirements,
                )
            )
        version = info.registered_model_version
        return None if version is None else str(version)

    def promote_if_better(self, env_name: str, version: str, score: float, metric: str) -> bool:
        """Tag ``version`` with its evaluation score; move alias ``champion`` to it if it beats the holder."""
        if self._client is None or not self.settings.register_model:
            return False
        try:
            return self._promote(env_name, version, score, metric)
        except Exception as error:  # noqa: BLE001 - the evaluation itself is done and written
            first = first_line(error)
            self.say(f"MLflow: could not update the 'champion' alias ({first})")
            return False

    def _promote(self, env_name: str, version: str, score: float, metric: str) -> bool:
        assert self._client is not None
        client, name = self._client, registered_model_name(env_name)
        _retrying(lambda: client.set_model_version_tag(name, version, metric, str(score)))
        try:
            holder = client.get_model_version_by_alias(name, "champion")
            best = float(holder.tags.get(metric, "-inf"))
        except Exception:  # noqa: BLE001 - no champion yet
            holder, best = None, -math.inf
        if holder is not None and holder.version == version:
            return True
        if score > best:
            _retrying(lambda: client.set_registered_model_alias(name, "champion", version))
            self.say(f"MLflow: {name} version {version} is the new champion ({metric} {score:.4g} > {best:.4g})")
            return True
        return False

    def finish(self, status: str = "FINISHED") -> None:
        if self.run is not None:
            self.run.finish(status)
