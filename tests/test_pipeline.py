"""The DVC pipeline, run for real: repro, no-op repro, experiments, a queued sweep, compare, resume.

Each test works in a temporary copy of the repository made a git repository, with the
tiny training budget, so DVC commands behave as they do for a user on a fresh clone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_for, write_params
from tests.dvc_repo import clean_env, clone_repo, commit, dvc, make_repo, queue_logs, run, run_queue

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny project after one `dvc repro`, results committed: the baseline each test starts from."""
    root = make_repo(tmp_path_factory.mktemp("baseline") / "repo")
    dvc(root, "repro")
    commit(root, "baseline results")
    return root


@pytest.fixture
def repo(reproduced: Path, tmp_path: Path) -> Path:
    return clone_repo(reproduced, tmp_path / "repo")


def test_repro_produces_everything_and_a_second_repro_does_nothing(repo: Path) -> None:
    """`repo` is a copy of the project after its first `dvc repro`."""
    assert (repo / "models/model.pt").exists()
    for name in (
        "metrics/train.json",
        "metrics/eval.json",
        "plots/training_curves.png",
        "plots/evaluation_returns.png",
        "logs/train_log.csv",
    ):
        assert (repo / name).stat().st_size > 0, name
    assert json.loads((repo / "metrics/eval.json").read_text())["dqn"]["return_mean"] > 0
    again = dvc(repo, "repro")
    assert "Data and pipelines are up to date" in again.stdout + again.stderr
    status = dvc(repo, "status")
    assert "up to date" in status.stdout + status.stderr


def test_experiment_with_a_changed_param_is_listed_with_its_metric(repo: Path) -> None:
    dvc(repo, "exp", "run", "-S", "dqn.gamma=0.95", "--name", "gamma95")
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    experiments = [exp for commit in shown for exp in (commit.get("experiments") or [])]
    record = next(exp for exp in experiments if exp.get("name") == "gamma95")
    data = record["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["dqn"]["gamma"] == 0.95
    assert "return_mean" in data["metrics"]["metrics/eval.json"]["data"]["dqn"]


def test_queued_sweep_runs_two_experiments_in_parallel(repo: Path) -> None:
    dvc(repo, "exp", "run", "--queue", "-S", "dqn.gamma=0.9,0.95")
    status = run_queue(repo, jobs=2, timeout=480)
    assert status.count("Success") == 2, status + queue_logs(repo, status)
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    gammas = {
        exp["revs"][0]["data"]["params"]["params.yaml"]["data"]["dqn"]["gamma"]
        for commit in shown
        for exp in (commit.get("experiments") or [])
    }
    assert {0.9, 0.95} <= gammas
    dvc(repo, "queue", "stop", check=False)


def test_compare_passes_unchanged_and_fails_on_an_injected_regression(repo: Path) -> None:
    compare = (sys.executable, "-m", "reservoir_dqn.cli", "compare", "--baseline", "main")
    same = run(repo, *compare)
    assert "| `dqn.return_mean` | 5% |" in same.stdout and "**FAIL**" not in same.stdout
    metrics_path = repo / "metrics/eval.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["dqn"]["return_mean"] -= 0.5 * abs(metrics["dqn"]["return_mean"])  # 50% worse, whatever its sign
    metrics_path.write_text(json.dumps(metrics))
    write_params(repo / "params.yaml", **{"dqn.gamma": 0.5})
    worse = run(repo, *compare, check=False)
    assert worse.returncode == 1
    assert "**FAIL**" in worse.stdout and "-50.0%" in worse.stdout
    assert "dqn.gamma" in worse.stdout  # the param that changed is listed
    assert "error: dqn.return_mean regressed" in worse.stderr


def test_killed_repro_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", **{"train.total_frames": 6000})
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=repo,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    checkpoints = repo / "checkpoints"
    wrote = wait_for(lambda: list(checkpoints.glob("checkpoint-*.torchrl")), timeout=300, interval=0.2)
    assert wrote, "no checkpoint was written"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (repo / "models/model.pt").exists()
    result = dvc(repo, "repro")
    assert "resuming from" in result.stdout
    summary = json.loads((repo / "metrics/train.json").read_text())
    assert summary["frames"] == 6000 and summary["resumed_from_frames"] > 0
