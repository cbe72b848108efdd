"""`reservoir-dqn tune`: Optuna workers sharing one study on a real PostgreSQL, tracked in a real `mlflow server`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from tests.conftest import wait_for, write_params
from tests.servers import MlflowServer, PostgresServer, free_port, postgres_binaries

pytestmark = pytest.mark.slow
TUNE = (sys.executable, "-m", "reservoir_dqn.cli", "tune")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    binaries, reason = postgres_binaries()
    if binaries is None:
        pytest.skip(reason)
    server = PostgresServer(binaries).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mlflow_server(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"), backend=postgres.uri).start()
    yield server.uri
    server.stop()


def _tuning_project(folder: Path, tracking_uri: str = "", trials: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_params(
        folder / "params.yaml",
        **{
            "tracking.enabled": bool(tracking_uri),
            "tracking.uri": tracking_uri,
            "tune.trials": trials,
            "tune.startup_trials": 1,
            "tune.warmup_validations": 0,
            "tune.heartbeat_s": 1,
            "tune.grace_s": 3,
            "tune.overrides": [
                "train.total_frames=1600",
                "train.eval_interval_frames=200",
                "train.min_replay_size=256",
            ],
        },
    )
    with (folder / "params.yaml").open() as file:
        params = yaml.safe_load(file)
    # A search space wide enough that some trials are hopeless: the pruner must stop them.
    params["tune"]["space"] = {
        "dqn.lr": {"distribution": "float", "low": 1e-5, "high": 0.3, "log": True},
        "dqn.n_steps": {"distribution": "int", "low": 1, "high": 3},
    }
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


def _worker(project: Path, storage: str, study: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [*TUNE, "--storage", storage, "--study", study],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _load(storage: str, study_name: str) -> optuna.Study:
    """The study as the workers see it (their ``postgresql://`` means the psycopg2 driver)."""
    return optuna.load_study(study_name=study_name, storage=storage.replace("postgresql://", "postgresql+psycopg2://"))


def _check_study(
    storage: str, study_name: str, tracking_uri: str, trials: int, pruned: bool = False
) -> list[optuna.trial.FrozenTrial]:
    study = _load(storage, study_name)
    all_trials = study.trials
    assert len(study.get_trials(states=FINISHED)) >= trials
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))  # none lost
    assert len({trial.number for trial in all_trials}) == len(all_trials)  # none duplicated
    assert not pruned or study.get_trials(states=(TrialState.PRUNED,)), "no trial was pruned"
    client = MlflowClient(tracking_uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    (study_run,) = client.search_runs(experiments, f"tags.optuna_study = '{study_name}' and tags.run_kind = 'study'")
    trial_runs = client.search_runs(experiments, f"tags.optuna_study = '{study_name}' and tags.run_kind = 'trial'")
    numbers = sorted(int(run.data.tags["optuna_trial"]) for run in trial_runs)
    assert numbers == sorted(trial.number for trial in all_trials)  # one run per trial ...
    assert {run.data.tags["mlflow.parentRunId"] for run in trial_runs} == {study_run.info.run_id}  # ... under the study
    return all_trials


def test_two_workers_share_one_study_through_postgresql(
    tmp_path: Path, postgres: PostgresServer, mlflow_server: str
) -> None:
    project = _tuning_project(tmp_path / "project", mlflow_server)
    storage = postgres.create_database("optuna_shared")
    # Both workers start on the same good trial (measured: its validation score rises from -0.56
    # untrained to about -0.1), then one of them gets a hopeless one (a learning rate that
    # learns nothing in 1,600 frames, so its best stays at the untrained -0.56): the pruner has
    # a completed trial to measure it against, whatever order the workers finish in.
    study = optuna.create_study(
        study_name="shared", storage=storage.replace("postgresql://", "postgresql+psycopg2://"), direction="maximize"
    )
    for params in ({"dqn.lr": 4e-3, "dqn.n_steps": 3},) * 2 + ({"dqn.lr": 1e-5, "dqn.n_steps": 1},):
        study.enqueue_trial(params, skip_if_exists=False)
    workers = [_worker(project, storage, "shared") for _ in range(2)]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    trials = _check_study(storage, "shared", mlflow_server, trials=6, pruned=True)
    assert all(any(f"trial {trial.number}:" in output for output in outputs) for trial in trials)
    assert all("trial" in output for output in outputs)  # both workers ran trials
    client = MlflowClient(mlflow_server)
    study_runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        "tags.optuna_study = 'shared' and tags.run_kind = 'study'",
    )
    artifacts = {item.path for item in client.list_artifacts(study_runs[0].info.run_id, "optuna")}
    assert {"optuna/optimization_history.png", "optuna/param_importances.png"} <= artifacts


def test_a_killed_workers_trial_is_retried_by_another_worker(
    tmp_path: Path, postgres: PostgresServer, mlflow_server: str
) -> None:
    project = _tuning_project(tmp_path / "project", mlflow_server)
    storage = postgres.create_database("optuna_killed")
    doomed = _worker(project, storage, "killed")
    assert wait_for(  # a trial is training (its MLflow run exists)
        lambda: any(t.state == TrialState.RUNNING and t.user_attrs for t in _trials(storage, "killed")),
        timeout=120,
        interval=0.2,
    )
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    (killed,) = [trial for trial in _trials(storage, "killed") if trial.state == TrialState.RUNNING]
    survivor = _worker(project, storage, "killed")
    output = survivor.communicate(timeout=600)[0]
    assert survivor.returncode == 0, output
    trials = _check_study(storage, "killed", mlflow_server, trials=6)
    assert next(t for t in trials if t.number == killed.number).state == TrialState.FAIL
    retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert retries and retries[0].params == killed.params and retries[0].state in FINISHED
    assert f"trial {killed.number}: its worker stopped sending heartbeats" in output
    killed_run = MlflowClient(mlflow_server).get_run(killed.user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "KILLED"


def _trials(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return _load(storage, study).trials
    except KeyError:  # not created yet
        return []


def test_a_worker_fails_in_one_line_when_storage_or_tracking_is_unreachable(tmp_path: Path) -> None:
    project = _tuning_project(tmp_path / "project")
    closed = f"postgresql://nobody@127.0.0.1:{free_port()}/optuna"
    result = subprocess.run([*TUNE, "--storage", closed], cwd=project, capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 4 and len(lines) == 1 and lines[0].startswith("error: Optuna storage postgresql://")
    unreachable = f"http://127.0.0.1:{free_port()}"
    tracked = ("-S", "tracking.enabled=true", "-S", f"tracking.uri={unreachable}", "-S", "tracking.connect_timeout_s=2")
    result = subprocess.run([*TUNE, *tracked], cwd=project, capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 4 and len(lines) == 1 and "cannot be reached" in lines[0]


def test_two_workers_start_together_on_a_fresh_embedded_store(tmp_path: Path) -> None:
    """Both race to create Optuna's tables in the new SQLite file; the loser tries again (it used to exit 1)."""
    project = _tuning_project(tmp_path / "project", trials=1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    workers = [
        subprocess.Popen(TUNE, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    assert len(_load(f"sqlite:///{project / 'optuna.db'}", "reservoir-dqn").get_trials(states=FINISHED)) >= 1


def test_trials_train_with_master_seeds_disjoint_from_the_pipelines(tiny_config, monkeypatch) -> None:
    """Trial n's master seed is TUNE_SEED_BASE + n, above every seed params.yaml accepts."""
    from reservoir_dqn import tune
    from reservoir_dqn.config import TUNE_SEED_BASE, ConfigError, load_config

    seeds: list[int] = []

    class Stop(Exception):
        pass

    def capture(config, checkpoints):
        seeds.append(config.seed)
        raise Stop

    monkeypatch.setattr(tune, "start", capture)
    study = optuna.create_study(direction="maximize")
    objective = tune.Objective(tiny_config.source, ["train.min_replay_size=256"], tiny_config, None, None)
    for _ in range(2):
        trial = study.ask()
        with pytest.raises(Stop):
            objective(trial)
    assert seeds == [TUNE_SEED_BASE, TUNE_SEED_BASE + 1]
    with pytest.raises(ConfigError, match="seed"):
        load_config(tiny_config.source, [f"seed={TUNE_SEED_BASE}"])
