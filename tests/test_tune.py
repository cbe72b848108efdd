"""`reservoir-dqn tune`: Optuna workers sharing one study on a real PostgreSQL, tracked in a real `mlflow server`;
the study's own MLflow experiment, its trials' names and the final statuses of its runs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from reservoir_dqn.commands import tune
from reservoir_dqn.commands.exits import Exit
from reservoir_dqn.commands.tuning import objective as trial_module
from reservoir_dqn.common.process import Terminated
from reservoir_dqn.config import load_config
from reservoir_dqn.config.sections import SearchDimension
from reservoir_dqn.tracking import Tracking
from reservoir_dqn.tracking import study as study_module
from reservoir_dqn.tracking.store import Store, retrying
from reservoir_dqn.tracking.study import StudyRuns, study_run
from tests.conftest import wait_for, write_params
from tests.servers import MlflowServer, PostgresServer, free_port, postgres_binaries

slow = pytest.mark.slow  # servers, subprocesses or real trainings; the rest run in-process in seconds
TUNE = (sys.executable, "-m", "reservoir_dqn.commands.cli", "tune")
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
    study_run, trial_runs = _study_runs(tracking_uri, study_name)
    numbers = sorted(int(run.data.tags["optuna_trial"]) for run in trial_runs)
    assert numbers == sorted(trial.number for trial in all_trials)  # one run per trial ...
    assert {run.data.tags["mlflow.parentRunId"] for run in trial_runs} == {study_run.info.run_id}  # ... under the study
    assert study_run.info.status == "FINISHED"  # the last worker out ended it
    return all_trials


def _study_runs(tracking_uri: str, study_name: str) -> tuple[Run, list[Run]]:
    """The study's run and its trials' runs, all in the study's own experiment and nowhere else."""
    client = MlflowClient(tracking_uri)
    experiments = {experiment.experiment_id: experiment.name for experiment in client.search_experiments()}
    runs = client.search_runs(list(experiments), f"tags.optuna_study = '{study_name}'")
    assert {experiments[run.info.experiment_id] for run in runs} == {f"reservoir-dqn/tune/{study_name}"}
    (study_run,) = [run for run in runs if run.data.tags["run_kind"] == "study"]
    return study_run, [run for run in runs if run.data.tags["run_kind"] == "trial"]


@slow
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
    print(*outputs, sep="\n")  # whole, where a failing assertion would cut them
    assert [worker.returncode for worker in workers] == [0, 0]
    trials = _check_study(storage, "shared", mlflow_server, trials=6, pruned=True)
    assert all(any(f"trial {trial.number}:" in output for output in outputs) for trial in trials)
    assert all("trial" in output for output in outputs)  # both workers ran trials
    study_run, _ = _study_runs(mlflow_server, "shared")
    artifacts = {item.path for item in MlflowClient(mlflow_server).list_artifacts(study_run.info.run_id, "optuna")}
    # Importances need two completed trials; with the pruner's decisions timed by the workers, one may be all there is.
    completed = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    importances = {"optuna/param_importances.png"} if len(completed) >= 2 else set()
    expected = {"optuna/optimization_history.png"} | importances
    assert expected <= artifacts


@slow
def test_workers_setting_one_tag_at_once_both_succeed(mlflow_server: str) -> None:
    """Both insert the tag; PostgreSQL refuses the second (a unique violation, measured: 166 of 200
    pairs without the retry). The workers that end a study together both tag its best trial."""
    client = MlflowClient(mlflow_server)
    run_id = client.create_run(client.create_experiment("one-tag-at-once")).info.run_id
    with ThreadPoolExecutor(2) as pool:
        for key in range(40):
            list(pool.map(retrying, [client.set_tag] * 2, [run_id] * 2, [f"tag{key}"] * 2, ["v"] * 2))
    assert len(client.get_run(run_id).data.tags) >= 40


@slow
def test_a_killed_workers_trial_is_retried_by_another_worker(
    tmp_path: Path, postgres: PostgresServer, mlflow_server: str
) -> None:
    project = _tuning_project(tmp_path / "project", mlflow_server, trials=3)
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
    trials = _check_study(storage, "killed", mlflow_server, trials=3)
    assert next(t for t in trials if t.number == killed.number).state == TrialState.FAIL
    retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert retries and retries[0].params == killed.params and retries[0].state in FINISHED
    assert f"trial {killed.number}: its worker stopped sending heartbeats" in output
    client = MlflowClient(mlflow_server)
    killed_run = client.get_run(killed.user_attrs["mlflow_run_id"])
    query = f"tags.`mlflow.parentRunId` = '{killed_run.info.run_id}'"
    agents = client.search_runs([killed_run.info.experiment_id], query)
    assert len(agents) == 2 and {run.info.status for run in (killed_run, *agents)} == {"KILLED"}


def _trials(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return _load(storage, study).trials
    except KeyError:  # not created yet
        return []


@slow
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


@slow
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
    from reservoir_dqn.config import TUNE_SEED_BASE, ConfigError, load_config

    seeds: list[int] = []

    class Stop(Exception):
        pass

    def capture(config, checkpoints):
        seeds.append(config.seed)
        raise Stop

    monkeypatch.setattr(trial_module, "start", capture)
    study = optuna.create_study(direction="maximize")
    untracked = Tracking(tiny_config, None, tiny_config.source.parent)
    objective = trial_module.Objective(
        tiny_config.source, ["train.min_replay_size=256"], tiny_config, untracked, StudyRuns(None), None
    )
    for _ in range(2):
        trial = study.ask()
        with pytest.raises(Stop):
            objective(trial)
    assert seeds == [TUNE_SEED_BASE, TUNE_SEED_BASE + 1]
    with pytest.raises(ConfigError, match="seed"):
        load_config(tiny_config.source, [f"seed={TUNE_SEED_BASE}"])


def test_a_trials_name_shows_its_values_briefly() -> None:
    """The last part of each key (the whole key where two share it), floats in three significant digits."""
    space = {
        "dqn.lr": SearchDimension(distribution="float", low=1e-4, high=3e-3, log=True),
        "dqn.gamma": SearchDimension(distribution="float", low=0.97, high=1.0),
        "dqn.n_steps": SearchDimension(distribution="int", low=1, high=5),
        "dqn.batch_size": SearchDimension(distribution="categorical", choices=(64, 128)),
        "dqn.tau": SearchDimension(distribution="categorical", choices=(0.0001, 0.05)),
    }
    values = {"dqn.lr": 0.0003, "dqn.gamma": 0.9712345, "dqn.n_steps": 3, "dqn.batch_size": 128, "dqn.tau": 0.0001}
    named = trial_module.trial_name(7, values, space)
    assert named == "trial 7: lr=3e-4, gamma=0.971, n_steps=3, batch_size=128, tau=0.0001"
    both = {"dqn.lr": space["dqn.lr"], "optim.lr": space["dqn.lr"], "dqn.gamma": space["dqn.gamma"]}
    assert (
        trial_module.trial_name(0, {"dqn.lr": 3.123e-4, "optim.lr": 1e-3, "dqn.gamma": 0.97}, both)
        == "trial 0: dqn.lr=3.12e-4, optim.lr=1e-3, gamma=0.97"
    )
    shown = [trial_module.compact(value) for value in (0.97, 0.0123, 0.001, 1.0, 123.456, 150000.0, -0.5, 0.0, 1e-5)]
    assert shown == ["0.97", "0.0123", "1e-3", "1", "123", "1.5e5", "-0.5", "0", "1e-5"]


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded MLflow store with its tables made (seconds of migrations), for tests to copy."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def _tracked_project(folder: Path, trials: int, store: Path) -> tuple[Path, str]:
    """A tuning project tracked in its own embedded MLflow store (a copy of ``store``): the project, the store's URI."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return _tuning_project(folder, uri, trials), uri


def _fake_train(outcome: BaseException | None) -> Any:
    """``train`` that raises ``outcome``, or ends at once with a validation score of 0.5 (no training)."""

    def train(session: Any, sinks: Sequence[Any], on_validation: Any = None) -> SimpleNamespace:
        for sink in sinks:
            sink.close()
        session.close()
        if outcome is not None:
            raise outcome
        return SimpleNamespace(summary=SimpleNamespace(agents=[SimpleNamespace(final_validation_score=0.5)] * 2))

    return train


def _env_runs(uri: str) -> list[Run]:
    """The runs in the environment's experiment (the pipeline's), which a study must leave alone."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("reservoir-dqn/reservoir")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


@slow
def test_a_study_is_tracked_in_its_own_experiment_and_ends_finished(tmp_path: Path, empty_store: Path) -> None:
    project, uri = _tracked_project(tmp_path / "project", 1, empty_store)
    result = subprocess.run([*TUNE, "--study", "lr-sweep"], cwd=project, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    study_run, trial_runs = _study_runs(uri, "lr-sweep")
    assert study_run.info.run_name == "tune: lr-sweep" and study_run.info.status == "FINISHED"
    study = _load(f"sqlite:///{project / 'optuna.db'}", "lr-sweep")
    space = load_config(project / "params.yaml").tune.space
    names = {trial.number: trial_module.trial_name(trial.number, trial.params, space) for trial in study.trials}
    assert {int(run.data.tags["optuna_trial"]): run.info.run_name for run in trial_runs} == names
    assert all(run.info.status == "FINISHED" for run in trial_runs)  # complete or pruned
    assert _env_runs(uri) == []


@pytest.mark.parametrize(
    ("outcome", "exit_status", "run_status", "optuna_state"),
    [
        (KeyboardInterrupt(), Exit.INTERRUPTED, "KILLED", TrialState.FAIL),
        (Terminated(), Exit.TERMINATED, "KILLED", TrialState.RUNNING),  # left to the heartbeats: re-queued
        (RuntimeError("a bug"), Exit.INTERNAL, "FAILED", TrialState.FAIL),
    ],
    ids=["ctrl-c", "sigterm", "error"],
)
def test_an_interrupted_or_failed_worker_ends_the_study_run_and_its_trial(
    project: Path,
    empty_store: Path,
    monkeypatch: pytest.MonkeyPatch,
    outcome: BaseException,
    exit_status: int,
    run_status: str,
    optuna_state: TrialState,
) -> None:
    _, uri = _tracked_project(project, 1, empty_store)
    monkeypatch.setattr(trial_module, "train", _fake_train(outcome))
    assert tune.main([]) == exit_status
    study_run, (trial_run,) = _study_runs(uri, "reservoir-dqn")
    assert (study_run.info.status, trial_run.info.status) == (run_status, run_status)
    (trial,) = _load(f"sqlite:///{project / 'optuna.db'}", "reservoir-dqn").trials
    assert trial.state == optuna_state


def test_the_study_run_stays_running_while_another_worker_runs_a_trial(
    project: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker that ends leaves the shared run RUNNING to the worker that ends last."""
    _, uri = _tracked_project(project, 1, empty_store)
    monkeypatch.setattr(trial_module, "train", _fake_train(None))
    monkeypatch.setattr(study_module, "log_figures", lambda *args: None)  # seconds of plotting, tested with PostgreSQL
    storage = f"sqlite:///{project / 'optuna.db'}"
    other = optuna.create_study(study_name="reservoir-dqn", storage=storage, direction="maximize").ask()
    assert tune.main([]) == Exit.OK
    assert f"trials [{other.number}] still run in other workers" in capsys.readouterr().out
    assert _study_runs(uri, "reservoir-dqn")[0].info.status == "RUNNING"
    _load(storage, "reservoir-dqn").tell(other.number, 0.4)  # the other worker's trial ends; then that worker
    assert tune.main([]) == Exit.OK
    assert _study_runs(uri, "reservoir-dqn")[0].info.status == "FINISHED"


def test_workers_starting_together_make_one_study_run(tmp_path: Path, empty_store: Path) -> None:
    """The worker that created the study's experiment makes its run; one that joined it waits for that run,
    even when it looks first; workers that all joined an older experiment keep only the oldest of theirs."""
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("reservoir-dqn/tune/together")
    creator, joiner = (Store(client, "sqlite://", tmp_path, experiment_id, created) for created in (True, False))
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(study_run, joiner, "together", "sqlite:///optuna.db", 30.0)
        time.sleep(1.0)
        assert not waiting.done() and client.search_runs([experiment_id]) == []  # it waits, and makes none
        made = study_run(creator, "together", "sqlite:///optuna.db")
        assert waiting.result(timeout=30) == made
    assert [run.info.run_id for run in client.search_runs([experiment_id])] == [made]
    client.delete_run(made)  # the study's run is gone; two workers of the old experiment start
    joined = [study_run(joiner, "together", "sqlite:///optuna.db", 0.0) for _ in range(2)]
    assert joined[0] == joined[1] and [run.info.run_id for run in client.search_runs([experiment_id])] == joined[:1]


@slow
def test_sigterm_mid_trial_ends_the_trial_and_the_study_killed(tmp_path: Path, empty_store: Path) -> None:
    project, uri = _tracked_project(tmp_path / "project", 1, empty_store)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    long_trial = ("-S", "train.total_frames=1000000")  # never ends on its own within the test
    worker = subprocess.Popen([*TUNE, *long_trial], cwd=project, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    storage = f"sqlite:///{project / 'optuna.db'}"
    try:
        assert wait_for(  # a trial is training (its MLflow run exists)
            lambda: any(t.state == TrialState.RUNNING and t.user_attrs for t in _trials(storage, "reservoir-dqn")),
            timeout=120,
            interval=0.2,
        )
        worker.send_signal(signal.SIGTERM)
        output = worker.communicate(timeout=60)[0]
    finally:
        worker.kill()
    assert worker.returncode == Exit.TERMINATED, output
    assert "trial 0: killed (SIGTERM)" in output
    study_run, (trial_run,) = _study_runs(uri, "reservoir-dqn")
    assert (study_run.info.status, trial_run.info.status) == ("KILLED", "KILLED")
    client = MlflowClient(uri)
    agents = client.search_runs([trial_run.info.experiment_id], "tags.run_kind = 'agent'")
    assert len(agents) == 2 and {run.info.status for run in agents} == {"KILLED"}
