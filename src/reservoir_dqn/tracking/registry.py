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
import json
import logging
import os
from collections.abc import Iterator, Mapping
from importlib.metadata import version as installed
from pathlib import Path
from typing import Any

import mlflow
import onnx
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.tracking._model_registry import utils as registry_settings
from mlflow.tracking._tracking_service import utils as tracking_settings
from mlflow.types.schema import Array, ColSpec, Schema

from reservoir_dqn.card import Release
from reservoir_dqn.tracking import served_policy
from reservoir_dqn.tracking.champion import record_candidate
from reservoir_dqn.tracking.runs import PipelineRun
from reservoir_dqn.tracking.store import registered_model_name, retrying

log = logging.getLogger(__name__)
SERVING_REQUIREMENTS = ("mlflow", "onnxruntime", "numpy", "pandas")  # what loading the model imports, pinned below
RUN_TAGS = ("budget", "changed", "seeds", "total_frames", "env", "git_commit", "mlflow.runName")


def signature(path: Path) -> ModelSignature:
    """The observation's fields in, the action's value and the Q-values (an array) out, all float64."""
    model = onnx.load(str(path), load_external_data=False)
    fields = json.loads({prop.key: prop.value for prop in model.metadata_props}["observation"])
    output = model.graph.output[0].name
    return ModelSignature(
        inputs=Schema([ColSpec("double", field) for field in fields]),
        outputs=Schema([ColSpec("double", output), ColSpec(Array("double"), "q_values")]),
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
    """Logs a :class:`Release` to the parent run as a pyfunc model and, when ``register``, registers it."""

    def __init__(self, register: bool) -> None:
        self.register = register

    def __call__(self, run: PipelineRun, data: Mapping[str, Any]) -> None:
        release = Release.from_json(data)
        path = Path(release.onnx)
        name = registered_model_name(release.env) if self.register else None
        with _fluent_store(run.store.uri), mlflow.start_run(run_id=run.parent_id):
            info = retrying(
                mlflow.pyfunc.log_model,
                name="model",
                python_model=served_policy.__file__,
                artifacts={served_policy.ARTIFACT: str(path)},
                signature=signature(path),
                input_example=pd.DataFrame([release.example]),
                registered_model_name=name,
                pip_requirements=[f"{package}=={installed(package)}" for package in SERVING_REQUIREMENTS],
            )
        version = info.registered_model_version
        if name is None or version is None:
            return
        retrying(run.client.update_model_version, name, str(version), description=release.card)
        tags = retrying(run.client.get_run, run.parent_id).data.tags
        for key in RUN_TAGS:
            if key in tags:
                label = "run_name" if key == "mlflow.runName" else key
                retrying(run.client.set_model_version_tag, name, str(version), label, tags[key])
        record_candidate(run.client, name, str(version), release.scores, release.conditions)
        run.set_tags({"model_version": str(version)})
        log.info(
            f"MLflow: registered {name} version {version} (serve it: mlflow models serve -m models:/{name}/{version})"
        )
