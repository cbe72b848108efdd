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
from tests.dvc_repo import BASELINE, baseline_repo, clean_env, clone_repo, commit, dvc, make_repo, run

pytestmark = pytest.mark.slow
COMPARE = (sys.executable, "-m", "reservoir_dqn.commands.cli", "compare")


@pytest.fixture
def repo(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """A copy of the tiny project as a user has it after `make run` on a fresh clone (nothing committed after it)."""
    return clone_repo(baseline_repo(tmp_path_factory), tmp_path / "repo")


def test_repro_produces_everything_and_a_second_repro_does_nothing(repo: Path) -> None:
    """`repo` is a copy of the project after its first `dvc repro`."""
    for name in ("models/model.pt", "models/agents/final.pt", "metrics/summary.json", "metrics/eval.json",
                 "plots/training_curves.png", "plots/trajectory.png", "logs/train/validation.csv",
                 "logs/policy_states.csv", "plots/policy_map.png", "plots/value_lost.png",
                 "plots/regret.png"):  # fmt: skip
        assert (repo / name).stat().st_size > 0, name
    again = dvc(repo, "repro")
    assert "Data and pipelines are up to date" in again.stdout + again.stderr
    assert "up to date" in dvc(repo, "status").stdout


def test_dvc_tracks_a_few_headline_metrics(repo: Path) -> None:
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    metrics = next(iter(shown.values()))["data"]
    assert list(metrics) == ["metrics/summary.json"]
    names = set(metrics["metrics/summary.json"]["data"])
    assert names == {
        *("score", "score_lo", "score_hi", "return", "reliability", "train_minutes", "converged_agents"),
        *("regret", "regret_lo", "regret_hi", "exact_gap"),  # against the SDP optimum (results.Evaluation)
        *("utility_loss_mean", "front_certificate"),  # the exact front's (results.TRADE_OFF_SUMMARY)
    }


def _stale_stages(repo: Path) -> set[str]:
    """The stages `dvc status` says would run again."""
    out = dvc(repo, "status", "--json").stdout
    return set(json.loads(out or "{}"))


@pytest.mark.parametrize(
    ("change", "stale"),
    [
        ("tracking.connect_timeout_s=3.5", {"evaluate", "plot", "export"}),  # the connection: no result moves
        ("tracking.register_model=false", {"evaluate", "plot", "export"}),
        ("tracking.log_interval_frames=80", {"train", "evaluate", "plot", "export"}),  # the training curves' points
    ],
)
def test_a_tracking_setting_retrains_only_when_it_changes_what_train_writes(
    repo: Path, change: str, stale: set[str]
) -> None:
    key, value = change.split("=")
    write_params(repo / "params.yaml", **{**BASELINE, key: yaml.safe_load(value)})
    assert _stale_stages(repo) == stale


def test_a_change_to_another_environments_settings_reruns_nothing(repo: Path) -> None:
    """Each stage depends on the current environment's settings section only (``env.${env.section}``)."""
    write_params(repo / "params.yaml", **{**BASELINE, "env.gym.reference_return": 1.0})
    assert _stale_stages(repo) == set()
    cartpole = {**BASELINE, "env.name": "CartPole-v1", "env.section": "gym"}
    write_params(repo / "params.yaml", **cartpole)
    assert _stale_stages(repo) == {"train", "evaluate", "plot", "export"}
    dvc(repo, "commit", "--force")  # DVC records CartPole's params as the stages' (what a CartPole run leaves)
    write_params(repo / "params.yaml", **{**cartpole, "env.reservoir.demand": [4, 3, 3, 4, 5, 6, 8, 8, 6, 4, 3, 3]})
    assert _stale_stages(repo) == set()
    write_params(repo / "params.yaml", **{**cartpole, "env.gym.reference_return": 400.0})
    assert _stale_stages(repo) == {"train", "evaluate", "plot", "export"}


def test_the_mlflow_views_code_does_not_retrain(repo: Path) -> None:
    """The saved MLflow view is made by evaluate: its code is no dependency of train (nor is the gate's statistics)."""
    for module in ("tracking/views.py", "evaluation/statistics.py"):
        with (repo / "src/reservoir_dqn" / module).open("a") as source:
            source.write("# a change that moves no result\n")
    assert "train" not in _stale_stages(repo) and {"evaluate"} <= _stale_stages(repo)


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
    from reservoir_dqn.evaluation.statistics import summarize

    path = repo / "metrics/eval.json"
    evaluation = json.loads(path.read_text())
    evaluation["seeds"] = len(scores)
    for name in evaluation["headline"]:
        evaluation["dqn"]["final"][name] = summarize(scores).as_dict()
    path.write_text(json.dumps(evaluation))
    run(repo, "git", "checkout", "-q", "-B", branch)
    commit(repo, f"scores of {branch}")


def test_compare_passes_unchanged_and_fails_only_on_a_regression_beyond_the_tolerance(repo: Path) -> None:
    same = run(repo, *COMPARE, "--baseline", "main")
    assert "| score | -0.02 |" in same.stdout and "**regression**" not in same.stdout, same.stdout
    _commit_scores(repo, "good", [0.95, 0.96, 0.97, 0.98, 0.94])
    _commit_scores(repo, "noisy", [0.99, 0.85, 0.97, 0.90, 0.93])  # 0.032 lower on average, within the noise
    _commit_scores(repo, "worse", [0.80, 0.81, 0.82, 0.83, 0.79])
    noisy = run(repo, *COMPARE, "--baseline", "good", "--change", "noisy", check=False)
    assert noisy.returncode == 0 and "| inconclusive |" in noisy.stdout, noisy.stdout
    worse = run(repo, *COMPARE, "--baseline", "good", "--change", "worse", check=False)
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert "**regression**" in worse.stdout
    assert worse.stderr.startswith("error: score regressed by more than 0.02: -0.15 (upper bound "), worse.stderr


def test_one_seed_a_side_cannot_be_judged_and_says_so(repo: Path) -> None:
    _commit_scores(repo, "single", [0.95])
    result = run(repo, *COMPARE, "--baseline", "main", "--change", "single", check=False)
    assert result.returncode == 3 and result.stdout == "", result.stdout + result.stderr
    assert result.stderr.startswith("cannot judge: ") and result.stderr.count("\n") == 1
    assert "train.seeds" in result.stderr


@pytest.mark.heavy  # three trainings of 4 seeds x 10,000 frames: minutes on 2 cores
def test_a_real_regression_fails_the_gate_and_a_new_master_seed_does_not(tmp_path: Path) -> None:
    """Power and size on real runs: 4 seeds x 10,000 frames a side, default params but the budget.

    The regression is a myopic agent (gamma 0.5); the null is the same params under another
    master seed (new initialisations and environments for every agent). Measured on the
    development machine, final networks' score, mean [95% interval]: default 0.932 [0.905,
    0.959]; gamma 0.5 0.870 [0.839, 0.901], a drop of 0.062 whose 90% Welch interval
    [-0.087, -0.037] lies below -0.02 (p 0.009); seed 1 0.930 [0.916, 0.944], difference
    -0.002 [-0.022, +0.017]: inconclusive, exit 0. A learning rate 30 times the default
    (0.03) is no regression to call: 0.932 at this budget, and at CI's budget (40,000 frames x
    5 seeds) 0.959 against 0.970, a drop of 0.011 shown within the tolerance.
    """
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())
    untiny = {key: node[leaf] for key in TINY for node, leaf in [dotted(defaults, key)]}
    budget = {"train.total_frames": 10_000, "train.seeds": 4, "train.eval_interval_frames": 2_500}
    repo = make_repo(tmp_path / "repo", **{**untiny, **budget, **QUIET})
    dvc(repo, "repro", "evaluate")  # the figures are not compared
    commit(repo, "baseline results")
    dvc(repo, "exp", "run", "--temp", "-S", "dqn.gamma=0.5", "--name", "myopic", "evaluate")
    dvc(repo, "exp", "run", "--temp", "-S", "seed=1", "--name", "reseeded", "evaluate")
    regression = run(repo, *COMPARE, "--baseline", "main", "--change", "myopic", check=False)
    reseeded = run(repo, *COMPARE, "--baseline", "main", "--change", "reseeded", check=False)
    print(regression.stdout, reseeded.stdout)  # the measured figures, with -s
    assert regression.returncode == 1, regression.stdout + regression.stderr
    assert "**regression**" in regression.stdout
    assert regression.stderr.startswith("error: score regressed by more than 0.02: ")
    assert reseeded.returncode == 0 and "**regression**" not in reseeded.stdout, reseeded.stdout + reseeded.stderr


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
