"""The DVC pipeline, run for real: repro, experiments, a queued sweep, plots, compare, resume.

Each test works in a temporary copy of the repository made a git repository, with the tiny
training budget and no activated virtual environment, so DVC commands behave as they do
for a user on a fresh clone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import tree_digest, wait_for, write_params
from tests.dvc_repo import clean_env, clone_repo, commit, dvc, make_repo, queue_logs, run, run_queue

pytestmark = pytest.mark.slow
COMPARE = (sys.executable, "-m", "reservoir_dqn.cli", "compare")


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
    for name in ("models/model.pt", "models/agents/final.pt", "metrics/summary.json", "metrics/eval.json",
                 "plots/training_curves.png", "plots/trajectory.png", "logs/train/validation.csv"):  # fmt: skip
        assert (repo / name).stat().st_size > 0, name
    again = dvc(repo, "repro")
    assert "Data and pipelines are up to date" in again.stdout + again.stderr
    assert "up to date" in dvc(repo, "status").stdout


def test_dvc_tracks_a_few_headline_metrics(repo: Path) -> None:
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    metrics = next(iter(shown.values()))["data"]
    assert list(metrics) == ["metrics/summary.json"]
    names = set(metrics["metrics/summary.json"]["data"])
    assert names == {"score", "score_ci_low", "score_ci_high", "return", "reliability", "train_minutes"}


def test_a_set_param_changes_exactly_one_line_of_params_yaml(repo: Path) -> None:
    before = (repo / "params.yaml").read_text().splitlines()
    dvc(repo, "exp", "run", "-S", "dqn.gamma=0.95")
    after = (repo / "params.yaml").read_text().splitlines()
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert len(before) == len(after) and len(changed) == 1, changed
    assert changed[0][1].strip().startswith("gamma: 0.95")


def test_a_temp_experiment_leaves_the_workspace_as_it_was_and_compares_by_name(repo: Path) -> None:
    before = tree_digest(repo, exclude=(".git", ".dvc/tmp", ".dvc/cache", "mlflow.db", "mlartifacts", "runs"))
    dvc(repo, "exp", "run", "--temp", "-S", "dqn.gamma=0.95", "--name", "gamma95")
    failed = dvc(repo, "exp", "run", "--temp", "-S", "dqn.gamma=7", check=False)
    assert failed.returncode != 0 and "dqn.gamma = 7" in failed.stdout + failed.stderr
    assert tree_digest(repo, exclude=(".git", ".dvc/tmp", ".dvc/cache", "mlflow.db", "mlartifacts", "runs")) == before
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    record = next(exp for commit in shown for exp in (commit.get("experiments") or []) if exp.get("name") == "gamma95")
    data = record["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["dqn"]["gamma"] == 0.95
    assert "score" in data["metrics"]["metrics/summary.json"]["data"]
    compared = run(repo, *COMPARE, "--baseline", "main", "--change", "gamma95", check=False)
    assert "| score |" in compared.stdout and "`dqn.gamma` 0.995 -> 0.95" in compared.stdout


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


def test_every_plotted_series_has_no_empty_cells_and_the_page_renders_offline(repo: Path) -> None:
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for definition in pipeline["plots"]:
        ((title, plot),) = definition.items()
        for raw, fields in plot["y"].items():
            path = repo / raw.replace("${paths.train_log}", params["paths"]["train_log"]).replace(
                "${paths.eval_episodes}", params["paths"]["eval_episodes"]
            )
            frame = pd.read_csv(path)
            columns = [plot["x"], *([fields] if isinstance(fields, str) else fields)]
            assert len(frame) and not frame[columns].isna().any().any(), f"{title}: empty cells in {path.name}"
    dvc(repo, "plots", "show", "--out", "page")
    page = (repo / "page" / "index.html").read_text()
    assert '<meta charset="utf-8">' in page and "cdn.jsdelivr" not in page and "vegaEmbed" in page
    assert "frames collected per agent" in page and '"title": "y"' not in page


def _commit_scores(repo: Path, branch: str, scores: list[float]) -> None:
    """Commit an eval.json whose final networks scored ``scores`` (one per seed) on branch ``branch``."""
    from reservoir_dqn.statistics import summarize

    path = repo / "metrics/eval.json"
    evaluation = json.loads(path.read_text())
    evaluation["seeds"] = len(scores)
    for name in evaluation["headline"]:
        evaluation["dqn"]["final"][name] = summarize(scores).as_dict()
    path.write_text(json.dumps(evaluation))
    run(repo, "git", "checkout", "-q", "-B", branch)
    commit(repo, f"scores of {branch}")


def test_compare_passes_unchanged_and_fails_only_on_a_significant_regression(repo: Path) -> None:
    same = run(repo, *COMPARE, "--baseline", "main")
    assert "| score | -2% |" in same.stdout and "| score |" in same.stdout and "**regression**" not in same.stdout
    _commit_scores(repo, "good", [0.95, 0.96, 0.97, 0.98, 0.94])
    _commit_scores(repo, "noisy", [0.99, 0.85, 0.97, 0.90, 0.93])  # 3% lower on average, within the noise
    _commit_scores(repo, "worse", [0.80, 0.81, 0.82, 0.83, 0.79])
    noisy = run(repo, *COMPARE, "--baseline", "good", "--change", "noisy", check=False)
    assert noisy.returncode == 0 and "no significant change" in noisy.stdout, noisy.stdout
    worse = run(repo, *COMPARE, "--baseline", "good", "--change", "worse", check=False)
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert "**regression**" in worse.stdout and "0.00397" in worse.stdout  # the exact p of 5 vs 5 seeds: 1/252
    assert worse.stderr.startswith("error: score regressed: -15.6% (p = 0.00397; allowed drop 2%)")


def test_compare_refuses_a_workspace_whose_params_did_not_produce_its_metrics(repo: Path) -> None:
    """A failed `dvc exp run -S` in the workspace leaves its change in params.yaml (as DVC does)."""
    failed = dvc(repo, "exp", "run", "-S", "dqn.gamma=7", check=False)
    assert failed.returncode != 0
    refused = run(repo, *COMPARE, "--baseline", "main", check=False)
    assert refused.returncode == 2 and refused.stderr == "error: params.yaml: dqn.gamma = 7: " + (
        "Input should be less than or equal to 1\n"
    )
    run(repo, "git", "checkout", "params.yaml")
    write_params(repo / "params.yaml", **{"dqn.gamma": 0.9})  # a valid change that was never reproduced
    refused = run(repo, *COMPARE, "--baseline", "main", check=False)
    assert refused.returncode == 2
    assert "dvc status: train" in refused.stderr and "git checkout params.yaml" in refused.stderr


def test_killed_repro_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", **{"train.total_frames": 6000})
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=repo,
        env=clean_env(repo),
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


def test_a_stage_that_cannot_import_the_package_says_how_to_fix_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / ".venv").unlink()  # a clone before `make setup`
    env = clean_env(repo)
    env.pop("PYTHONPATH")
    result = dvc(repo, "repro", check=False, env=env)
    assert result.returncode != 0
    message = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert message and "cannot import reservoir_dqn" in message[0] and "make setup" in message[0]
    write_params(repo / "params.yaml")  # unchanged: nothing else was touched
