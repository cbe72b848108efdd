"""Optuna's storage, shared by every worker of a study: opened with heartbeats, created by whoever is first.

Workers that start together on a fresh database race to create Optuna's tables; the losers
see a duplicate-key error and try again (:func:`open_storage`). A worker that dies mid-trial
stops sending heartbeats; after ``tune.grace_s`` the next worker marks the trial failed,
re-queues it and marks its MLflow runs killed (:func:`_retry`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from reservoir_dqn.common.errors import first_line
from reservoir_dqn.config import TuneConfig
from reservoir_dqn.tracking.store import with_postgres_driver
from reservoir_dqn.tracking.study import StudyRuns

log = logging.getLogger(__name__)
TABLE_RACE_ATTEMPTS = 5
RUN_ATTRIBUTE = "mlflow_run_id"  # the trial's user attribute that names its MLflow run


class StorageUnavailable(RuntimeError):
    """The study's storage cannot be reached or opened; the message is one line."""


def storage_url(configured: str, root: Path) -> str:
    """``--storage``/``tune.storage``, else the embedded ``sqlite:///<root>/optuna.db``."""
    return configured or f"sqlite:///{root / 'optuna.db'}"


# What losing the race to create Optuna's tables looks like: PostgreSQL, then SQLite.
RACE_SIGNS = ("duplicate key", "already exists", "unique constraint failed", "database is locked")


def open_storage(url: str, settings: TuneConfig, study_runs: StudyRuns | None = None) -> RDBStorage:
    """Optuna's RDB storage with heartbeats and retries of failed trials; one line when it cannot be reached.

    Workers that start together on a fresh database race to create Optuna's tables; the
    losers see a duplicate-key error and simply try again.
    """
    for attempt in range(TABLE_RACE_ATTEMPTS):
        try:
            storage = RDBStorage(
                with_postgres_driver(url),
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=settings.heartbeat_s,
                grace_period=settings.grace_s,
                heartbeat_stale_trial_callback=_retry(settings.retries, study_runs),
            )
            storage.get_all_studies()  # a real round trip
            return storage
        except Exception as error:  # noqa: BLE001 - any failure here means "this storage cannot be used"
            racing = any(sign in str(error).lower() for sign in RACE_SIGNS)
            if not racing or attempt == TABLE_RACE_ATTEMPTS - 1:
                raise StorageUnavailable(
                    f"Optuna storage {safe_url(url)} cannot be reached ({first_line(error)})"
                ) from None
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def safe_url(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{credentials.split(':')[0]}{':***' if ':' in credentials else ''}{at}{host}" if at else url


def _retry(retries: int, study_runs: StudyRuns | None) -> Callable[[optuna.Study, FrozenTrial], None]:
    """Re-queue a trial whose worker died, and mark its MLflow run killed."""
    retry = RetryHeartbeatStaleTrialCallback(max_retry=retries)

    def stale(study: optuna.Study, trial: FrozenTrial) -> None:
        log.info(f"trial {trial.number}: its worker stopped sending heartbeats; re-queued for another worker")
        retry(study, trial)
        if study_runs is not None:
            study_runs.end_trial_runs(trial.user_attrs.get(RUN_ATTRIBUTE), "KILLED")

    return stale


def make_study(storage: RDBStorage, name: str, settings: TuneConfig) -> optuna.Study:
    sampler: optuna.samplers.BaseSampler
    if settings.sampler == "tpe":
        # The constant liar: parallel workers do not propose the point a running trial explores.
        sampler = optuna.samplers.TPESampler(n_startup_trials=settings.startup_trials, constant_liar=True)
    else:
        sampler = optuna.samplers.RandomSampler()
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    if settings.pruner == "median":
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=settings.startup_trials, n_warmup_steps=settings.warmup_validations
        )
    return optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction="maximize", load_if_exists=True
    )
