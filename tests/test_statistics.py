"""Statistics over seeds, on synthetic data with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reservoir_dqn.config import load_config
from reservoir_dqn.statistics import Summary, compare, iqm, summarize
from tests.conftest import REPO

POOL = Path(__file__).parent / "data" / "reservoir_seeds.json"


def test_interquartile_mean_drops_the_outer_quarters() -> None:
    assert iqm([1, 2, 3, 4, 100, -100, 5, 6]) == pytest.approx(np.mean([2, 3, 4, 5]))
    assert iqm([0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(0.3)  # 5 seeds: the middle three
    assert iqm([7.0]) == 7.0


def test_summary_holds_the_values_their_mean_and_an_interval_around_it() -> None:
    values = [0.95, 0.96, 0.97, 0.98, 0.93]
    summary = summarize(values)
    assert summary.per_seed == tuple(values) and summary.mean == pytest.approx(0.958)
    assert summary.ci_low is not None and summary.ci_high is not None
    assert min(values) <= summary.ci_low < summary.mean < summary.ci_high <= max(values)
    assert summarize(values) == summary  # seeded resampling: the same numbers give the same interval
    assert Summary.from_dict(summary.as_dict()) == summary
    single = summarize([0.9])
    assert single.ci_low is None and single.ci_high is None
    flat = summarize([0.5, 0.5, 0.5])
    assert flat.ci_low == flat.ci_high == 0.5


def test_the_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(300):
        sample = rng.normal(10.0, 2.0, size=30)
        summary = summarize(sample, resamples=2000)
        covered += summary.ci_low <= 10.0 <= summary.ci_high  # type: ignore[operator]
    assert 0.90 <= covered / 300 <= 0.99


def test_completely_separated_seeds_are_a_significant_regression_with_the_exact_p_value() -> None:
    baseline, change = [0.95, 0.96, 0.97, 0.98, 0.94], [0.80, 0.81, 0.82, 0.83, 0.79]
    result = compare(baseline, change, tolerance=0.02)
    assert result.verdict == "regression"
    assert result.p_lower == pytest.approx(1 / 252)  # the observed split is the most extreme of C(10, 5)
    assert result.difference == pytest.approx(-0.15)
    assert result.ci_high is not None and result.ci_high < 0
    assert compare(change, baseline, tolerance=0.02).verdict == "improvement"


def test_a_drop_within_the_tolerance_or_within_the_noise_is_not_a_regression() -> None:
    tight = [0.960, 0.961, 0.962, 0.963, 0.964]
    small = [value - 0.01 for value in tight]  # every seed lower (p = 1/252), but 1% < the 2% tolerance
    assert compare(tight, small, tolerance=0.02).verdict == "within tolerance"
    baseline = [0.95, 0.96, 0.97, 0.98, 0.94]
    noisy = [0.99, 0.85, 0.97, 0.90, 0.93]  # 3% lower on average, but the seeds overlap
    result = compare(baseline, noisy, tolerance=0.02)
    assert result.difference < -0.02 * 0.96 and result.p_lower > 0.05
    assert result.verdict == "no significant change"


def test_no_change_rarely_fails_the_gate() -> None:
    """Pairs of 5 seeds from one distribution (as spread as real runs): at most 5% called regressions."""
    rng = np.random.default_rng(7)
    pool = rng.normal(0.96, 0.015, size=10_000)
    verdicts = [
        compare(rng.choice(pool, 5), rng.choice(pool, 5), tolerance=0.0, resamples=200).verdict for _ in range(400)
    ]
    assert verdicts.count("regression") / len(verdicts) <= 0.05


def test_a_change_that_only_moves_the_seeds_fails_the_gate_at_most_5_percent_of_the_time() -> None:
    """False alarms on the measured spread: disjoint 5-seed groups of one 20-seed default run.

    ``tests/data/reservoir_seeds.json`` holds the final networks' per-seed test results of the
    default params with 20 seeds (written by ``python -m bench.run --sections gate``). Each
    pair is two experiments that differ only in their seeds; the gate, with the tolerances
    and significance of params.yaml, must call at most 5% of them regressions.
    """
    pool = json.loads(POOL.read_text())["per_seed"]
    settings = load_config(REPO / "params.yaml").compare
    rng = np.random.default_rng(11)
    for name, tolerance in settings.gates.items():
        values = np.asarray(pool[name])
        assert len(values) == 20 and np.ptp(values) > 0, name
        pairs = [rng.permutation(values)[:10] for _ in range(300)]
        verdicts = [compare(pair[:5], pair[5:], tolerance, settings.significance, 200).verdict for pair in pairs]
        assert verdicts.count("regression") / len(verdicts) <= 0.05, name
