"""The MLflow store: where it is, whether it answers, and the experiment of each environment.

With no configuration the store is embedded: ``sqlite:///<root>/mlflow.db`` with artifacts
under ``<root>/mlartifacts``, where ``<root>`` is ``$DVC_ROOT`` when set (queued DVC
experiments run in a temporary copy that DVC deletes) and the repository root otherwise.
``tracking.uri`` or ``$MLFLOW_TRACKING_URI`` point at a tracking server instead.

:func:`connect` fails in one line, within ``tracking.connect_timeout_s``, when the store
cannot be used; everything after it works with a :class:`Store`, which exists only once the
connection succeeded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar
from urllib.parse import urlparse

from reservoir_dqn.common.errors import first_line
from reservoir_dqn.common.process import collection_paused
from reservoir_dqn.config import Config

if TYPE_CHECKING:  # mlflow takes about a second to import: only a stage that tracks pays it
    from mlflow import MlflowClient

ROOT_MARKERS = (".dvc", ".git")
EXPERIMENT_PREFIX = "reservoir-dqn"
# The schemes of the stores MLflow's client can open (a server, or a database it opens itself).
SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks")
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}  # the default port of each server
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file

T = TypeVar("T")
P = ParamSpec("P")
RETRIES = 8  # attempts of a store call while SQLite reports a concurrent writer
RETRY_DELAY_S = 0.25  # first wait between them, doubled each time


class TrackingUnavailable(RuntimeError):
    """The configured tracking store cannot be used; the message is one line for the user."""


class TrackingMisconfigured(TrackingUnavailable):
    """The tracking URI itself is wrong (a scheme no store has): bad input, not an outage."""


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


def with_postgres_driver(url: str) -> str:
    """``postgresql://`` means the installed driver, psycopg2 (SQLAlchemy 2.1 would otherwise look for psycopg 3)."""
    return "postgresql+psycopg2://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


def tracking_uri(configured: str, root: Path) -> str:
    """``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded SQLite store under ``root``."""
    return with_postgres_driver(
        configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
    )


def _setting(configured: str) -> str:
    """Where the URI came from, for the one line that says it is wrong."""
    if configured:
        return "set by tracking.uri"
    return "set by MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "the embedded default store"


def study_experiment(study: str) -> str:
    """A tuning study's own MLflow experiment: its trials stay out of the environment's (the pipeline's runs)."""
    return f"{EXPERIMENT_PREFIX}/tune/{study}"


def experiment_name(env_name: str) -> str:
    """One MLflow experiment per environment."""
    return f"{EXPERIMENT_PREFIX}/{env_name}"


def registered_model_name(env_name: str) -> str:
    """One registered model per environment; its versions are the shipped agents."""
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
        _check_sqlite_file(database)
    elif parsed.scheme in ("", "file"):
        raise TrackingMisconfigured(
            f"MLflow tracking URI {uri!r} is a file store, which MLflow 3.13+ refuses; use sqlite:///path/mlflow.db"
        )
    elif parsed.scheme.split("+")[0] not in SCHEMES:
        raise TrackingMisconfigured(
            f"MLflow tracking URI {uri!r}: unknown scheme '{parsed.scheme}' (use one of {', '.join(SCHEMES)})"
        )
    elif parsed.scheme.split("+")[0] in DATABASE_PORTS:
        port = parsed.port or DATABASE_PORTS[parsed.scheme.split("+")[0]]
        try:
            socket.create_connection((parsed.hostname or "localhost", port), timeout=timeout).close()
        except OSError as error:
            raise TrackingUnavailable(
                f"MLflow database {parsed.hostname or 'localhost'}:{port} cannot be reached "
                f"({error.strerror or type(error).__name__}); start it or correct the URI"
            ) from None


def _check_sqlite_file(database: Path) -> None:
    """A store file that exists must be an SQLite database: a corrupt one is named, and left as it is."""
    try:
        with database.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return  # a new store: MLflow creates it
    except OSError as error:
        raise TrackingUnavailable(f"MLflow store {database} cannot be read ({error.strerror})") from None
    if header and header != SQLITE_HEADER:
        raise TrackingUnavailable(
            f"MLflow store {database} is not an SQLite database (corrupt?); move it aside to start a new store, "
            "or restore it from a backup"
        )


def retrying(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``call(*args, **kwargs)``, retried while it loses a race with a concurrent writer (see :func:`lost_a_race`)."""
    for attempt in range(RETRIES):
        try:
            return call(*args, **kwargs)
        except Exception as error:
            if not lost_a_race(error) or attempt == RETRIES - 1:
                raise
            time.sleep(RETRY_DELAY_S * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def lost_a_race(error: Exception) -> bool:
    """Whether a store call failed only because another process wrote at the same moment, so trying again succeeds.

    SQLite reports a concurrent writer as 'database is locked'. Two processes setting the same
    tag at once both insert it (MLflow's merge); the second insert's unique violation comes back
    as BAD_REQUEST, and tried again it updates the row. An experiment or model that already
    exists is RESOURCE_ALREADY_EXISTS instead, and trying again would not help.
    """
    text = str(error).lower()
    unique_violation = "duplicate key" in text or "unique constraint failed" in text
    return "locked" in text or (getattr(error, "error_code", None) == "BAD_REQUEST" and unique_violation)


@contextlib.contextmanager
def _first_contact_lock(root: Path, uri: str) -> Iterator[None]:
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


@dataclass(frozen=True)
class Store:
    """A tracking store that answered, and the experiment of this configuration's environment."""

    client: MlflowClient
    uri: str
    root: Path
    experiment_id: str
    created_experiment: bool = False
    """Whether this process created the experiment: one of several starting together did (its name is unique)."""

    @property
    def embedded(self) -> bool:
        return self.uri.startswith("sqlite:")


def connect(config: Config, root: Path | None = None, experiment: str | None = None) -> Store | None:
    """Connect to the configured MLflow store (``None`` when tracking is off); fail fast, in one line.

    :param experiment: the MLflow experiment to work in, instead of the environment's
        (:func:`experiment_name`); a tuning study has its own.
    """
    if not config.tracking.enabled:
        return None
    root = root or project_root()
    uri = tracking_uri(config.tracking.uri, root)
    try:
        check_reachable(uri, config.tracking.connect_timeout_s)
    except TrackingUnavailable as error:
        raise type(error)(f"{error} ({_setting(config.tracking.uri)})") from None
    # Bound how long one request to a server that vanishes later may hang the sink thread.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    with _first_contact_lock(root, uri), collection_paused(freeze=False):  # MLflow's modules, SQLAlchemy's engine
        from mlflow import MlflowClient

        try:
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            experiment_id, created = _experiment(
                client,
                experiment or experiment_name(config.env.name),
                root if uri.startswith("sqlite:") else None,
            )
        except Exception as error:  # noqa: BLE001 - any failure here means "cannot track"
            raise TrackingUnavailable(
                f"MLflow store {uri} cannot be used ({first_line(error)}; {_setting(config.tracking.uri)})"
            ) from None
    return Store(client, uri, root, experiment_id, created)


def set_experiment_tag(client: MlflowClient, experiment_id: str, key: str, value: str) -> None:
    """Set one experiment tag, which a process tagging the same new experiment may insert first.

    MLflow's SQL stores write a tag as a look-up, then an insert or an update: the loser of
    that race gets a unique-constraint error (on PostgreSQL "duplicate key value violates
    unique constraint"), and the same write, made again, is an update.
    """
    try:
        retrying(client.set_experiment_tag, experiment_id, key, value)
    except Exception as error:
        if "unique constraint" not in str(error).lower():
            raise
        retrying(client.set_experiment_tag, experiment_id, key, value)


def _experiment(client: MlflowClient, name: str, artifact_root: Path | None) -> tuple[str, bool]:
    """The experiment ``name`` and whether this call created it: created when missing, and joined
    when a parallel process created it first.

    Its description and key-metrics view are the evaluate stage's
    (:func:`reservoir_dqn.tracking.outcomes.describe_experiment`): they name the test metrics.
    """

    def existing() -> str | None:
        found = retrying(client.get_experiment_by_name, name)
        return None if found is None else str(found.experiment_id)

    if (found := existing()) is not None:
        return found, False
    # Without an explicit location MLflow would put artifacts in ./mlruns of whatever folder runs the stage.
    location = (
        None
        if artifact_root is None
        else (artifact_root / "mlartifacts" / name.removeprefix(f"{EXPERIMENT_PREFIX}/")).as_uri()
    )
    try:
        return str(retrying(client.create_experiment, name, artifact_location=location)), True
    except Exception:
        # Parallel experiments starting together: another process may have created it first.
        if (found := existing()) is None:
            raise
        return found, False
