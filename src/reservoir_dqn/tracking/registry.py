"""The model registry: the shipped, exported and evaluated policy as a registered model version.

The export stage publishes its checked ONNX file with a :class:`Release` (the model card, a
real state as the input example, each seed's test score and the evaluation's conditions).
:class:`ModelLogger` logs it to the parent run as an MLflow pyfunc model whose code is
:mod:`.served_policy` (ONNX Runtime; nothing of this package is pickled), with a signature
in the environment's terms, and registers it as a new version of ``reservoir-dqn-<env>``:
the card is the version's description, the run's tags its tags, and the scores and
conditions the evidence a later ``reservoir-dqn promote`` weighs (:mod:`.champion`, which
alone moves the alias ``champion``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from importlib.metadata import version as installed
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.tracking._model_registry import utils as registry_settings
from mlflow.tracking._tracking_service import utils as tracking_settings
from mlflow.types.schema import Array, ColSpec, Schema

from reservoir_dqn.common.files import file_digest
from reservoir_dqn.release.card import Release
from reservoir_dqn.tracking import served_policy
from reservoir_dqn.tracking.champion import record_candidate
from reservoir_dqn.tracking.naming import Tag
from reservoir_dqn.tracking.runs import PipelineRun
from reservoir_dqn.tracking.store import registered_model_name, retrying

log = logging.getLogger(__name__)
SERVING_REQUIREMENTS = ("mlflow", "onnxruntime", "numpy", "pandas")  # what loading the model imports, pinned below
RUN_TAGS = (Tag.BUDGET, Tag.CHANGED, Tag.SEEDS, Tag.TOTAL_FRAMES, Tag.ENV, Tag.GIT_COMMIT, "mlflow.runName")
DIGEST_TAG = Tag.ONNX_SHA256  # the registered file's digest: one file, one version


def signature(release: Release) -> ModelSignature:
    """The observation's fields in; the action's value and the Q-values (an array) out; all float64."""
    return ModelSignature(
        inputs=Schema([ColSpec("double", field) for field in release.example]),
        outputs=Schema([ColSpec("double", release.output), ColSpec(Array("double"), "q_values")]),
    )


@contextlib.contextmanager
def _fluent_store(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (which ``mlflow.pyfunc.log_model`` uses) at ``uri`` for a moment, without its bars.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``; left behind, it would
    redirect every later store lookup of this process, so both are put back afterwards: the
    module-level settings as they were (usually unset), not their resolved values, which
    would pin every later client of the process, registry included, to this store.
    """
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    saved = {name: os.environ.get(name) for name in names}
    previous = tracking_settings._tracking_uri, registry_settings._registry_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # a bar per file, in the stage's one-line output
    try:
        yield
    finally:
        tracking_settings._tracking_uri, registry_settings._registry_uri = previous
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class ModelLogger:
    """Logs a :class:`Release` to the parent run as a pyfunc model and, when ``register``, registers it.

    One ONNX file is one version: a release whose file the run already registered (an export
    re-run for a tracking setting, a replay after a failure half-way) describes that version
    again instead of registering another. A release whose file changed since (a later export
    overwrote it) is dropped: that export registers its own.
    """

    def __init__(self, register: bool) -> None:
        self.register = register

    def __call__(self, run: PipelineRun, data: Mapping[str, Any]) -> None:
        release = Release.from_json(data)
        path = Path(release.onnx)
        if file_digest(path) != release.digest:
            log.warning(
                f"MLflow: {path} changed since its registration was kept; the export that wrote it registers it"
            )
            return
        name = registered_model_name(release.env) if self.register else None
        version = None if name is None else _version_of(run, name, release.digest)
        if version is None:
            version = self._log(run, release, name)
        if name is None or version is None:
            return
        retrying(run.client.update_model_version, name, version, description=release.card)
        tags = retrying(run.client.get_run, run.parent_id).data.tags
        for key in RUN_TAGS:
            if key in tags:
                label = "run_name" if key == "mlflow.runName" else key
                retrying(run.client.set_model_version_tag, name, version, label, tags[key])
        record_candidate(run.client, name, version, release.scores, release.conditions)
        run.set_tags({Tag.MODEL_VERSION: version})
        log.info(
            f"MLflow: {name} version {version} is this run's policy; serve it with `mlflow models serve -m "
            f"models:/{name}/{version} --env-manager local` (MLFLOW_TRACKING_URI={run.store.uri})"
        )

    @staticmethod
    def _log(run: PipelineRun, release: Release, name: str | None) -> str | None:
        """Log the pyfunc model (registering it as ``name``); the new version, its digest tagged first."""
        with _fluent_store(run.store.uri), mlflow.start_run(run_id=run.parent_id):
            info = retrying(
                mlflow.pyfunc.log_model,
                name="model",
                python_model=served_policy.__file__,
                artifacts={served_policy.ARTIFACT: release.onnx},
                signature=signature(release),
                input_example=pd.DataFrame([release.example]),
                registered_model_name=name,
                pip_requirements=[f"{package}=={installed(package)}" for package in SERVING_REQUIREMENTS],
            )
        version = info.registered_model_version
        if name is None or version is None:
            return None
        retrying(run.client.set_model_version_tag, name, str(version), DIGEST_TAG, release.digest)
        return str(version)


def _version_of(run: PipelineRun, name: str, digest: str) -> str | None:
    """The version this run already registered for the file whose SHA-256 is ``digest``, if any."""
    try:
        versions = retrying(run.client.search_model_versions, f"name = '{name}' and run_id = '{run.parent_id}'")
    except Exception:  # noqa: BLE001 - MLflow raises when the model is not registered yet
        return None
    found = [str(v.version) for v in versions if v.tags.get(DIGEST_TAG) == digest]
    return found[0] if found else None
