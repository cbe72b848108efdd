"""The DVC pipeline, run for real: repro, experiments, plots, compare and its power against a real regression.

Each test works in a temporary copy of the repository made a git repository, with the tiny
training budget and no activated virtual environment, so DVC commands behave as they do
for a user on a fresh clone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, TINY, dotted, tree_digest, write_params
from tests.dvc_repo import baseline_repo, clean_env, clone_repo, commit, dvc, make_repo, run

pytestmark = pytest.mark.slow
COMPARE = (sys.executable, "-m", "reservoir_dqn.cli", "compare")


@pytest.fixture
def repo(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """A copy of the tiny project after its first `dvc repro` (`make run`), results committed."""
    return clone_repo(baseline_repo(tmp_path_factory), tmp_path / "repo")


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
    assert names == {"score", "score_lo", "score_hi", "return", "reliability", "train_minutes"}


@pytest.mark.parametrize(
    "setting",
    ["dqn.gamma=0.95", "train.stop_at_validation_return=475", "env.reservoir.demand=[4,3,3,4,5,6,8,8,6,4,3,3]"],
)
def test_a_set_param_changes_exactly_one_line_of_params_yaml(repo: Path, setting: str) -> None:
    """DVC rewrites params.yaml with ruamel on `-S`; queueing keeps the rewritten file in its stash commit."""
    dvc(repo, "exp", "run", "--queue", "-S", setting)
    diff = run(repo, "git", "diff", "--unified=0", "HEAD", "refs/exps/celery/stash", "--", "params.yaml").stdout
    removed = [line for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert len(removed) == len(added) == 1, diff
    key = setting.split("=")[0].rsplit(".", 1)[-1]
    assert added[0].lstrip("+ ").startswith(f"{key}:") or added[0].lstrip("+ ").startswith("- 4"), diff
    dvc(repo, "queue", "remove", "--all")


def test_a_failed_temp_experiment_leaves_the_workspace_as_it_was(repo: Path) -> None:
    """The README's way to try a change (`dvc exp run --temp`, run for real by tests/test_readme.py)."""
    before = tree_digest(repo, exclude=(".git", ".dvc/tmp", ".dvc/cache"))
    failed = dvc(repo, "exp", "run", "--temp", "-S", "dqn.gamma=7", check=False)
    assert failed.returncode != 0 and "dqn.gamma = 7" in failed.stdout + failed.stderr
    assert tree_digest(repo, exclude=(".git", ".dvc/tmp", ".dvc/cache")) == before


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
    assert "With 2 and 2 seeds the smallest possible p is 0.167" in same.stdout  # the tiny budget's 2 seeds
    _commit_scores(repo, "good", [0.95, 0.96, 0.97, 0.98, 0.94])
    _commit_scores(repo, "noisy", [0.99, 0.85, 0.97, 0.90, 0.93])  # 3% lower on average, within the noise
    _commit_scores(repo, "worse", [0.80, 0.81, 0.82, 0.83, 0.79])
    noisy = run(repo, *COMPARE, "--baseline", "good", "--change", "noisy", check=False)
    assert noisy.returncode == 0 and "no significant change" in noisy.stdout, noisy.stdout
    assert "smallest possible p" not in noisy.stdout
    worse = run(repo, *COMPARE, "--baseline", "good", "--change", "worse", check=False)
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert "**regression**" in worse.stdout and "0.00397" in worse.stdout  # the exact p of 5 vs 5 seeds: 1/252
    assert worse.stderr.startswith("error: score regressed: -15.6% (p = 0.00397; allowed drop 2%)")


def test_a_real_regression_fails_the_gate_end_to_end(tmp_path: Path) -> None:
    """Power: a myopic agent (gamma 0.5) against the default, 4 seeds x 10,000 frames a side.

    Default params but the budget. Measured on the development machine, final networks:
    default scores 0.921, 0.922, 0.944, 0.942; gamma 0.5: 0.886, 0.890, 0.885, 0.878. Every
    change seed below every baseline seed gives the smallest p of 4 vs 4 seeds, 1/70.
    """
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())
    untiny = {key: node[leaf] for key in TINY for node, leaf in [dotted(defaults, key)]}
    budget = {"train.total_frames": 10_000, "train.seeds": 4, "train.eval_interval_frames": 2_500}
    repo = make_repo(tmp_path / "repo", **{**untiny, **budget, **QUIET})
    dvc(repo, "repro", "evaluate")  # the figures are not compared
    commit(repo, "baseline results")
    dvc(repo, "exp", "run", "--temp", "-S", "dqn.gamma=0.5", "--name", "myopic", "evaluate")
    result = run(repo, *COMPARE, "--baseline", "main", "--change", "myopic", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "| score |" in result.stdout and "**regression**" in result.stdout
    assert result.stderr.startswith("error: score regressed: ") and "p = 0.0143" in result.stderr


QUIET = {"tracking.enabled": False, "tracking.tensorboard": False}


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
