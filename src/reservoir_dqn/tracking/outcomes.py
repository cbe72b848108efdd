"""What the evaluate stage records beside its files (:func:`log_evaluation`): the parent run's metrics,
the experiment's description and key-metrics view, the baselines' reference run, and
TensorBoard's HPARAMS session.

These live apart from :class:`~reservoir_dqn.tracking.Tracking` because they are about test
results: the train stage never imports them, so a change to the saved view or to the
champion's statistics does not make DVC re-train (``tests/test_dvc_deps.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence

from reservoir_dqn.common.errors import first_line
from reservoir_dqn.config import Config
from reservoir_dqn.evaluation.results import Evaluation
from reservoir_dqn.tracking import Tracking
from reservoir_dqn.tracking.hparams import log_hparams
from reservoir_dqn.tracking.naming import Tag
from reservoir_dqn.tracking.store import retrying, set_experiment_tag
from reservoir_dqn.tracking.views import experiment_tags

log = logging.getLogger(__name__)


def log_evaluation(
    tracking: Tracking,
    evaluation: Evaluation,
    metrics: Mapping[str, float],
    tensorboard_dir: str | None,
    frames: int = 0,
) -> None:
    """Record an evaluation: the experiment's view, the parent run's ``metrics``, the baselines, the HPARAMS session.

    :param tensorboard_dir: the training's TensorBoard folder, relative to the project root (``None``: none).
    :param frames: how many frames each tested network trained for (TensorBoard's step of the test results).
    """
    describe_experiment(tracking, evaluation.headline)
    if tracking.run is not None:
        tracking.run.log_metrics(dict(metrics))
        log_baselines(tracking, evaluation)
    if tracking.config.tracking.tensorboard and tensorboard_dir:
        log_hparams(tracking.root / tensorboard_dir, tracking.config, evaluation, frames)


def describe_experiment(tracking: Tracking, headline: Sequence[str]) -> None:
    """Keep the experiment's description and key-metrics view of ``headline`` current (older experiments too)."""
    store = tracking.store
    if store is None:
        return
    try:
        current = retrying(store.client.get_experiment, store.experiment_id).tags
        for key, value in experiment_tags(store.experiment_id, headline).items():
            if current.get(key) != value:
                set_experiment_tag(store.client, store.experiment_id, key, value)
    except Exception as error:  # noqa: BLE001 - a description is no reason to fail the stage's work
        log.warning(f"MLflow: could not describe the experiment ({first_line(error)})")


def log_baselines(tracking: Tracking, evaluation: Evaluation) -> None:
    """The baselines' results: in MLflow, logged once per environment configuration in a reference run, linked by
    tag (they are the same for every run of the same environment and test seeds, so they are not repeated in each
    run); in plain files, beside the run's own metrics (``baselines/<policy>/<metric>``).
    """
    if tracking.run is None:
        return
    metrics = {
        f"{policy}/{name}": value for policy, values in evaluation.baselines.items() for name, value in values.items()
    }
    if tracking.store is None:
        tracking.run.log_metrics({f"baselines/{key}": value for key, value in metrics.items()})
        return
    from reservoir_dqn.tracking.runs import reference_run

    config = tracking.config
    key = f"{config.env.name}-{_env_hash(config)}-{evaluation.first_seed}-{evaluation.episodes}"
    reference = reference_run(tracking.store, key, f"baselines ({config.env.name})", metrics)
    tracking.run.set_tags({Tag.BASELINES_RUN: reference})


def _env_hash(config: Config) -> str:
    return hashlib.sha256(json.dumps(config.env.current(), sort_keys=True).encode()).hexdigest()[:10]
