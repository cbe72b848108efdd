"""The model registry: the shipped agent as a registered model version, and the ``champion`` alias.

Each pipeline execution logs its shipped network (the agent that validated best) with
``mlflow.pytorch.log_model`` and registers it as a new version of
``reservoir-dqn-<env>``, described and tagged with the run's name, changes, budget and
seed count. Which version holds the alias ``champion`` is :mod:`.champion`'s concern.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.models import infer_signature
from mlflow.tracking._model_registry import utils as registry_settings
from mlflow.tracking._tracking_service import utils as tracking_settings

from reservoir_dqn.agent import load_model
from reservoir_dqn.policy import GreedyPolicy
from reservoir_dqn.tracking.runs import PipelineRun
from reservoir_dqn.tracking.store import registered_model_name, retrying

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _fluent_store(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (which ``mlflow.pytorch.log_model`` uses) at ``uri`` for a moment.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``; left behind, it would
    redirect every later store lookup of this process, so both are put back afterwards: the
    module-level settings as they were (usually unset), not their resolved values, which
    would pin every later client of the process, registry included, to this store.
    """
    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    previous = tracking_settings._tracking_uri, registry_settings._registry_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
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
    """Logs a model file's greedy policy to the parent run and, when ``register``, registers it."""

    def __init__(self, register: bool) -> None:
        self.register = register

    def __call__(self, run: PipelineRun, model_path: Path) -> None:
        q_network, spec = load_model(model_path)
        policy = GreedyPolicy(q_network)
        example = np.zeros((2, spec.obs_dim), dtype=np.float32)
        with torch.no_grad():
            signature = infer_signature(example, policy(torch.from_numpy(example)).numpy())
        requirements = [f"torch=={torch.__version__.split('+')[0]}", "torchrl", "reservoir-dqn"]
        name = registered_model_name(spec.env_name) if self.register else None
        with _fluent_store(run.store.uri), mlflow.start_run(run_id=run.parent_id):
            info = retrying(
                mlflow.pytorch.log_model,
                policy,
                name="model",
                input_example=example,
                signature=signature,
                registered_model_name=name,
                pip_requirements=requirements,
            )
        version = info.registered_model_version
        if name is None or version is None:
            return
        parent = retrying(run.client.get_run, run.parent_id)
        tags = parent.data.tags
        description = tags.get("mlflow.note.content", "")
        retrying(run.client.update_model_version, name, str(version), description=description)
        for key in ("budget", "changed", "seeds", "total_frames", "env", "git_commit", "mlflow.runName"):
            if key in tags:
                label = "run_name" if key == "mlflow.runName" else key
                retrying(run.client.set_model_version_tag, name, str(version), label, tags[key])
        run.set_tags({"model_version": str(version)})
