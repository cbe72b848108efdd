"""Experiment tracking against real stores: the embedded SQLite store and a real `mlflow server`."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from reservoir_dqn.commands import evaluate, export, plot, train
from reservoir_dqn.commands.exits import Exit
from reservoir_dqn.common.files import file_digest
from reservoir_dqn.common.metrics import MetricGroup, Record
from reservoir_dqn.config import load_config
from reservoir_dqn.envs import profile
from reservoir_dqn.tracking import Tracking, experiment_name, registered_model_name
from reservoir_dqn.tracking.file_runs import FileRun
from reservoir_dqn.tracking.naming import NAME_LIMIT, _changes, identify
from reservoir_dqn.tracking.outcomes import describe_experiment
from reservoir_dqn.tracking.registry import _fluent_store
from reservoir_dqn.tracking.runs import MlflowSink, PipelineRun
from reservoir_dqn.tracking.store import connect
from reservoir_dqn.tracking.views import KEY_VIEW, VIEW_TAG_PREFIX, experiment_tags
from tests.conftest import REPO, wait_for, write_params
from tests.servers import MlflowServer, free_port

TRACKED = {"tracking.enabled": True, "tracking.tensorboard": True}
TINY_CHAMPION = {"tracking.champion_budget": {"reservoir": {"total_frames": 800, "seeds": 2}}}


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server.uri
    server.stop()


def _run_ids(project: Path) -> dict[str, str]:
    run_ids = json.loads((project / "metrics/train.json").read_text())["run_ids"]
    assert run_ids["parent"]
    return dict(run_ids)


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.mark.slow
def test_a_pipeline_execution_is_a_parent_run_with_a_child_run_per_seed(project: Path, monkeypatch, capsys) -> None:
    write_params(project / "params.yaml", **TRACKED, **TINY_CHAMPION, **{"tracking.log_interval_frames": 200})
    assert train.main([]) == 0 and evaluate.main([]) == 0 and plot.main([]) == 0
    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(uri)
    ids = _run_ids(project)
    parent = client.get_run(ids["parent"])
    assert client.get_experiment(parent.info.experiment_id).name == experiment_name("reservoir")
    assert parent.info.status == "FINISHED" and parent.data.tags["seeds"] == "2"
    assert parent.data.params["dqn.gamma"] == str(load_config(project / "params.yaml").dqn.gamma)
    assert {"seed", "env.name", "dqn.lr", "train.seeds", "evaluate.episodes"} <= set(parent.data.params)
    # The parent holds few metrics, named as metrics/summary.json names them: mean, interval and IQM of
    # each headline metric, the best snapshots' score and the training time.
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert set(summary) | {"score_iqm", "return_lo", "best_snapshot_score"} <= set(parent.data.metrics)
    assert len(parent.data.metrics) == 24, sorted(parent.data.metrics)  # converged_agents, the front's 5 among them
    # The experiment's description links to a saved runs-table view whose columns are this run's key metrics.
    experiment = client.get_experiment(parent.info.experiment_id)
    assert f"viewStateShareKey={KEY_VIEW}" in experiment.tags["mlflow.note.content"]
    view = json.loads(experiment.tags[VIEW_TAG_PREFIX + KEY_VIEW])
    columns = [column for column in view["selectedColumns"] if column.startswith("metrics.")]
    assert view["orderByKey"] == "metrics.`score`" and view["orderByAsc"] is False
    assert {column.removeprefix("metrics.").strip("`") for column in columns} <= set(parent.data.metrics)
    assert len(columns) == 7 and f"tags.run_kind = '{parent.data.tags['run_kind']}'" == view["searchFilter"]
    assert view["columnOrder"][-len(view["selectedColumns"]) :] == view["selectedColumns"]  # in reading order
    assert all(value == float(f"{value:.4g}") for value in parent.data.metrics.values())  # short in the table
    assert parent.data.tags["baselines_run"]  # the baselines live in one reference run, not in every run
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{ids['parent']}'")
    assert sorted(child.info.run_id for child in children) == sorted([ids["seed-0"], ids["seed-1"]])
    for child in children:
        steps = [point.step for point in client.get_metric_history(child.info.run_id, "learning/td_loss")]
        assert steps == [200, 400, 600, 800]  # a point per log interval (the checkpoints fall on it)
        assert {"episode/return", "validation/score", "progress/epsilon", "reservoir/storage_hm3"} <= set(
            child.data.metrics
        )
    artifacts = _artifacts(client, ids["parent"])
    assert {"params.yaml", "train.json", "eval.json", "summary.json", "figures/training_curves.png"} <= artifacts
    assert any(name.startswith("tensorboard/seed-0/events.out.tfevents") for name in artifacts)
    assert any(name.startswith("checkpoint/checkpoint-") for name in artifacts)
    assert (project / "mlartifacts").is_dir() and not (project / "mlruns").exists()
    # The model is registered by the export stage, once evaluated and exported (tests/test_serving.py).
    assert not client.search_model_versions(f"name = '{registered_model_name('reservoir')}'")


@pytest.mark.slow
def test_tensorboard_runs_are_named_by_the_run_and_compare_hyperparameters(project: Path) -> None:
    write_params(project / "params.yaml", **TRACKED)
    assert train.main([]) == 0 and evaluate.main([]) == 0
    summary = json.loads((project / "metrics/train.json").read_text())
    folder = project / summary["tensorboard_dir"]
    assert folder.parent == project / "runs" / "reservoir" and folder.name.startswith("unversioned params [")
    run = MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_run(summary["run_ids"]["seed-0"])
    events = EventAccumulator(str(folder / "seed-0")).Reload()
    # The agent's MLflow names after the environment, so that no chart mixes two environments.
    assert set(events.Tags()["scalars"]) == {f"reservoir/{name}" for name in run.data.metrics}
    assert "reservoir/policy/actions" in events.Tags()["histograms"]
    session = EventAccumulator(str(folder)).Reload()
    assert session.PluginTagToContent("hparams")  # the HPARAMS tab's session of this run
    assert {"reservoir/test/score", "reservoir/test/score_lo", "reservoir/test/score_hi"} <= set(
        session.Tags()["scalars"]
    )


def test_a_run_is_named_by_what_changed_against_the_committed_params(project: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(["git", "add", "params.yaml"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "p"], cwd=project, check=True)
    same = identify(load_config(project / "params.yaml"), project)
    assert same.name == "baseline" and same.changes == {}
    changed = identify(load_config(project / "params.yaml", ["dqn.gamma=0.95", "dqn.lr=0.002"]), project)
    assert changed.name == "gamma=0.95, lr=0.002"
    assert changed.changes["dqn.gamma"] == (0.995, 0.95) and "`dqn.gamma` 0.995 -> 0.95" in changed.description


def test_a_run_name_fits_the_runs_table_and_counts_what_it_leaves_out(project: Path, monkeypatch) -> None:
    """Names of at most NAME_LIMIT characters (MLflow's run-name column), floats to three digits; the description and
    the ``changed`` tag keep every change in full."""
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(["git", "add", "params.yaml"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "p"], cwd=project, check=True)
    tuned = ["dqn.batch_size=64", "dqn.lr=0.001058949546597122", "dqn.gamma=0.98767635401914", "dqn.tau=0.0399",
             "dqn.reward_scale=0.00667", "dqn.n_steps=1"]  # fmt: skip
    config = load_config(project / "params.yaml", tuned)
    assert identify(config, project).name == "gamma=0.988, n_steps=1 +4"  # in params.yaml's order
    monkeypatch.setenv("DVC_EXP_NAME", "tuned")
    identity = identify(config, project)
    assert identity.name == "gamma=0.988 +5 (tuned)" and len(identity.name) <= NAME_LIMIT
    assert "`dqn.lr` 0.001 -> 0.001058949546597122" in identity.description
    assert "dqn.lr=0.001058949546597122" in identity.tags(config)["changed"]
    monkeypatch.setenv("DVC_EXP_NAME", "gamma-095")
    assert identify(load_config(project / "params.yaml", ["dqn.gamma=0.95"]), project).name == "gamma=0.95 (gamma-095)"
    # A leaf is enough when no other key that names runs has it (tracking's champion budget never names one).
    longer = identify(load_config(project / "params.yaml", ["train.total_frames=8000"]), project)
    assert longer.name == "total_frames=8000 (gamma-095)"


@pytest.mark.slow
def test_training_against_a_real_tracking_server(project: Path, mlflow_server: str) -> None:
    write_params(project / "params.yaml", **TRACKED, **{"tracking.uri": mlflow_server})
    assert train.main([]) == 0 and evaluate.main([]) == 0
    client = MlflowClient(mlflow_server)
    ids = _run_ids(project)
    assert client.get_run(ids["parent"]).info.status == "FINISHED"
    assert "learning/td_loss" in client.get_run(ids["seed-1"]).data.metrics
    assert "train.json" in _artifacts(client, ids["parent"])
    assert not (project / "mlflow.db").exists()  # everything went over HTTP


@pytest.mark.slow
def test_an_experiment_created_by_a_parallel_process_is_joined(project: Path, mlflow_server: str, monkeypatch) -> None:
    """Queued experiments start together: the loser of the race to create the MLflow experiment joins it."""
    config = load_config(project / "params.yaml", ["env.name=CartPole-v1", "env.section=gym", "tracking.enabled=true"])
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
    store = connect(config, project)
    assert store is not None and calls == [name, name]
    assert store.experiment_id == original(client, name).experiment_id
    assert not store.created_experiment  # so a tuning worker waits for the creator's study run


DUPLICATE_KEY = 'duplicate key value violates unique constraint "experiment_tag_pk"'  # what PostgreSQL says


def test_an_experiment_tag_a_parallel_process_inserted_first_is_written_again(project: Path, monkeypatch) -> None:
    """Two tuning workers tag a new experiment together: the loser of the insert race updates the tag."""
    config = load_config(project / "params.yaml", ["tracking.enabled=true"])
    MlflowClient(f"sqlite:///{project / 'mlflow.db'}").create_experiment(experiment_name(config.env.name))  # untagged
    original = MlflowClient.set_experiment_tag
    raced: list[str] = []

    def inserted_by_the_other_process_first(self: MlflowClient, experiment_id: str, key: str, value: str) -> None:
        if not raced:
            raced.append(key)
            original(self, experiment_id, key, "the other process's value")
            raise MlflowException(f"(psycopg2.errors.UniqueViolation) {DUPLICATE_KEY}")
        original(self, experiment_id, key, value)

    monkeypatch.setattr(MlflowClient, "set_experiment_tag", inserted_by_the_other_process_first)
    tracking = Tracking.connect(config)
    headline = [metric.name for metric in profile(config.env).headline]
    describe_experiment(tracking, headline)
    store = tracking.store
    assert store is not None and raced
    wanted = experiment_tags(store.experiment_id, headline)
    tags = store.client.get_experiment(store.experiment_id).tags
    assert {key: tags.get(key) for key in wanted} == wanted  # the raced tag holds this process's value


@pytest.mark.parametrize("uri", ["http://127.0.0.1:{closed}", "http://10.255.255.1:5000"])
def test_unreachable_server_fails_fast_before_training(project: Path, capsys, uri: str) -> None:
    uri = uri.format(closed=free_port())
    write_params(project / "params.yaml", **TRACKED, **{"tracking.uri": uri, "tracking.connect_timeout_s": 3.0})
    started = time.monotonic()
    assert train.main([]) == Exit.FAILED
    assert time.monotonic() - started < 15
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be reached" in err[0] and uri in err[0]
    assert not (project / "checkpoints").exists() and not (project / "models").exists()


@pytest.mark.slow
def test_tracking_disabled_writes_no_store(project: Path) -> None:
    write_params(project / "params.yaml", **{"tracking.enabled": False, "tracking.tensorboard": False})
    assert train.main([]) == 0 and evaluate.main([]) == 0
    assert not (project / "mlflow.db").exists() and not (project / "runs").exists()
    assert json.loads((project / "metrics/train.json").read_text())["run_ids"] == {}


@pytest.mark.slow
def test_the_plain_files_backend_records_the_runs_the_stages_make(project: Path) -> None:
    """The second backend behind the same Tracking: the runs as JSON and CSV, no MLflow store anywhere."""
    files = {"tracking.enabled": True, "tracking.backend": "files", "tracking.tensorboard": False}
    write_params(project / "params.yaml", **files, **{"tracking.log_interval_frames": 200})
    assert train.main([]) == 0 and evaluate.main([]) == 0 and plot.main([]) == 0 and export.main([]) == 0
    ids = _run_ids(project)
    folder = project / "file-runs" / ids["parent"]
    run = json.loads((folder / "run.json").read_text())
    assert run["status"] == "FINISHED" and run["tags"]["run_kind"] == "pipeline" and run["tags"]["seeds"] == "2"
    assert run["params"]["dqn.gamma"] == load_config(project / "params.yaml").dqn.gamma
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert all(run["metrics"][name] == pytest.approx(value, rel=1e-3) for name, value in summary.items())
    assert run["metrics"]["baselines/sdp/score"] == 1.0  # the baselines beside the run's own metrics
    assert sorted(run["children"]) == sorted([ids["seed-0"], ids["seed-1"]])
    curve = (folder / "curves/seed-0.csv").read_text().splitlines()
    steps = [line.split(",")[0] for line in curve if ",learning/td_loss," in line]
    assert curve[0] == "step,key,value" and steps == ["200", "400", "600", "800"]  # a point per log interval
    for artifact in ("eval.json", "summary.json", "figures/training_curves.png", "onnx/policy.onnx"):
        assert (folder / "artifacts" / artifact).is_file(), artifact
    release = json.loads((folder / "artifacts/model.json").read_text())
    assert (
        release["digest"] == file_digest(project / "models/policy.onnx")
        and "storage_over_capacity" in release["example"]
    )
    assert not (project / "mlflow.db").exists() and not (project / "mlartifacts").exists()


def test_a_checkpoint_continued_under_another_name_gets_runs_of_its_own(project: Path) -> None:
    """A finished training continued with a larger budget: new runs named for it; the old keep FINISHED."""
    tracking = Tracking.connect(load_config(project / "params.yaml", ["tracking.enabled=true"]))
    first = tracking.start_training({}, name="baseline")
    tracking.finish()
    again = tracking.start_training(first, name="baseline")
    assert again == first  # the same training resumed: its own runs go on
    tracking.finish("KILLED")
    longer = tracking.start_training(first, name="total_frames=8000")
    tracking.finish("FAILED")
    client = MlflowClient(tracking.store.uri)
    assert longer["parent"] != first["parent"] and set(longer.values()).isdisjoint(first.values())
    assert client.get_run(longer["parent"]).data.tags["continues_run"] == first["parent"]
    assert [client.get_run(run).info.status for run in first.values()] == ["KILLED"] * len(first)
    assert client.get_run(longer["parent"]).info.run_name == "total_frames=8000"


@pytest.mark.slow
def test_a_lost_store_keeps_the_values_in_the_outbox_and_catches_up(project: Path, monkeypatch) -> None:
    config = load_config(project / "params.yaml", ["tracking.enabled=true"])
    tracking = Tracking.connect(config)
    ids = tracking.start_training({})
    run = tracking.run
    assert isinstance(run, PipelineRun)
    real = PipelineRun.send_metrics
    failing = {"on": True}

    def flaky(self: PipelineRun, values):  # type: ignore[no-untyped-def]
        if failing["on"]:
            raise ConnectionError("the server went away")
        real(self, values)

    monkeypatch.setattr(PipelineRun, "send_metrics", flaky)
    monkeypatch.setattr("reservoir_dqn.tracking.runs.FLUSH_SECONDS", 0.1)
    sink = MlflowSink(run)
    from reservoir_dqn.common.metrics import Record
    from reservoir_dqn.training.curves import PROGRESS

    schedule = {"epsilon": 0.5, "lr": 0.001, "updates": 1.0, "frames_per_second": 10.0}
    sink.emit([Record.of(PROGRESS, 40, schedule)], [])
    assert wait_for(lambda: bool(run.outbox), timeout=10)
    failing["on"] = False
    sink.emit([Record.of(PROGRESS, 80, schedule)], [])
    sink.close()
    client = MlflowClient(run.store.uri)
    steps = sorted(point.step for point in client.get_metric_history(ids["seed-0"], "progress/epsilon"))
    assert steps == [40, 80] and not run.outbox


def test_pointing_the_fluent_api_at_a_store_leaves_no_uri_behind(tmp_path: Path, monkeypatch) -> None:
    """Model logging borrows MLflow's process-wide URIs; a later store (another project) must not inherit them."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    with _fluent_store(f"sqlite:///{tmp_path / 'first.db'}"):
        assert mlflow.get_registry_uri() == f"sqlite:///{tmp_path / 'first.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'second.db'}")
    assert mlflow.get_tracking_uri() == mlflow.get_registry_uri() == f"sqlite:///{tmp_path / 'second.db'}"


def test_a_run_is_named_by_the_changes_to_its_own_environments_settings_only() -> None:
    """A CartPole run against the reservoir's params.yaml changed its name, not env.section nor the reservoir."""
    baseline = yaml.safe_load((REPO / "params.yaml").read_text())
    cartpole = ["env.name=CartPole-v1", "env.section=gym", "env.reservoir.capacity=41", "env.gym.reference_return=450"]
    changes = _changes(load_config(REPO / "params.yaml", cartpole), baseline)
    assert sorted(changes) == ["env.gym.reference_return", "env.name"]


def test_the_files_backend_keeps_an_uninterrupted_runs_curves_on_resume(tmp_path: Path) -> None:
    """The points logged after the checkpoint by the process that stopped are dropped when training resumes."""
    run = FileRun.create(tmp_path, "run", "a run", {}, 2, None)
    group = MetricGroup("group", ("value",))
    run.sink(None).emit([Record.of(group, step, {"value": torch.tensor([1.0, 2.0])}) for step in (10, 20, 30)], [])
    run.sink(20)  # the stopped process had logged step 30 after its checkpoint at 20
    rows = (run.folder / "curves/seed-1.csv").read_text().splitlines()
    assert rows == ["step,key,value", "10,group/value,2.0", "20,group/value,2.0"]
    run.set_status("FINISHED")
    record = json.loads((run.folder / "run.json").read_text())
    assert record["status"] == "FINISHED" and {child["status"] for child in record["children"].values()} == {"FINISHED"}
    assert FileRun.existing(tmp_path, run.run_ids) is not None and FileRun.existing(tmp_path, {"parent": "x"}) is None
