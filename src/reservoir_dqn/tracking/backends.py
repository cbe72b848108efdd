"""The tracking backends, by the name ``tracking.backend`` gives: where a pipeline execution's runs are recorded.

A backend is declared once, where it is implemented, with :func:`register_backend`; the
config accepts the names registered (:mod:`reservoir_dqn.config.variants`). Two ship:
``mlflow`` (:mod:`.runs`: a store, embedded SQLite or a server, with the model registry) and
``files`` (:mod:`.file_runs`: plain JSON and CSV, no server, no registry). Each backend's
module is imported only when its runs are made (MLflow takes a second to import).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from reservoir_dqn.common.metrics import Sink
from reservoir_dqn.config.variants import Variants

if TYPE_CHECKING:
    from reservoir_dqn.tracking.runs import ModelPublisher
    from reservoir_dqn.tracking.store import Store


class RunInfo(Protocol):
    """A run's name and status, as its backend holds them now."""

    @property
    def run_name(self) -> str: ...

    @property
    def status(self) -> str: ...


class Run(Protocol):
    """The parent run and per-agent child runs of one pipeline execution, in either backend.

    :class:`~reservoir_dqn.tracking.runs.PipelineRun` (MLflow) and
    :class:`~reservoir_dqn.tracking.file_runs.FileRun` (plain files) are the two.
    """

    @property
    def parent_id(self) -> str: ...

    @property
    def run_ids(self) -> dict[str, str]: ...

    def info(self) -> RunInfo: ...

    def set_status(self, status: str) -> None: ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def tag(self, name: str) -> str | None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None: ...

    def publish(
        self, artifacts: Sequence[tuple[Path, str | None]] = (), model: Mapping[str, Any] | None = None
    ) -> bool: ...

    def catch_up(self) -> int: ...

    def sink(self, resumed_from: int | None) -> Sink:
        """Where the agents' training curves go in this backend (points after ``resumed_from`` are dropped first)."""
        ...


class Backend(Protocol):
    """Where runs are recorded: makes a pipeline execution's runs, or finds them again."""

    label: str  # what the notices call it
    uses_store: bool  # an MLflow store is connected for it, before any work
    has_registry: bool  # it registers models (export registers, promote moves the champion)

    def create(
        self,
        where: RunsAt,
        name: str,
        description: str,
        tags: Mapping[str, str],
        agents: int,
        parent_of: str | None,
    ) -> Run:
        """New runs: the parent (named ``name``) and one child per agent."""
        ...

    def existing(self, where: RunsAt, run_ids: Mapping[str, str], model_logger: ModelPublisher | None) -> Run | None:
        """The runs of ``run_ids`` (``None``: this backend does not know them)."""
        ...


@dataclass(frozen=True)
class RunsAt:
    """Where a backend keeps its runs: the project's root, and the connected store for a backend that uses one."""

    root: Path
    store: Store | None


class MlflowBackend:
    """The runs in an MLflow store (:class:`~.runs.PipelineRun`), with the model registry."""

    label, uses_store, has_registry = "MLflow", True, True

    def create(
        self, where: RunsAt, name: str, description: str, tags: Mapping[str, str], agents: int, parent_of: str | None
    ) -> Run:
        from reservoir_dqn.tracking.runs import PipelineRun

        assert where.store is not None
        return PipelineRun.create(where.store, name, description, tags, agents, None, parent_of)

    def existing(self, where: RunsAt, run_ids: Mapping[str, str], model_logger: ModelPublisher | None) -> Run | None:
        from reservoir_dqn.tracking.runs import PipelineRun

        assert where.store is not None
        return PipelineRun.existing(where.store, run_ids, model_logger)


class FilesBackend:
    """The runs as folders of JSON and CSV under ``<root>/file-runs/`` (:class:`~.file_runs.FileRun`)."""

    label, uses_store, has_registry = "file-runs", False, False

    def create(
        self, where: RunsAt, name: str, description: str, tags: Mapping[str, str], agents: int, parent_of: str | None
    ) -> Run:
        from reservoir_dqn.tracking.file_runs import FileRun

        return FileRun.create(where.root, name, description, tags, agents, parent_of)

    def existing(self, where: RunsAt, run_ids: Mapping[str, str], model_logger: ModelPublisher | None) -> Run | None:
        from reservoir_dqn.tracking.file_runs import FileRun

        return FileRun.existing(where.root, run_ids)


BACKENDS: Variants[Backend] = Variants("tracking.backend")


def register_backend(name: str, backend: Backend, *, replace: bool = False) -> None:
    """Make ``name`` a value of ``tracking.backend``, recorded by ``backend``."""
    BACKENDS.register(name, backend, replace=replace)


register_backend("mlflow", MlflowBackend())
register_backend("files", FilesBackend())
