"""The CI gate's core on hand-made metrics files: verdicts, cannot-judge, the report, exit statuses, the CI script."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reservoir_dqn.commands.exits import Exit, markdown_table
from reservoir_dqn.config import load_config
from reservoir_dqn.evaluation.results import Evaluation, HeldOut, HeldOutScore
from reservoir_dqn.evaluation.statistics import summarize
from tests.conftest import REPO, evaluation_json

SCRIPT = REPO / ".ci" / "compare-metrics"
HEALTHY = [0.98, 0.97, 0.985, 0.975, 0.98]
SETTINGS = {"env.name": "reservoir", "env.reservoir.capacity": 40, "env.reservoir.demand": [3] * 12}


def evaluation(scores: list[float], **conditions: Any) -> Evaluation:
    """An evaluation of the reservoir as the evaluate stage writes it, with these per-seed scores."""
    data = json.loads(json.dumps(evaluation_json(scores, settings=SETTINGS)))  # through the file format
    data["conditions"].update(conditions)
    return Evaluation.from_json(data)


def held_out(per_seed: list[float], windows: tuple[str, ...] = ("2005-10", "2006-10")) -> HeldOut:
    """A held-out replay whose agents (final networks) scored ``per_seed``; the Markov SDP scored 0.9."""

    def score(value: float) -> HeldOutScore:
        return HeldOutScore(value, value - 0.05, value + 0.05, 100.0 * value, (value,) * len(windows))

    mean = sum(per_seed) / len(per_seed)
    baselines = {"sdp": 0.9, "sdp_independent": 0.88, "sop": 0.35, "random": 0.0, "foresight": 1.0}
    return HeldOut(
        windows=windows,
        block_years=3,
        resamples=2000,
        baselines={name: score(value) for name, value in baselines.items()},
        dqn={network: score(mean) for network in ("final", "best")},
        dqn_per_seed={network: summarize(per_seed) for network in ("final", "best")},
        dqn_over_sdp={network: (mean / 0.9, mean / 0.9 - 0.03, mean / 0.9 + 0.03) for network in ("final", "best")},
    )


def test_the_gate_starts_without_torch_or_mlflow() -> None:
    """CI runs compare on every change: it reads JSON files and needs neither (measured: 2.0 s a call, not 4.3 s)."""
    heavy = "{'torch', 'tensordict', 'torchrl', 'mlflow'}"
    code = f"import sys, reservoir_dqn.commands.compare; print(sorted({heavy} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_an_evaluation_survives_its_json_round_trip() -> None:
    made = evaluation(HEALTHY)
    assert Evaluation.from_json(json.loads(json.dumps(made.to_json()))) == made
    assert made.conditions is not None and made.conditions["evaluate.episodes"] == 100


def test_the_report_and_summary_say_how_many_agents_converged_where_training_said() -> None:
    from reservoir_dqn.commands.verdict import judge, markdown_report

    config = load_config(REPO / "params.yaml")
    baseline = dataclasses.replace(evaluation(HEALTHY), converged_at_frames=(50_000, 65_000, 40_000))
    change = dataclasses.replace(evaluation(HEALTHY), converged_at_frames=(None, 90_000, None))
    assert Evaluation.from_json(json.loads(json.dumps(change.to_json()))) == change
    report = markdown_report("main", "the workspace", baseline, change, judge(baseline, change, config), [])
    assert "Training: baseline 3 of 3 agents converged; change 1 of 3 agents converged." in report
    assert change.headline_metrics()["converged_agents"] == 1.0
    older = evaluation(HEALTHY)  # written before training said: no line, no figure
    assert "Training:" not in markdown_report("main", "x", older, older, judge(older, older, config), [])
    assert "converged_agents" not in older.headline_metrics()


def test_judge_calls_a_collapse_a_regression_and_the_report_says_so() -> None:
    from reservoir_dqn.commands.verdict import judge, markdown_report

    config = load_config(REPO / "params.yaml")
    baseline, change = evaluation([0.98, 0.97, 0.985]), evaluation([0.10, 0.20, 0.15])
    judgement = judge(baseline, change, config)
    assert judgement.gated.verdict == "regression" and judgement.metric == "score"
    report = markdown_report("main", "the workspace", baseline, change, judgement, [("dqn.lr", 0.001, 0.03)])
    rows = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| ")}
    assert "**regression**" in rows["score"] and "-0.02" in rows["score"]
    assert "not gated" in rows["return"] and "lower" in rows["return"]
    assert "`dqn.lr` 0.001 -> 0.03" in report


def _with_front(scores: list[float], losses: list[float]) -> Evaluation:
    """An evaluation whose agents were placed on an exact front: each seed's mean utility loss, and thrice it as the
    largest; the front's own figures beside them."""
    data = json.loads(json.dumps(evaluation_json(scores, settings=SETTINGS)))
    for network in ("final", "best"):
        data["dqn"][network]["utility_loss_mean"] = summarize(losses, 0.0).as_dict()
        data["dqn"][network]["utility_loss_max"] = summarize([3 * loss for loss in losses], 0.0).as_dict()
    point = {"energy_gwh_per_year": 200.0, "deficit_hm3_per_year": 1.0}
    entry = point | {"expected_utility_loss": 30.0, "maximum_utility_loss": 90.0}
    data["trade_offs"] = {
        "objectives": "energy against supply deficit",
        "scalarisation": "lam",
        "vertices": [{"lam": 0.0, **point}, {"lam": 1.0, **point}],
        "corners": [0.5],
        "certificate": 0.1,
        "certificate_share": 5e-5,
        "solves": 3,
        "configured_optimum": {"lam": 0.5, "utility": 2000.0, **point},
        "sop": entry,
        "agents": {"final": [entry] * len(scores), "best": [entry] * len(scores)},
    }
    return Evaluation.from_json(data)


def test_the_utility_losses_to_the_front_are_compared_ungated_where_both_sides_have_them() -> None:
    from reservoir_dqn.commands.verdict import exit_status, judge, markdown_report

    config = load_config(REPO / "params.yaml")
    baseline, change = _with_front(HEALTHY, [30, 32, 35, 31, 33]), _with_front(HEALTHY, [60, 62, 65, 61, 63])
    assert Evaluation.from_json(json.loads(json.dumps(change.to_json()))) == change
    judgement = judge(baseline, change, config)
    assert exit_status(judgement) == Exit.OK  # the score is gated, and it did not move
    report = markdown_report("main", "the workspace", baseline, change, judgement, [])
    rows = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| ")}
    assert "not gated" in rows["utility_loss_mean"] and "higher" in rows["utility_loss_mean"]
    assert "not gated" in rows["utility_loss_max"]
    assert "utility_loss_mean" not in judge(evaluation(HEALTHY), change, config).rows  # one side has no front
    figures = change.trade_off_metrics()  # MLflow's
    assert figures["utility_loss_mean"] == pytest.approx(62.2) and "utility_loss_mean_hi" in figures
    assert figures["utility_loss_max"] == pytest.approx(3 * 62.2) and figures["front_certificate"] == 0.1
    summary = change.headline_metrics()  # DVC's: the mean and the certificate, within 120 columns
    assert summary["utility_loss_mean"] == figures["utility_loss_mean"] and summary["front_certificate"] == 0.1
    assert "utility_loss_max" not in summary and "utility_loss_mean_hi" not in summary
    assert "front_certificate" not in evaluation(HEALTHY).headline_metrics()


@pytest.mark.parametrize(
    ("change", "verdict", "status"),
    [
        ([0.10, 0.20, 0.15, 0.12, 0.18], "regression", Exit.REGRESSION),  # a collapse
        ([0.975, 0.97, 0.98, 0.972, 0.978], "within tolerance", Exit.OK),
        ([0.999, 0.999, 1.0, 0.998, 0.999], "inconclusive", Exit.OK),  # rose, by less than shown beyond 0.02
        ([0.95, 0.90, 1.00, 0.93, 0.99], "inconclusive", Exit.OK),  # too spread to tell: more seeds would
    ],
)
def test_each_verdict_gives_its_exit_status(change: list[float], verdict: str, status: Exit) -> None:
    from reservoir_dqn.commands.verdict import exit_status, judge

    judgement = judge(evaluation(HEALTHY), evaluation(change), load_config(REPO / "params.yaml"))
    assert (judgement.gated.verdict, exit_status(judgement)) == (verdict, status)


def test_an_improvement_passes_the_gate() -> None:
    from reservoir_dqn.commands.verdict import exit_status, judge

    low = [0.90, 0.905, 0.895, 0.90, 0.902]
    judgement = judge(evaluation(low), evaluation(HEALTHY), load_config(REPO / "params.yaml"))
    assert (judgement.gated.verdict, exit_status(judgement)) == ("improvement", Exit.OK)


def test_the_report_shows_each_sides_interval_as_the_evaluation_clipped_it() -> None:
    """A reliability near 1 over 5 seeds: its t interval alone ends at 1.0008; the report, as evaluate, at 1."""
    from reservoir_dqn.commands.verdict import judge, markdown_report

    def reliable(reliability: list[float]) -> Evaluation:
        return Evaluation.from_json(evaluation_json(HEALTHY, settings=SETTINGS, reliability=reliability))

    baseline, change = reliable([0.99, 0.995, 0.99, 0.992, 0.991]), reliable([1.0, 1.0, 0.9985, 1.0, 1.0])
    assert change.metric("reliability").ci_high == 1.0
    judgement = judge(baseline, change, load_config(REPO / "params.yaml"))
    report = markdown_report("main", "the workspace", baseline, change, judgement, [])
    (row,) = [line for line in report.splitlines() if line.startswith("| reliability |")]
    assert "| 0.9997 [0.9989, 1] |" in row and "1.001" not in row


def test_the_readme_prints_the_report_compare_gives_on_the_stored_metrics() -> None:
    """The docs' "Try a change" report, from the committed metrics and the stored gamma-095 experiment's."""
    from reservoir_dqn.commands.verdict import exit_status, judge, markdown_report

    page = (REPO / "docs/how-to/try-a-change.md").read_text()
    printed = page.split("It prints (measured; it exits 0, as the score did not drop by more than the tolerance):")[1]
    printed = printed.split("Each row compares")[0].strip()
    baseline = Evaluation.from_json(json.loads((REPO / "metrics/eval.json").read_text()))
    change = Evaluation.from_json(json.loads((REPO / "examples/gamma-095/eval.json").read_text()))
    judgement = judge(baseline, change, load_config(REPO / "params.yaml"))
    report = markdown_report("main", "gamma-095", baseline, change, judgement, [("dqn.gamma", 0.995, 0.95)])
    assert report.strip() == printed
    assert exit_status(judgement) == Exit.OK


def test_the_held_out_score_is_compared_in_the_report_but_never_gated() -> None:
    from reservoir_dqn.commands.verdict import judge, markdown_report

    config = load_config(REPO / "params.yaml")
    baseline = dataclasses.replace(evaluation(HEALTHY), held_out=held_out([0.88, 0.89, 0.87, 0.90, 0.88]))
    change = dataclasses.replace(evaluation(HEALTHY), held_out=held_out([0.60, 0.62, 0.58, 0.61, 0.59]))
    judgement = judge(baseline, change, config)
    assert judgement.held_out is not None and judgement.held_out.verdict == "regression"
    assert judgement.gated.verdict != "regression"  # the gate is the score on the test scenarios alone
    report = markdown_report("main", "the workspace", baseline, change, judgement, [])
    (row,) = [line for line in report.splitlines() if line.startswith("| held-out score |")]
    assert "not gated" in row and "lower" in row and "**" not in row
    assert "reported, never gated" in report


@pytest.mark.parametrize(
    ("change_windows", "change_has_one", "note"),
    [
        (("2005-10", "2006-10"), False, "the change did not replay one"),
        (("2006-10", "2007-10"), True, "replayed different windows"),
    ],
)
def test_held_out_records_that_do_not_pair_are_named_not_compared(
    change_windows: tuple[str, ...], change_has_one: bool, note: str
) -> None:
    from reservoir_dqn.commands.verdict import judge, markdown_report

    baseline = dataclasses.replace(evaluation(HEALTHY), held_out=held_out(HEALTHY))
    change = dataclasses.replace(
        evaluation(HEALTHY), held_out=held_out(HEALTHY, change_windows) if change_has_one else None
    )
    judgement = judge(baseline, change, load_config(REPO / "params.yaml"))
    report = markdown_report("main", "the workspace", baseline, change, judgement, [])
    assert judgement.held_out is None and note in report and "| held-out score |" not in report


@pytest.mark.parametrize(
    ("baseline", "change", "message"),
    [
        ([0.98], [0.98, 0.97], "1 baseline and 2 change seeds"),
        (HEALTHY, [0.5], "5 baseline and 1 change seeds"),
    ],
)
def test_too_few_seeds_cannot_be_judged(baseline: list[float], change: list[float], message: str) -> None:
    from reservoir_dqn.commands.verdict import CannotJudge, judge

    with pytest.raises(CannotJudge, match=message):
        judge(evaluation(baseline), evaluation(change), load_config(REPO / "params.yaml"))


def test_differently_measured_sides_cannot_be_judged_unless_the_keys_are_accepted() -> None:
    from reservoir_dqn.commands.verdict import CannotJudge, judge

    config = load_config(REPO / "params.yaml")
    baseline = evaluation(HEALTHY)
    moved = evaluation(HEALTHY, **{"env.reservoir.capacity": 50, "evaluate.seed": 2_000_000_100})
    with pytest.raises(CannotJudge, match=r"env.reservoir.capacity: 40 -> 50; evaluate.seed"):
        judge(baseline, moved, config)
    with pytest.raises(CannotJudge, match=r"evaluate\.seed"):
        judge(baseline, moved, config, accept=["env.reservoir"])
    accepted = judge(baseline, moved, config, accept=["env.reservoir", "evaluate.seed"])
    assert [key for key, _, _ in accepted.accepted] == ["env.reservoir.capacity", "evaluate.seed"]
    reference = evaluation(HEALTHY, **{"score.optimum_return": 2100.0})
    with pytest.raises(CannotJudge, match=r"score\.optimum_return"):
        judge(baseline, reference, config)


def test_a_baseline_older_than_the_recorded_conditions_gets_one_line() -> None:
    from reservoir_dqn.commands.verdict import CannotJudge, judge, parse_evaluation

    old = evaluation(HEALTHY).to_json()
    del old["conditions"]
    with pytest.raises(CannotJudge, match=r"baseline's eval\.json predates recorded evaluation conditions"):
        judge(Evaluation.from_json(old), evaluation(HEALTHY), load_config(REPO / "params.yaml"))
    with pytest.raises(CannotJudge, match="predates this version's evaluation format"):
        parse_evaluation(json.dumps({"env": "reservoir"}), "metrics/eval.json of 'v1'")


def test_the_docs_show_the_one_table_of_exit_statuses() -> None:
    """The reference page is generated from the table (tools/docs_reference.py; tests/test_docs.py builds it)."""
    page = (REPO / "docs/reference/exit-statuses.md").read_text()
    assert "<!-- reference: exit-statuses -->" in page
    assert "| 0 | ok |" not in page, "the table is generated, never copied by hand"
    assert markdown_table().startswith("| status | name | meaning |")
    assert len({int(status) for status in Exit}) == len(Exit)


# --------------------------------------------------------------------------- the CI step's script


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture(scope="module")
def metrics_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git and DVC repository whose commits hold hand-made metrics: tags for each case."""
    repo = tmp_path_factory.mktemp("gate")
    shutil.copy(REPO / "params.yaml", repo / "params.yaml")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "test@localhost")
    _git(repo, "config", "user.name", "test")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True, env=_env())
    cases = {
        "healthy": evaluation(HEALTHY),
        "reseeded": evaluation([0.979, 0.982, 0.978, 0.981, 0.976]),
        "collapse3": evaluation([0.10, 0.20, 0.15]),
        "healthy3": evaluation([0.98, 0.97, 0.985]),
        "single": evaluation([0.98]),
        "degraded": evaluation([0.61, 0.55, 0.72, 0.48, 0.66]),  # hand-made: a drop far beyond the tolerance
        "bigger": evaluation(HEALTHY, **{"env.reservoir.capacity": 50}),
    }
    (repo / "metrics").mkdir()
    for tag, made in cases.items():
        (repo / "metrics" / "eval.json").write_text(json.dumps(made.to_json()))
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", tag)
        _git(repo, "tag", tag)
    return repo


def _env() -> dict[str, str]:
    return {**os.environ, "DVC_NO_ANALYTICS": "1"}


def _gate(repo: Path, baseline: str, change: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), baseline, change, "report.md"], cwd=repo, capture_output=True, text=True, env=_env()
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("baseline", "change", "status", "said"),
    [
        ("healthy", "reseeded", Exit.OK, "gate: passed"),
        ("healthy", "degraded", Exit.REGRESSION, "gate: failed, a regression"),
        ("healthy3", "collapse3", Exit.REGRESSION, "gate: failed, a regression"),
        ("healthy", "single", Exit.CANNOT_JUDGE, "gate: failed, cannot judge"),
        ("healthy", "bigger", Exit.CANNOT_JUDGE, "gate: failed, cannot judge"),
        ("healthy", "no-such-revision", Exit.BAD_INPUT, "gate: failed, compare could not run"),
    ],
)
def test_the_ci_script_passes_only_what_the_gate_passes(
    metrics_repo: Path, baseline: str, change: str, status: Exit, said: str
) -> None:
    result = _gate(metrics_repo, baseline, change)
    assert result.returncode == status, result.stdout + result.stderr
    assert said in result.stdout
    assert "Traceback" not in result.stderr
    if status in (Exit.CANNOT_JUDGE, Exit.BAD_INPUT):
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(("cannot judge:", "error:")), result.stderr


@pytest.mark.slow
def test_the_ci_script_accepts_the_differences_a_change_lists(metrics_repo: Path) -> None:
    accepted = metrics_repo / ".ci" / "accepted-differences"
    accepted.parent.mkdir(exist_ok=True)
    accepted.write_text("# this change enlarges the reservoir on purpose\nenv.reservoir.capacity\n")
    try:
        result = _gate(metrics_repo, "healthy", "bigger")
    finally:
        shutil.rmtree(accepted.parent)
    assert result.returncode == Exit.OK, result.stdout + result.stderr
    assert (
        "accepted on purpose (--accept): `env.reservoir.capacity` 40 -> 50" in (metrics_repo / "report.md").read_text()
    )


def test_with_tracking_on_the_judgement_is_left_on_the_change_run(project: Path) -> None:
    """Per metric the baseline's mean, the difference with its interval and the verdict; the report on its page."""
    from mlflow import MlflowClient

    from reservoir_dqn.commands.compare import track_judgement
    from reservoir_dqn.commands.verdict import judge, markdown_report
    from reservoir_dqn.common.files import write_json
    from reservoir_dqn.tracking import Tracking
    from tests.conftest import training_json

    config = load_config(project / "params.yaml", ["tracking.enabled=true"])
    tracking = Tracking.connect(config)
    run_ids = tracking.start_training({}, name="gamma=0.95")
    tracking.finish()
    write_json(project / "metrics/train.json", training_json(run_ids=run_ids))
    baseline, change = evaluation(HEALTHY), evaluation([score + 0.05 for score in HEALTHY])
    judgement = judge(baseline, change, config)
    report = markdown_report("main", "the workspace", baseline, change, judgement, [])
    for _ in range(2):  # a second comparison replaces the first
        track_judgement(config, judgement, change, "main (0123456789)", None, report)
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    run = client.get_run(run_ids["parent"])
    score = judgement.rows["score"]
    assert run.data.metrics["score_diff"] == pytest.approx(score.difference, rel=1e-3)  # the report's 4 digits
    assert (run.data.metrics["score_diff_lo"], run.data.metrics["score_diff_hi"]) == pytest.approx(
        (score.ci_low, score.ci_high), rel=1e-3
    )
    assert run.data.metrics["score_baseline"] == pytest.approx(score.baseline.mean, rel=1e-3)
    assert run.data.tags["score_verdict"] == score.verdict == "improvement"
    assert run.data.tags["compared_to"] == "main (0123456789)" and "reliability_verdict" in run.data.tags
    description = run.data.tags["mlflow.note.content"]
    escaped = report.replace("[", "\\[").replace("]", "\\]")  # MLflow's Markdown would read "[a, b] (c)" as a link
    assert description.count(escaped) == 1 and description.startswith("**unversioned params**")  # what the run is
    experiment = client.get_experiment(run.info.experiment_id)
    assert "mlflow.sharedViewState.compared" in experiment.tags


def test_with_tracking_on_and_no_store_compare_creates_none(project: Path) -> None:
    from reservoir_dqn.commands.compare import track_judgement
    from reservoir_dqn.commands.verdict import judge
    from reservoir_dqn.common.files import write_json
    from tests.conftest import training_json

    config = load_config(project / "params.yaml", ["tracking.enabled=true"])
    write_json(project / "metrics/train.json", training_json(run_ids={"parent": "0" * 32}))
    judgement = judge(evaluation(HEALTHY), evaluation(HEALTHY), config)
    track_judgement(config, judgement, evaluation(HEALTHY), "main (0123456789)", None, "report")
    assert not (project / "mlflow.db").exists()
