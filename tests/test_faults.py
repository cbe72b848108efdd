"""Fault injection: crashes, bad parameters, tracking outages and parallel sweeps lose nothing.

(Corrupt and untrusted checkpoints and model files: tests/test_checkpoint.py. A diverging
loss: tests/test_training.py. Bad parameters one by one: tests/test_config.py.)
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient

from reservoir_dqn.commands import evaluate, train
from tests.conftest import model_weights, tiny_params, tree_digest, wait_for, write_params
from tests.dvc_repo import clean_env, dvc, make_repo, queue_logs, run, run_queue
from tests.servers import MlflowServer, PostgresServer, postgres_binaries
from tests.test_config import BAD_FILES

pytestmark = pytest.mark.slow

# Imported by every Python process started with this folder on PYTHONPATH (DVC's stage
# commands included): when asked, it slows down writing checkpoint archives so that a
# test can kill the process in the middle of one.
SLOW_CHECKPOINT_WRITES = """
import os
if os.environ.get("RDQN_TEST_SLOW_CHECKPOINT_WRITES"):
    import time, zipfile
    _write = zipfile.ZipFile.write
    def _slow_write(self, *args, **kwargs):
        time.sleep(0.05)
        return _write(self, *args, **kwargs)
    zipfile.ZipFile.write = _slow_write
"""


def test_sigkill_at_random_points_then_repro_finishes_with_identicalmodel_weights(tmp_path: Path) -> None:
    """Three SIGKILLs, one in the middle of a checkpoint write; the resumed run equals a straight one."""
    params = {"train.total_frames": 4000, "train.checkpoint_interval_frames": 400, "train.keep_checkpoints": 2}
    repo = make_repo(tmp_path / "repo", **params)
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "sitecustomize.py").write_text(SLOW_CHECKPOINT_WRITES)
    # The reference: the same training, uninterrupted, beside the pipeline's outputs.
    run(
        repo,
        sys.executable,
        "-m",
        "reservoir_dqn.commands.cli",
        "train",
        "--set",
        "paths.model=straight.pt",
        "--set",
        "paths.agents=straight",
        "--set",
        "paths.checkpoints=straight_checkpoints",
        "--set",
        "paths.train_log=straight_log",
        "--set",
        "paths.train_metrics=straight.json",
    )
    checkpoints = repo / "checkpoints"
    rng = random.Random(20261121)

    def archives() -> set[str]:
        return {p.name for p in checkpoints.glob("checkpoint-*.torchrl")} if checkpoints.exists() else set()

    def in_flight() -> set[str]:  # TorchRL stages a checkpoint under hidden names, then renames it
        return {p.name for p in checkpoints.glob(".checkpoint-*")} if checkpoints.exists() else set()

    kills = [  # (what, the condition to wait for, given what was there before, pause, slow writes)
        ("a random time after a checkpoint", lambda old: lambda: bool(archives() - old[0]), rng.uniform(0, 1), False),
        ("the middle of a checkpoint write", lambda old: lambda: bool(in_flight() - old[1]), 0.0, True),
        ("a random time after a checkpoint", lambda old: lambda: bool(archives() - old[0]), rng.uniform(0, 1), False),
    ]
    for label, condition, pause, slow in kills:
        env = clean_env(repo, **({"RDQN_TEST_SLOW_CHECKPOINT_WRITES": "1"} if slow else {}))
        env["PYTHONPATH"] = f"{env['PYTHONPATH']}{os.pathsep}{faults}"
        ready = condition((archives(), in_flight()))
        process = subprocess.Popen(
            [sys.executable, "-m", "dvc", "repro"],
            cwd=repo,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert wait_for(ready), f"never reached {label}"
        time.sleep(pause)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL, f"the run ended before it was killed at {label}"
    assert not (repo / "models/model.pt").exists()
    result = dvc(repo, "repro")
    assert "resuming from" in result.stdout
    straight, recovered = model_weights(repo / "straight/final.pt"), model_weights(repo / "models/agents/final.pt")
    assert all(torch.equal(straight[key], recovered[key]) for key in straight)
    assert json.loads((repo / "metrics/train.json").read_text())["frames"] == 4000


@pytest.mark.parametrize(("case", "breaker", "overrides", "fragments"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_params_exit_non_zero_and_leave_outputs_untouched(
    project: Path, capsys, case, breaker, overrides, fragments
) -> None:
    for name, content in {
        "models/model.pt": b"the previous model",
        "metrics/train.json": b'{"frames": 1}',
        "metrics/eval.json": b"{}",
        "checkpoints/checkpoint-000000000200.torchrl": b"ck",
    }.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_bytes(content)
    (project / "params.yaml").write_text(yaml.safe_dump(breaker(tiny_params())))
    before = tree_digest(project)
    arguments = [argument for override in overrides for argument in ("-S", override)]
    for stage in (train, evaluate):
        assert stage.main(arguments) == 2, case
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
        assert all(fragment in err[0] for fragment in fragments), err[0]
    assert tree_digest(project) == before


def test_tracking_server_lost_mid_run_then_resynced(project: Path, tmp_path: Path, capsys) -> None:
    server = MlflowServer(tmp_path / "server").start()
    try:
        write_params(
            project / "params.yaml",
            **{
                "tracking.enabled": True,
                "tracking.uri": server.uri,
                "train.total_frames": 2000,
                "train.checkpoint_interval_frames": 400,
            },
        )
        checkpoints = project / "checkpoints"
        killer = threading.Thread(
            target=lambda: (
                wait_for(lambda: checkpoints.exists() and any(checkpoints.glob("checkpoint-*.torchrl")))
                and server.stop()
            )
        )
        killer.start()
        assert train.main([]) == 0  # training carries on without the server
        killer.join()
        out = capsys.readouterr().out
        assert out.count("MLflow: logging failed") == 1, out
        run_ids = json.loads((project / "metrics/train.json").read_text())["run_ids"]
        outbox = project / ".mlflow-outbox" / f"{run_ids['parent']}.jsonl"
        assert outbox.exists(), "nothing was kept locally"
        # The server returns; the next stage re-sends everything that was kept.
        server.start()
        assert evaluate.main([]) == 0
        assert "re-sent" in capsys.readouterr().out
        assert not outbox.exists()
        client = MlflowClient(server.uri)
        for agent in ("seed-0", "seed-1"):
            history = client.get_metric_history(run_ids[agent], "progress/epsilon")
            assert sorted(point.step for point in history) == list(range(40, 2001, 40))
        run_info = client.get_run(run_ids["parent"])
        assert run_info.data.tags.get("sync_status") == "complete"
    finally:
        server.stop()


def _check_runs(client: MlflowClient, seeds: list[int]) -> None:
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    parents = client.search_runs(experiments, "tags.run_kind = 'pipeline'", max_results=50)
    assert sorted(int(run.data.params["seed"]) for run in parents) == seeds
    for parent in parents:
        assert parent.info.status == "FINISHED" and "score" in parent.data.metrics
        children = client.search_runs(experiments, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        assert len(children) == 2
        for child in children:
            assert len(client.get_metric_history(child.info.run_id, "progress/epsilon")) == 20


def test_three_parallel_experiments_on_the_embedded_store_and_on_a_server_on_postgresql(tmp_path: Path) -> None:
    """`dvc queue start -j 3`: two experiments log to the embedded SQLite store, one to a server on PostgreSQL.

    Two on one SQLite file is where writers collide; the server's experiment runs beside them.
    They run train and evaluate, the stages that create, fill and finish the runs and register
    the models; plot would only add figure files to runs that are finished by then.
    """
    binaries, reason = postgres_binaries()
    if binaries is None:
        pytest.skip(reason)
    database = PostgresServer(binaries).start()
    server = MlflowServer(tmp_path / "server", backend=database.uri)
    try:
        server.start()
        repo = make_repo(tmp_path / "repo", **{"tracking.enabled": True, "tracking.tensorboard": False})
        dvc(repo, "exp", "run", "--queue", "-S", "seed=0,1", "evaluate")
        dvc(repo, "exp", "run", "--queue", "-S", "seed=2", "-S", f"tracking.uri={server.uri}", "evaluate")
        status = run_queue(repo, jobs=3, timeout=600)
        logs = queue_logs(repo, status)
        dvc(repo, "queue", "stop", check=False)
        assert status.count("Success") == 3, status + logs
        assert "database is locked" not in logs
        _check_runs(MlflowClient(f"sqlite:///{repo / 'mlflow.db'}"), [0, 1])  # at the real root, not the temp copies
        _check_runs(MlflowClient(server.uri), [2])
    finally:
        server.stop()
        database.stop()
