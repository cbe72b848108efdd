"""Statistics over seeds, on synthetic data with known answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from reservoir_dqn.config import load_config
from reservoir_dqn.evaluation.statistics import Summary, TooFewSeeds, compare, iqm, summarize, t_interval
from tests.conftest import REPO

POOL = Path(__file__).parent / "data" / "reservoir_seeds.json"


def test_interquartile_mean_drops_the_outer_quarters() -> None:
    assert iqm([1, 2, 3, 4, 100, -100, 5, 6]) == pytest.approx(np.mean([2, 3, 4, 5]))
    assert iqm([0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(0.3)  # 5 seeds: the middle three
    assert iqm([7.0]) == 7.0


def test_summary_holds_the_values_their_mean_and_a_student_t_interval_around_it() -> None:
    values = [0.95, 0.96, 0.97, 0.98, 0.93]
    summary = summarize(values)
    assert summary.per_seed == tuple(values) and summary.mean == pytest.approx(0.958)
    half = 2.776445 * np.std(values, ddof=1) / np.sqrt(5)  # t(0.975, 4 df)
    assert summary.ci_low == pytest.approx(0.958 - half) and summary.ci_high == pytest.approx(0.958 + half)
    assert Summary.from_dict(summary.as_dict()) == summary
    single = summarize([0.9])
    assert single.ci_low is None and single.ci_high is None
    flat = summarize([0.5, 0.5, 0.5])
    assert flat.ci_low == flat.ci_high == 0.5
    assert t_interval([1.0]) is None


def test_an_interval_is_clipped_to_the_metrics_range_and_only_there() -> None:
    near_one = [1.0, 1.0, 0.9985, 1.0, 1.0]  # a reliability: the t interval alone ends at 1.00083
    unclipped, clipped = summarize(near_one), summarize(near_one, 0.0, 1.0)
    assert unclipped.ci_high is not None and unclipped.ci_high > 1.0
    assert clipped.ci_high == 1.0 and clipped.ci_low == unclipped.ci_low and clipped.mean == unclipped.mean
    near_zero = summarize([0.0, 0.0, 30.0, 0.0, 0.0], 0.0)  # a vulnerability in hm3: the t interval spans +-16.7
    assert near_zero.ci_low == 0.0 and near_zero.ci_high == pytest.approx(6.0 + 2.776445 * np.sqrt(180 / 5))
    inside = [0.95, 0.96, 0.97, 0.98, 0.93]
    assert summarize(inside, 0.0, 1.0) == summarize(inside)  # an interval within the range is left as it is
    assert summarize([0.9], 0.0, 1.0).ci_high is None


def test_no_interval_of_the_committed_evaluation_moves_none_exceeding_its_declared_range() -> None:
    """Re-summarised with the reservoir's declared ranges, the committed metrics/eval.json's every figure stays."""
    from reservoir_dqn.envs import profile
    from reservoir_dqn.evaluation.results import Evaluation

    evaluation = Evaluation.from_json(json.loads((REPO / "metrics/eval.json").read_text()))
    metrics = profile(load_config(REPO / "params.yaml").env).metrics
    ranged = {metric.name: (metric.low, metric.high) for metric in metrics}
    assert set(ranged) <= set(evaluation.agents["final"])  # each declared name is a metric evaluate writes
    assert {name for name, (low, high) in ranged.items() if np.isfinite([low, high]).any()} == {
        "reliability",
        "resilience",
        "vulnerability_hm3",
        "violation_months",
        "spill_hm3",
        "energy_gwh",
        "utility_loss_mean",
        "utility_loss_max",
    }
    for summaries in evaluation.agents.values():
        for name, summary in summaries.items():
            assert summarize(summary.per_seed, *ranged.get(name, ())) == summary, name


def test_the_evaluation_clips_each_interval_to_the_range_its_profile_declares(tmp_path: Path) -> None:
    """Two stacked agents (a stored file of an earlier version): one degree of freedom, a t interval far wider than
    the reliability's range; the score has none and keeps its whole interval."""
    from reservoir_dqn.evaluation.evaluate import evaluate

    for network in ("final", "best"):
        shutil.copy(REPO / "tests/data/main-e386409/final.pt", tmp_path / f"{network}.pt")
    config = load_config(REPO / "params.yaml", ["evaluate.episodes=3"])
    evaluation = evaluate(config, tmp_path, (0, "final"))[0]
    reliability, score = evaluation.metric("reliability"), evaluation.metric("score")
    assert (reliability.ci_low, reliability.ci_high) == (0.0, 1.0)
    assert reliability.per_seed[0] != reliability.per_seed[1]  # a real spread, not a flat interval at the ends
    unbounded = summarize(score.per_seed)
    assert (score.ci_low, score.ci_high) == (unbounded.ci_low, unbounded.ci_high)


def test_a_collapse_with_three_seeds_a_side_is_a_regression() -> None:
    result = compare([0.98, 0.97, 0.985], [0.10, 0.20, 0.15], tolerance=0.02)
    assert result.verdict == "regression" and result.p < 0.01
    assert result.ci_high < -0.02


def test_one_seed_cannot_be_judged() -> None:
    with pytest.raises(TooFewSeeds, match="1 baseline and 5 change seeds"):
        compare([0.9], [0.9, 0.8, 0.85, 0.9, 0.88], tolerance=0.02)


def test_a_drop_is_a_regression_only_when_shown_larger_than_the_tolerance() -> None:
    tight = np.array([0.960, 0.961, 0.962, 0.963, 0.964])
    # Every seed lower by 1%: significant as a drop, but shown smaller than the 0.02 tolerance.
    small = compare(tight, tight - 0.01, tolerance=0.02)
    assert small.verdict == "within tolerance" and small.p < 0.05 and small.p_regression > 0.5
    # Lower by 2.1%: above the tolerance, but not shown above it with this spread.
    near = compare(tight, tight - 0.021, tolerance=0.02)
    assert near.verdict == "inconclusive" and near.p_regression > 0.05
    # Lower by 3%: shown larger than the tolerance.
    large = compare(tight, tight - 0.03, tolerance=0.02)
    assert large.verdict == "regression" and large.p_regression < 0.05
    assert compare(tight - 0.03, tight, tolerance=0.02).verdict == "improvement"


def test_the_p_value_is_welchs_for_the_shifted_null() -> None:
    from scipy import stats

    baseline, change = [0.95, 0.96, 0.97, 0.98, 0.94], [0.90, 0.91, 0.93, 0.95, 0.89]
    result = compare(baseline, change, tolerance=0.02)
    shifted = np.asarray(change) + 0.02  # H0: change + tolerance >= baseline
    expected = stats.ttest_ind(shifted, baseline, equal_var=False, alternative="less").pvalue
    assert result.p_regression == pytest.approx(expected)


def test_tolerances_work_on_negative_and_zero_baselines() -> None:
    baseline = [-120.0, -118.0, -125.0, -119.0, -121.0]
    assert compare(baseline, [value - 30 for value in baseline], tolerance=5.0).verdict == "regression"
    assert compare(baseline, [value - 1 for value in baseline], tolerance=5.0).verdict != "regression"
    zeros = [0.0, 0.01, -0.01, 0.0, 0.005]
    assert compare(zeros, [value - 0.5 for value in zeros], tolerance=0.1).verdict == "regression"


def test_a_change_that_only_moves_the_seeds_fails_the_gate_at_most_5_percent_of_the_time() -> None:
    """False alarms on the measured spread: disjoint 5-seed groups of one 20-seed default run.

    ``tests/data/reservoir_seeds.json`` holds the final networks' per-seed test results of the
    default params with 20 seeds (written by ``python -m bench.run --sections gate``).
    """
    pool = np.asarray(json.loads(POOL.read_text())["per_seed"]["score"])
    settings = load_config(REPO / "params.yaml").compare
    rng = np.random.default_rng(11)
    pairs = [rng.permutation(pool)[:10] for _ in range(300)]
    verdicts = [compare(pair[:5], pair[5:], settings.tolerance, settings.significance).verdict for pair in pairs]
    assert verdicts.count("regression") / len(verdicts) <= 0.05
