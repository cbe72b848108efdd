"""Statistics over seeds: interquartile mean, bootstrap intervals, and the two-revision test.

RL results are distributions over seeds (Agarwal et al., 2021, "Deep RL at the Edge of the
Statistical Precipice"). Each headline metric is reported as its per-seed values, their mean
and interquartile mean, and a 95% percentile-bootstrap confidence interval of the mean;
rliable's stratified bootstrap resamples seeds within each task, and with one task per
experiment that is the plain bootstrap over seeds used here. Two revisions are compared
with the difference of their means, a bootstrap interval of that difference (each
revision's seeds resampled on their own) and a one-sided permutation test over seeds,
which is exact (every split enumerated) for the usual handful of seeds.

Resampling is seeded, so the same numbers always give the same intervals. ``scipy.stats``
is imported where a statistic is computed: importing it takes 0.7 s, which the processes
that only read results (the plot stage) do not pay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

CONFIDENCE = 0.95
EXACT_SPLITS = 200_000  # permutation tests enumerate every split up to this many (C(20, 10) = 184,756)
RESAMPLING_SEED = 20261121


@dataclass(frozen=True)
class Summary:
    """One metric over seeds. The interval is ``None`` with a single seed (there is no spread to resample)."""

    per_seed: tuple[float, ...]
    mean: float
    iqm: float
    ci_low: float | None
    ci_high: float | None

    def as_dict(self) -> dict[str, object]:
        return {
            "per_seed": list(self.per_seed),
            "mean": self.mean,
            "iqm": self.iqm,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        """Read back what :meth:`as_dict` wrote."""
        low, high = data["ci_low"], data["ci_high"]
        return cls(
            tuple(float(value) for value in data["per_seed"]),
            float(data["mean"]),
            float(data["iqm"]),
            None if low is None else float(low),
            None if high is None else float(high),
        )


def iqm(values: ArrayLike) -> float:
    """Interquartile mean: the mean of the middle 50% (scipy's ``trim_mean(values, 0.25)``)."""
    from scipy import stats

    return float(stats.trim_mean(np.asarray(values, dtype=float), 0.25))


def summarize(values: ArrayLike, resamples: int = 10_000) -> Summary:
    """Per-seed values, their mean and IQM, and a 95% percentile-bootstrap interval of the mean."""
    array = np.asarray(values, dtype=float)
    if not len(array):
        raise ValueError("no values to summarize")
    low: float | None = None
    high: float | None = None
    if len(array) > 1:
        if np.ptp(array) == 0:
            low = high = float(array[0])
        else:
            from scipy import stats

            result = stats.bootstrap(
                (array,),
                np.mean,
                confidence_level=CONFIDENCE,
                n_resamples=resamples,
                method="percentile",
                rng=np.random.default_rng(RESAMPLING_SEED),
            )
            low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return Summary(tuple(float(v) for v in array), float(array.mean()), iqm(array), low, high)


Verdict = Literal["regression", "improvement", "within tolerance", "no significant change"]


@dataclass(frozen=True)
class Comparison:
    """A change against a baseline, for one higher-is-better metric.

    :ivar difference: change mean minus baseline mean.
    :ivar ci_low, ci_high: 95% bootstrap interval of the difference (``None`` if either side has one seed).
    :ivar p_lower: one-sided permutation p-value that the change is lower than the baseline.
    :ivar p_higher: the same, for higher.
    :ivar verdict: *regression* when the drop exceeds the tolerance and ``p_lower`` is below the
        significance level; *improvement* symmetrically; *within tolerance* when the change is
        significant but no larger than the tolerance; otherwise *no significant change*.
    """

    baseline: Summary
    change: Summary
    difference: float
    ci_low: float | None
    ci_high: float | None
    p_lower: float
    p_higher: float
    tolerance: float
    verdict: Verdict

    @property
    def relative(self) -> float:
        """The difference as a share of the baseline mean's magnitude (NaN when that is 0)."""
        scale = abs(self.baseline.mean)
        return self.difference / scale if scale else math.nan


def compare(
    baseline: ArrayLike,
    change: ArrayLike,
    tolerance: float,
    significance: float = 0.05,
    resamples: int = 10_000,
) -> Comparison:
    """Compare per-seed values of a change with a baseline's (higher is better).

    :param tolerance: the largest drop that is not a regression, as a share of ``|baseline mean|``
        (and the smallest rise that is an improvement).
    :param significance: one-sided level of the permutation test.
    """
    old, new = np.asarray(baseline, dtype=float), np.asarray(change, dtype=float)
    difference = float(new.mean() - old.mean())
    low: float | None = None
    high: float | None = None
    if len(old) > 1 and len(new) > 1:
        if np.ptp(old) == 0 and np.ptp(new) == 0:
            low = high = difference
        else:
            from scipy import stats

            interval = stats.bootstrap(
                (new, old),
                _difference_of_means,
                confidence_level=CONFIDENCE,
                n_resamples=resamples,
                method="percentile",
                rng=np.random.default_rng(RESAMPLING_SEED),
            ).confidence_interval
            low, high = float(interval.low), float(interval.high)
    p_lower = _permutation_p(new, old, "less", resamples)
    p_higher = _permutation_p(new, old, "greater", resamples)
    margin = tolerance * abs(float(old.mean()))
    verdict: Verdict = "no significant change"
    if difference < -margin and p_lower < significance:
        verdict = "regression"
    elif difference > margin and p_higher < significance:
        verdict = "improvement"
    elif min(p_lower, p_higher) < significance:
        verdict = "within tolerance"
    return Comparison(
        summarize(old, resamples),
        summarize(new, resamples),
        difference,
        low,
        high,
        p_lower,
        p_higher,
        tolerance,
        verdict,
    )


def _difference_of_means(new: np.ndarray, old: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray(np.mean(new, axis=axis) - np.mean(old, axis=axis))


def _permutation_p(new: np.ndarray, old: np.ndarray, alternative: Literal["less", "greater"], resamples: int) -> float:
    """One-sided p-value of a permutation test on the difference of means.

    Exact (every split of the pooled seeds enumerated) up to EXACT_SPLITS splits, which covers
    up to 10 seeds a side; random permutations beyond.
    """
    if np.ptp(np.concatenate([new, old])) == 0:
        return 1.0
    from scipy import stats

    splits = math.comb(len(new) + len(old), len(new))
    result = stats.permutation_test(
        (new, old),
        _difference_of_means,
        permutation_type="independent",
        alternative=alternative,
        n_resamples=np.inf if splits <= EXACT_SPLITS else resamples,
        vectorized=True,
        rng=np.random.default_rng(RESAMPLING_SEED),
    )
    return float(result.pvalue)
