"""Experiment tracking against real stores: the embedded SQLite store and a real `mlflow server`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from reservoir_dqn.config import load_config
from reservoir_dqn.stages import evaluate, plot, train
from reservoir_dqn.tracking import TensorBoardSink, ThinnedSink, Tracking, experiment_name, registered_model_name
from tests.conftest import write_params
from tests.servers import MlflowServer, free_port

TRACKED = {"tracking.enabled": True, "tracking.tensorboard": True}
NAMESPACES = ("train/", "episode/", "agent/", "eval/")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server.uri
    server.stop()


def _run_id(project: Path) -> str:
    run_id = json.loads((project / "metrics/train.json").read_text())["mlflow_run_id"]
    assert run_id
    return str(run_id)


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_a_pipeline_execution_is_one_complete_mlflow_run(project: Path, monkeypatch) -> None:
    # Two-year episodes, so that some end inside the tiny run's 200-frame segments.
    overrides = {"tracking.log_interval_frames": 240, "env.reservoir.horizon_months": 24}
    write_params(project / "params.yaml", **TRACKED, **overrides)
    assert train.main([]) == 0
    assert evaluate.main([]) == 0
    assert plot.main([]) == 0
    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.get_run(_run_id(project))
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == experiment_name("reservoir")
    assert run.info.status == "FINISHED"
    assert run.data.params["dqn.gamma"] == str(json.loads(json.dumps(run.data.params["dqn.gamma"])))
    assert {"seed", "env.name", "dqn.lr", "train.total_frames", "evaluate.episodes"} <= set(run.data.params)
    assert {"git_commit", "env", "seed", "dvc_exp_name", "dvc_baseline_rev"} <= set(run.data.tags)
    for namespace in NAMESPACES:
        names = [name for name in run.data.metrics if name.startswith(namespace)]
        assert names, namespace
        history = client.get_metric_history(run.info.run_id, names[0])
        assert len({point.step for point in history}) >= 2 or namespace == "eval/", namespace
    # One point per 240 frames (batches of 40), plus one at each checkpoint (every 200) and evaluation (400, 800).
    steps = [point.step for point in client.get_metric_history(run.info.run_id, "train/epsilon")]
    assert sorted(steps) == [200, 240, 400, 480, 600, 720, 800]
    eval_steps = [point.step for point in client.get_metric_history(run.info.run_id, "eval/return_mean")]
    assert sorted(eval_steps) == [400, 800]
    assert "eval/test_dqn_return_mean" in run.data.metrics
    artifacts = _artifacts(client, run.info.run_id)
    assert {"params.yaml", "train.json", "eval.json", "figures/training_curves.png"} <= artifacts
    assert any(name.startswith("tensorboard/events.out.tfevents") for name in artifacts)
    assert any(name.startswith("checkpoint/checkpoint-") for name in artifacts)
    assert (project / "mlartifacts").is_dir() and not (project / "mlruns").exists()
    # The registered model loads back and acts greedily.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the fluent API reads it; monkeypatch undoes it
    policy = mlflow.pytorch.load_model(f"models:/{registered_model_name('reservoir')}@champion")
    actions = policy(torch.rand(5, 3))  # storage / capacity, sin and cos of the month
    assert actions.shape == (5,) and actions.dtype == torch.int64 and bool(((actions >= 0) & (actions < 11)).all())


def test_tensorboard_holds_the_same_scalar_names_as_mlflow(project: Path) -> None:
    write_params(project / "params.yaml", **TRACKED)
    assert train.main([]) == 0
    run_id = _run_id(project)
    mlflow_names = set(MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_run(run_id).data.metrics)
    events = EventAccumulator(str(project / "runs" / "reservoir" / run_id)).Reload()
    tensorboard_names = set(events.Tags()["scalars"])
    assert tensorboard_names == mlflow_names
    assert "agent/actions" in events.Tags()["histograms"]
    assert len(events.Scalars("train/loss")) >= 2


def test_reservoir_runs_log_the_reservoir_namespace(project: Path) -> None:
    write_params(project / "params.yaml", **TRACKED, **{"env.name": "reservoir", "evaluate.episodes": 4})
    assert train.main([]) == 0
    assert evaluate.main([]) == 0
    run = MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_run(_run_id(project))
    reservoir = {name for name in run.data.metrics if name.startswith("reservoir/")}
    assert {
        "reservoir/storage_mean",
        "reservoir/storage_min",
        "reservoir/storage_max",
        "reservoir/energy_gwh",
        "reservoir/deficit",
        "reservoir/spill",
        "reservoir/violation",
        "reservoir/reward_energy",
        "reservoir/reward_deficit",
        "reservoir/reward_spill",
        "reservoir/reward_violation",
    } <= reservoir
    assert "eval/test_fraction_of_optimum" in run.data.metrics


def test_training_against_a_real_tracking_server(project: Path, mlflow_server: str) -> None:
    write_params(project / "params.yaml", **TRACKED, **{"tracking.uri": mlflow_server})
    assert train.main([]) == 0
    assert evaluate.main([]) == 0
    client = MlflowClient(mlflow_server)
    run = client.get_run(_run_id(project))
    assert run.info.status == "FINISHED"
    assert "train/loss" in run.data.metrics and "eval/test_dqn_return_mean" in run.data.metrics
    assert "train.json" in _artifacts(client, run.info.run_id)
    assert not (project / "mlflow.db").exists()  # everything went over HTTP


def test_an_experiment_created_by_a_parallel_process_is_joined(project: Path, mlflow_server: str, monkeypatch) -> None:
    """Queued experiments start together: the loser of the race to create the MLflow experiment joins it."""
    config = load_config(project / "params.yaml", ["env.name=CartPole-v1", "tracking.enabled=true"])
    name = experiment_name("CartPole-v1")
    client = MlflowClient(mlflow_server)
    original = MlflowClient.get_experiment_by_name
    calls = []

    def looked_up_just_before_the_other_process_created_it(self: MlflowClient, looked_for: str):  # type: ignore[no-untyped-def]
        calls.append(looked_for)
        if len(calls) == 1:
            client.create_experiment(looked_for)  # the other process wins the race
            return None
        return original(self, looked_for)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", looked_up_just_before_the_other_process_created_it)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    tracking = Tracking(config, say=lambda line: None).connect()
    assert calls == [name, name]
    assert tracking.experiment_id == original(client, name).experiment_id


def test_environment_variable_points_at_the_server(project: Path, mlflow_server: str, monkeypatch) -> None:
    write_params(project / "params.yaml", **TRACKED)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    assert train.main([]) == 0
    assert MlflowClient(mlflow_server).get_run(_run_id(project)).info.status == "FINISHED"


@pytest.mark.parametrize("uri", ["http://127.0.0.1:{closed}", "http://10.255.255.1:5000"])
def test_unreachable_server_fails_fast_before_training(project: Path, capsys, uri: str) -> None:
    uri = uri.format(closed=free_port())
    write_params(project / "params.yaml", **TRACKED, **{"tracking.uri": uri, "tracking.connect_timeout_s": 3.0})
    started = time.monotonic()
    assert train.main([]) == 1
    assert time.monotonic() - started < 15
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be reached" in err[0] and uri in err[0]
    assert not (project / "checkpoints").exists() and not (project / "models").exists()


def test_tracking_disabled_writes_no_store(project: Path) -> None:
    write_params(project / "params.yaml", **{"tracking.enabled": False, "tracking.tensorboard": False})
    assert train.main([]) == 0 and evaluate.main([]) == 0
    assert not (project / "mlflow.db").exists() and not (project / "runs").exists()
    assert json.loads((project / "metrics/train.json").read_text())["mlflow_run_id"] is None


def test_two_processes_logging_to_the_embedded_store_both_complete(project: Path) -> None:
    write_params(project / "params.yaml", **TRACKED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reservoir_dqn.cli",
                "train",
                "--set",
                f"seed={seed}",
                "--set",
                f"paths.model=model_{seed}.pt",
                "--set",
                f"paths.checkpoints=ck_{seed}",
                "--set",
                f"paths.train_log=log_{seed}.csv",
                "--set",
                f"paths.train_metrics=train_{seed}.json",
            ],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for seed in (0, 1)
    ]
    outputs = [process.communicate(timeout=300)[0].decode() for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    for seed in (0, 1):
        run_id = json.loads((project / f"train_{seed}.json").read_text())["mlflow_run_id"]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags["seed"] == str(seed)
        assert len(client.get_metric_history(run_id, "train/epsilon")) == 20


class _Recorder:
    def __init__(self) -> None:
        self.points: list[tuple[int, dict[str, float]]] = []
        self.closed = False

    def log_metrics(self, metrics, step: int) -> None:  # type: ignore[no-untyped-def]
        self.points.append((step, dict(metrics)))

    def close(self) -> None:
        self.closed = True


def test_thinned_sink_sends_the_latest_values_once_per_interval() -> None:
    recorder = _Recorder()
    sink = ThinnedSink(recorder, interval=100, start=40)  # resumed at 40 frames: points at 100, 200, ...
    for step in range(80, 281, 40):  # 80, 120, 160, 200, 240, 280
        sink.log_metrics({"loss": float(step), "episode/return": step if step == 80 else math.nan}, step)
    assert [step for step, _ in recorder.points] == [120, 200]
    assert recorder.points[0] == (120, {"loss": 120.0, "episode/return": 80.0})  # the last time it was seen
    assert recorder.points[1] == (200, {"loss": 200.0})  # not seen since the previous point
    sink.close()
    assert [step for step, _ in recorder.points] == [120, 200, 280] and recorder.closed


def test_thinned_tensorboard_gets_one_histogram_of_every_action_in_the_interval(tmp_path: Path) -> None:
    sink = ThinnedSink(TensorBoardSink(tmp_path), interval=100)
    for step in (40, 80, 120):
        sink.log_histogram("agent/actions", torch.full((10,), step // 40), step)
        sink.log_metrics({"train/loss": 1.0}, step)
    sink.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0}).Reload()
    (histogram,) = events.Histograms("agent/actions")
    assert histogram.step == 120
    assert histogram.histogram_value.num == 30 and histogram.histogram_value.sum == 60  # 10 x (1 + 2 + 3)
    assert [event.step for event in events.Scalars("train/loss")] == [120]
