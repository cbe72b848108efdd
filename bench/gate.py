"""Calibration of the statistics over seeds: interval coverage, the gate's false alarms and its power.

Usage (from the repository root; about a minute on 2 cores)::

    .venv/bin/python -m bench.gate

Writes ``bench/results/gate.json`` (every number, with the command and the machine) and
``bench/results/gate.md`` (the tables). Three sections, all on simulated data with a known
answer and a seeded numpy generator, so the numbers reproduce exactly:

* **coverage**: how often a 95% interval of the mean over 3, 5 and 10 seeds covers the true
  mean, for Student-t (as :func:`reservoir_dqn.evaluation.statistics.t_interval`), the percentile and
  BCa bootstraps (``scipy.stats.bootstrap``) and the studentized (bootstrap-t) bootstrap, on a
  normal and two skewed distributions;
* **calibration**: how often :func:`reservoir_dqn.evaluation.statistics.compare` calls a regression when
  the change's mean is lowered by 0 to 2 times the tolerance, with the per-seed spread
  measured in ``tests/data/reservoir_seeds.json``, and on the real per-seed pool resampled;
* **collapse**: the verdict on a change whose every seed collapsed, at 3 against 3 seeds.

Welch's statistics are computed with numpy on whole arrays of simulated experiments; a
subsample of every calibration cell is re-judged by :func:`compare` itself and must give
exactly the same verdicts. Nothing here is a test.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy
from scipy import stats

from bench.common import REPO, RESULTS, write_results
from reservoir_dqn.evaluation.statistics import CONFIDENCE, compare, t_interval

COMMAND = ".venv/bin/python -m bench.gate"
SEED = 20_240_601
POOL = REPO / "tests" / "data" / "reservoir_seeds.json"

SEED_COUNTS = (3, 5, 10)
COVERAGE_EXPERIMENTS = 10_000
RESAMPLES = 2_000
CHUNK = 1_000  # experiments a vectorised bootstrap call holds at once (CHUNK x RESAMPLES x seeds floats)
METHODS = ("student-t", "percentile bootstrap", "BCa bootstrap", "studentized bootstrap")

TOLERANCE = 0.02
SIGNIFICANCE = 0.05
DROPS = (0.0, 0.5, 1.0, 1.1, 1.25, 1.5, 2.0)  # in tolerances
CALIBRATION_EXPERIMENTS = 20_000
BOUNDARY_EXPERIMENTS = 200_000  # at a drop of exactly the tolerance: the false-alarm rate to +-0.05%
CHECKED = 200  # experiments per calibration cell re-judged by compare()
VERDICTS = ("regression", "improvement", "within tolerance", "inconclusive")

Sampler = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]
LOGNORMAL_SIGMA = 0.5
GAMMA_SHAPE = 2.0


_POOL = np.asarray(json.loads(POOL.read_text())["per_seed"]["score"], dtype=float)


def _lognormal_skewness(sigma: float) -> float:
    spread = math.exp(sigma**2)
    return (spread + 2) * math.sqrt(spread - 1)


# name -> (sampler, true mean, skewness, description)
DISTRIBUTIONS: dict[str, tuple[Sampler, float, float, str]] = {
    "normal": (lambda rng, shape: rng.normal(0.0, 1.0, shape), 0.0, 0.0, "N(0, 1)"),
    "left-skewed": (
        lambda rng, shape: 1.0 - rng.lognormal(0.0, LOGNORMAL_SIGMA, shape),
        1.0 - math.exp(LOGNORMAL_SIGMA**2 / 2),
        -_lognormal_skewness(LOGNORMAL_SIGMA),
        f"1 - lognormal(0, sigma={LOGNORMAL_SIGMA}): most seeds near the top, an occasional bad one",
    ),
    "right-skewed": (
        lambda rng, shape: rng.gamma(GAMMA_SHAPE, 1.0, shape),
        GAMMA_SHAPE,
        2 / math.sqrt(GAMMA_SHAPE),
        f"gamma(shape {GAMMA_SHAPE:g}): most seeds low, an occasional lucky one",
    ),
    "measured seeds": (
        lambda rng, shape: rng.choice(_POOL, size=shape),
        float(_POOL.mean()),
        float(stats.skew(_POOL)),
        f"the {len(_POOL)} per-seed scores of `{POOL.relative_to(REPO)}`, drawn with replacement (the shape of "
        "real seeds)",
    ),
}


def _rng(*key: int) -> np.random.Generator:
    """An independent generator per table cell, so each cell reproduces on its own."""
    return np.random.default_rng([SEED, *key])


# --- coverage -------------------------------------------------------------------------------


def student_t(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise :func:`t_interval`: mean -/+ t(0.975, n - 1) * sd / sqrt(n)."""
    count = samples.shape[-1]
    mean = samples.mean(axis=-1)
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, count - 1) * samples.std(axis=-1, ddof=1) / math.sqrt(count)
    return mean - half, mean + half


def scipy_bootstrap(samples: np.ndarray, method: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise ``scipy.stats.bootstrap`` interval of the mean ("percentile" or "BCa")."""
    lows, highs = [], []
    for start in range(0, len(samples), CHUNK):
        result = stats.bootstrap(
            (samples[start : start + CHUNK],),
            np.mean,
            axis=-1,
            vectorized=True,
            n_resamples=RESAMPLES,
            confidence_level=CONFIDENCE,
            method=method,
            batch=200,
            rng=rng,
        )
        lows.append(result.confidence_interval.low)
        highs.append(result.confidence_interval.high)
    return np.concatenate(lows), np.concatenate(highs)


def studentized_bootstrap(samples: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise bootstrap-t interval: the sample's mean and standard error, with t's quantiles resampled.

    ``t* = (mean* - mean) / se*`` for each resample; the interval is ``[mean - q(0.975) se, mean -
    q(0.025) se]``. A resample whose values are all equal (one seed repeated, or seeds of equal
    value) has no spread (``se* = 0``, ``t*`` infinite): it is left out of the quantiles (with 3
    distinct seeds, 1 resample in 9).
    """
    count = samples.shape[-1]
    mean = samples.mean(axis=-1)
    error = samples.std(axis=-1, ddof=1) / math.sqrt(count)
    alpha = (1 - CONFIDENCE) / 2
    lows, highs = [], []
    for start in range(0, len(samples), CHUNK):
        block = samples[start : start + CHUNK]
        picks = rng.integers(0, count, size=(len(block), RESAMPLES, count))
        resampled = np.take_along_axis(block[:, None, :], picks, axis=-1)
        errors = resampled.std(axis=-1, ddof=1) / math.sqrt(count)
        degenerate = np.ptp(resampled, axis=-1) == 0  # one seed repeated, or equal seeds: no spread
        centre, scale = mean[start : start + CHUNK, None], error[start : start + CHUNK]
        statistic = np.where(degenerate, np.nan, (resampled.mean(axis=-1) - centre) / np.where(degenerate, 1, errors))
        lower, upper = np.nanquantile(statistic, [alpha, 1 - alpha], axis=-1)
        lows.append(centre[:, 0] - upper * scale)
        highs.append(centre[:, 0] - lower * scale)
    return np.concatenate(lows), np.concatenate(highs)


def _binomial_error(rate: float, experiments: int) -> float:
    return math.sqrt(rate * (1 - rate) / experiments)


def _check_student_t(samples: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """The largest gap between the vectorised interval and :func:`t_interval` on a subsample."""
    gaps = []
    for row, a, b in zip(samples[:CHECKED], low[:CHECKED], high[:CHECKED], strict=True):
        interval = t_interval(row)
        assert interval is not None
        gaps.append(max(abs(interval[0] - a), abs(interval[1] - b)))
    return float(max(gaps))


def coverage() -> dict[str, Any]:
    """Coverage and relative width of each method's interval, per distribution and seed count."""
    cells: list[dict[str, Any]] = []
    largest_gap = 0.0
    for d_index, (name, (sample, truth, skewness, _)) in enumerate(DISTRIBUTIONS.items()):
        for count in SEED_COUNTS:
            rng = _rng(1, d_index, count)
            samples = sample(rng, (COVERAGE_EXPERIMENTS, count))
            intervals = {"student-t": student_t(samples)}
            largest_gap = max(largest_gap, _check_student_t(samples, *intervals["student-t"]))
            intervals["percentile bootstrap"] = scipy_bootstrap(samples, "percentile", rng)
            intervals["BCa bootstrap"] = scipy_bootstrap(samples, "BCa", rng)
            intervals["studentized bootstrap"] = studentized_bootstrap(samples, rng)
            t_width = float(np.mean(intervals["student-t"][1] - intervals["student-t"][0]))
            for method in METHODS:
                low, high = intervals[method]
                rate = float(np.mean((low <= truth) & (truth <= high)))
                defined = np.isfinite(low) & np.isfinite(high)
                width = float(np.mean(high[defined] - low[defined]))
                cells.append(
                    {
                        "distribution": name,
                        "skewness": skewness,
                        "seeds": count,
                        "method": method,
                        "experiments": COVERAGE_EXPERIMENTS,
                        "resamples": None if method == "student-t" else RESAMPLES,
                        "coverage": rate,
                        "standard_error": _binomial_error(rate, COVERAGE_EXPERIMENTS),
                        "mean_width": width,
                        "width_vs_t": width / t_width,
                        "infinite_or_nan": int(np.sum(~np.isfinite(low) | ~np.isfinite(high))),
                    }
                )
            print(f"  coverage {name}, {count} seeds: " + ", ".join(f"{c['coverage']:.3f}" for c in cells[-4:]))
    return {"cells": cells, "t_interval_largest_gap": largest_gap}


# --- calibration ----------------------------------------------------------------------------


def welch_verdicts(baseline: np.ndarray, change: np.ndarray, tolerance: float, significance: float) -> np.ndarray:
    """Row-wise :func:`compare` verdicts (indices into :data:`VERDICTS`), Welch's statistics in numpy."""
    first = change.var(axis=-1, ddof=1) / change.shape[-1]
    second = baseline.var(axis=-1, ddof=1) / baseline.shape[-1]
    error = np.sqrt(first + second)
    df = (first + second) ** 2 / (first**2 / (change.shape[-1] - 1) + second**2 / (baseline.shape[-1] - 1))
    difference = change.mean(axis=-1) - baseline.mean(axis=-1)
    p_regression = stats.t.cdf((difference + tolerance) / error, df)
    p_improvement = stats.t.sf((difference - tolerance) / error, df)
    p_equivalence = np.maximum(
        stats.t.sf((difference + tolerance) / error, df), stats.t.cdf((difference - tolerance) / error, df)
    )
    verdicts = np.full(len(difference), VERDICTS.index("inconclusive"))
    equivalent = p_equivalence < significance if tolerance > 0 else np.zeros(len(difference), bool)
    verdicts[equivalent] = VERDICTS.index("within tolerance")
    verdicts[p_improvement < significance] = VERDICTS.index("improvement")
    verdicts[p_regression < significance] = VERDICTS.index("regression")
    return verdicts


def _mismatches(baseline: np.ndarray, change: np.ndarray, verdicts: np.ndarray) -> int:
    """How many of the first :data:`CHECKED` experiments :func:`compare` judges differently."""
    return sum(
        compare(old, new, TOLERANCE, SIGNIFICANCE).verdict != VERDICTS[verdict]
        for old, new, verdict in zip(baseline[:CHECKED], change[:CHECKED], verdicts[:CHECKED], strict=True)
    )


def _cell(source: str, count: int, drop: float, baseline: np.ndarray, change: np.ndarray) -> dict[str, Any]:
    verdicts = welch_verdicts(baseline, change, TOLERANCE, SIGNIFICANCE)
    rate = float(np.mean(verdicts == VERDICTS.index("regression")))
    bare = float(np.mean(change.mean(axis=-1) - baseline.mean(axis=-1) < -TOLERANCE))
    return {
        "source": source,
        "seeds": count,
        "drop_in_tolerances": drop,
        "drop": drop * TOLERANCE,
        "experiments": len(verdicts),
        "regression_rate": rate,
        "standard_error": _binomial_error(rate, len(verdicts)),
        "verdict_shares": {name: float(np.mean(verdicts == i)) for i, name in enumerate(VERDICTS)},
        "bare_threshold_rate": bare,
        "checked_by_compare": CHECKED,
        "mismatches": _mismatches(baseline, change, verdicts),
    }


def _disjoint_groups(
    pool: np.ndarray, count: int, experiments: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per experiment, two disjoint groups of ``count`` seeds drawn without replacement from the pool."""
    order = np.argsort(rng.random((experiments, len(pool))), axis=-1)
    return pool[order[:, :count]], pool[order[:, count : 2 * count]]


def calibration() -> dict[str, Any]:
    """The rate of "regression" verdicts for true drops of 0 to 2 tolerances, per seed count."""
    pool = _POOL
    sd = float(pool.std(ddof=1))
    cells = []
    for count in SEED_COUNTS:
        for d_index, drop in enumerate(DROPS):
            experiments = BOUNDARY_EXPERIMENTS if drop == 1.0 else CALIBRATION_EXPERIMENTS
            rng = _rng(2, count, d_index)
            baseline = rng.normal(0.0, sd, (experiments, count))
            change = rng.normal(-drop * TOLERANCE, sd, (experiments, count))
            cells.append(_cell("normal", count, drop, baseline, change))
            rng = _rng(3, count, d_index)
            old, new = _disjoint_groups(pool, count, experiments, rng)
            cells.append(_cell("real pool", count, drop, old, new - drop * TOLERANCE))
        print(f"  calibration {count} vs {count}: " + ", ".join(f"{c['regression_rate']:.4f}" for c in cells[-14::2]))
    return {
        "pool": {
            "path": str(POOL.relative_to(REPO)),
            "seeds": len(pool),
            "mean": float(pool.mean()),
            "sd": sd,
            "min": float(pool.min()),
            "max": float(pool.max()),
            "skewness": float(stats.skew(pool, bias=False)),
        },
        "tolerance": TOLERANCE,
        "significance": SIGNIFICANCE,
        "cells": cells,
        "mismatches": sum(cell["mismatches"] for cell in cells),
        "checked": CHECKED * len(cells),
    }


# --- collapse -------------------------------------------------------------------------------

COLLAPSE_BASELINE = (0.98, 0.97, 0.985)
COLLAPSE_CHANGE = (0.10, 0.20, 0.15)


def collapse() -> dict[str, Any]:
    """:func:`compare` on a change whose every seed collapsed: 3 against 3 seeds, and the first 2 of each."""
    rows = []
    for count in (3, 2):
        result = compare(COLLAPSE_BASELINE[:count], COLLAPSE_CHANGE[:count], TOLERANCE, SIGNIFICANCE)
        rows.append(
            {
                "baseline": list(COLLAPSE_BASELINE[:count]),
                "change": list(COLLAPSE_CHANGE[:count]),
                "difference": result.difference,
                "ci_low": result.ci_low,
                "ci_high": result.ci_high,
                "p_regression": result.p_regression,
                "verdict": result.verdict,
            }
        )
    return {"rows": rows}


# --- report ---------------------------------------------------------------------------------


def _percent(value: float, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f}%"


def _coverage_markdown(data: dict[str, Any]) -> list[str]:
    lines = [
        "## Coverage of a 95% interval of the mean over seeds",
        "",
        f"`{COMMAND}` draws {COVERAGE_EXPERIMENTS:,} simulated experiments per distribution and seed count, "
        f"builds each method's 95% interval of the mean on the same experiments (the bootstraps with "
        f"{RESAMPLES:,} resamples each) and counts how often it covers the true mean; ± is the binomial "
        f"standard error of that share. Width is the method's mean interval width over Student-t's on the "
        f"same experiments. All four methods are location- and scale-equivariant, so only the shape of the "
        f"distribution matters. Student-t is `t_interval`; percentile and BCa are `scipy.stats.bootstrap`; "
        f"the studentized bootstrap leaves out resamples whose values are all equal (no spread). An "
        f"experiment whose seeds are all equal (possible only when drawing real seeds with replacement) "
        f"has no defined bootstrap interval: it counts as not covering, and * marks a width taken over "
        f"the defined intervals only. "
        f"Largest gap between the vectorised Student-t interval and `t_interval` on "
        f"{CHECKED} experiments per cell: {data['t_interval_largest_gap']:.1e}.",
        "",
        "| distribution | skewness | seeds | " + " | ".join(f"{m} coverage | width" for m in METHODS) + " |",
        "|---|---:|---:|" + "---:|---:|" * len(METHODS),
    ]
    for name, (_, _, skewness, _) in DISTRIBUTIONS.items():
        for count in SEED_COUNTS:
            cells = {c["method"]: c for c in data["cells"] if c["distribution"] == name and c["seeds"] == count}
            values = " | ".join(
                f"{_percent(cells[m]['coverage'])} ± {_percent(cells[m]['standard_error'])} | "
                f"{cells[m]['width_vs_t']:.2f}{'*' if cells[m]['infinite_or_nan'] else ''}"
                for m in METHODS
            )
            lines.append(f"| {name} | {skewness:+.2f} | {count} | {values} |")
    lines += ["", "Distributions (skewness is the population's):", ""]
    lines += [f"- **{name}**: {spec[3]}, skewness {spec[2]:+.3f}" for name, spec in DISTRIBUTIONS.items()]
    return [*lines, ""]


def _calibration_markdown(data: dict[str, Any]) -> list[str]:
    pool = data["pool"]
    drops = " | ".join(f"{drop:g}x" for drop in DROPS)
    lines = [
        "## Calibration of the gate: how often a drop is called a regression",
        "",
        f"`{COMMAND}` simulates {CALIBRATION_EXPERIMENTS:,} baseline-against-change experiments per cell "
        f"({BOUNDARY_EXPERIMENTS:,} at 1x) and "
        f"applies the gate (Welch's one-sided test of a drop larger than the tolerance, tolerance "
        f"{data['tolerance']}, significance {data['significance']}). *Normal*: both sides normal with the "
        f"per-seed standard deviation measured on the {pool['seeds']} seeds of `{pool['path']}` "
        f"(sd {pool['sd']:.5f}, mean {pool['mean']:.4f}, range {pool['min']:.4f}-{pool['max']:.4f}, "
        f"sample skewness {pool['skewness']:+.2f}), the change's mean lowered by the drop. *Real pool*: two "
        f"disjoint groups of real seeds drawn without replacement, the drop subtracted from the change "
        f"group. Columns are the true drop in tolerances; a drop of exactly 1x is not a regression, so that "
        f"column is the false-alarm rate and must stay at most {_percent(data['significance'], 0)}; with "
        f"normal seeds and equal counts a side it cannot exceed it (Welch's statistic is then Student's "
        f"pooled t, with no more degrees of freedom), so what lies above is simulation noise. "
        f"*Bare threshold* is the old gate (the change's mean below the baseline's by more than the "
        f"tolerance) on the same normal experiments. Verdicts are computed with numpy; {data['checked']:,} "
        f"of them were re-judged by `compare()`, with {data['mismatches']} mismatches.",
        "",
        f"| data | seeds a side | {drops} |",
        "|---|---:|" + "---:|" * len(DROPS),
    ]
    for source in ("normal", "real pool", "bare threshold"):
        for count in SEED_COUNTS:
            kind, key = ("normal", "bare_threshold_rate") if source == "bare threshold" else (source, "regression_rate")
            cells = {c["drop_in_tolerances"]: c for c in data["cells"] if c["source"] == kind and c["seeds"] == count}
            values = " | ".join(_percent(cells[drop][key], 2) for drop in DROPS)
            lines.append(f"| {source} | {count} | {values} |")
    at_one = [c for c in data["cells"] if c["drop_in_tolerances"] == 1.0]
    worst = max(at_one, key=lambda c: c["regression_rate"])
    lines += [
        "",
        f"Highest false-alarm rate at 1x: {_percent(worst['regression_rate'], 2)} ± "
        f"{_percent(worst['standard_error'], 2)} ({worst['source']}, {worst['seeds']} vs {worst['seeds']}).",
        "",
    ]
    return lines


def _collapse_markdown(data: dict[str, Any]) -> list[str]:
    lines = [
        "## A collapse at 3 seeds",
        "",
        f"`{COMMAND}` runs `compare()` on a change whose every seed collapsed, at 3 against 3 seeds and at "
        f"the 2 against 2 the test needs at least (tolerance {TOLERANCE}, significance {SIGNIFICANCE}). The "
        f"interval is the two-sided {_percent(1 - 2 * SIGNIFICANCE, 0)} Welch interval of the difference, each "
        f"end a one-sided bound.",
        "",
        "| baseline | change | difference | interval | p (regression) | verdict |",
        "|---|---|---:|---|---:|---|",
    ]
    for row in data["rows"]:
        lines.append(
            f"| {row['baseline']} | {row['change']} | {row['difference']:+.4f} | "
            f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] | {row['p_regression']:.2e} | {row['verdict']} |"
        )
    return [*lines, ""]


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Statistics over seeds: coverage, calibration, power",
        "",
        f"Measured with `{results['command']}` (seed {SEED}) in {results['wall_s']:.0f} s on {results['date']}.",
        "",
        *_coverage_markdown(results["coverage"]),
        *_calibration_markdown(results["calibration"]),
        *_collapse_markdown(results["collapse"]),
    ]
    return "\n".join(lines)


def main() -> None:
    started = time.perf_counter()
    print("[coverage]", flush=True)
    coverage_results = coverage()
    print("[calibration]", flush=True)
    calibration_results = calibration()
    results: dict[str, Any] = {
        "command": COMMAND,
        "seed": SEED,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "coverage": coverage_results,
        "calibration": calibration_results,
        "collapse": collapse(),
    }
    results["wall_s"] = time.perf_counter() - started
    write_results("gate", results)
    (RESULTS / "gate.md").write_text(markdown(results))
    print((RESULTS / "gate.md").read_text())
    if calibration_results["mismatches"]:
        raise SystemExit(f"{calibration_results['mismatches']} vectorised verdicts differ from compare()'s")


if __name__ == "__main__":
    main()
