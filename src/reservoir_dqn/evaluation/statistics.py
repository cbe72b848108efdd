"""Statistics over seeds: interquartile mean, Student-t intervals, and the gate's test of two revisions.

RL results are distributions over seeds (Agarwal et al., 2021, "Deep RL at the Edge of the
Statistical Precipice"). Each metric is reported as its per-seed values, their mean and
interquartile mean, and a 95% Student-t confidence interval of the mean *over seeds, given
the test scenarios* (every seed is evaluated on the same scenarios, so the interval is
about how the training seed moves the result, not about new scenarios), clipped to the
metric's range where it has one (a reliability's never ends above 1).

Why Student-t: on synthetic data at 3, 5 and 10 seeds (``python -m bench.gate``, table in
``bench/results/gate.md``), the percentile and BCa bootstraps of 5 seeds covered the true
mean 80-84% of the time against their nominal 95% (72-75% at 3 seeds); a studentized
bootstrap kept its coverage at 5 and 10 seeds but not at 3 (79-81%), and was 1.6-1.9 times
wider at 5. Student-t covered 95% on normal data at every seed count and lost least on
strongly skewed data (91-92%). It needs no resampling, so it is also exact to reproduce.

The gate (:func:`compare`) tests the hypothesis a user means by "regression": *the change
is worse than the baseline by more than the tolerance*. It is Welch's one-sided t-test with
a shifted null (Welch, 1947; the "non-inferiority" test of clinical trials): a regression is
called only when the one-sided upper (1 - significance) confidence bound of the difference
of means lies below ``-tolerance``. Symmetrically, an improvement needs the lower bound
above ``+tolerance``, and *within tolerance* needs both bounds inside ``[-tolerance,
+tolerance]`` (two one-sided tests, Schuirmann, 1987). At a true drop of exactly the
tolerance the gate fires at most ``significance`` of the time when the per-seed values are
normal and both sides have as many seeds (Welch's statistic is then Student's pooled t, with
no more degrees of freedom), and close to it otherwise (the calibration table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

CONFIDENCE = 0.95
MIN_SEEDS = 2  # a side: Welch's test needs each side's variance, so one seed can never be judged


@dataclass(frozen=True)
class Summary:
    """One metric over seeds. The interval is ``None`` with a single seed (there is no spread to estimate)."""

    per_seed: tuple[float, ...]
    mean: float
    iqm: float
    ci_low: float | None
    ci_high: float | None

    def text(self, digits: int = 1) -> str:
        """The mean with its interval, as ``1,984.3 [1,978.3, 1,990.2]`` (the mean alone where there is none)."""
        text = f"{self.mean:,.{digits}f}"
        if self.ci_low is not None and self.ci_high is not None:
            text += f" [{self.ci_low:,.{digits}f}, {self.ci_high:,.{digits}f}]"
        return text

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


def t_interval(values: ArrayLike, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Two-sided Student-t confidence interval of the mean (``None`` for fewer than two values)."""
    from scipy import special

    array = np.asarray(values, dtype=float)
    if len(array) < 2:
        return None
    mean = float(array.mean())
    quantile = float(special.stdtrit(len(array) - 1, 0.5 + confidence / 2))
    half = quantile * float(array.std(ddof=1)) / math.sqrt(len(array))
    return mean - half, mean + half


def summarize(values: ArrayLike, low: float = -math.inf, high: float = math.inf) -> Summary:
    """Per-seed values, their mean and IQM, and a 95% Student-t interval of the mean clipped to ``[low, high]``.

    :param low, high: the metric's range (a share: 0 and 1); the symmetric interval of a mean near
        one end would otherwise reach past what the metric can be.
    """
    array = np.asarray(values, dtype=float)
    if not len(array):
        raise ValueError("no values to summarize")
    interval = t_interval(array)
    ci_low, ci_high = (None, None) if interval is None else (max(interval[0], low), min(interval[1], high))
    return Summary(tuple(float(v) for v in array), float(array.mean()), iqm(array), ci_low, ci_high)


Verdict = Literal["regression", "improvement", "within tolerance", "inconclusive"]


@dataclass(frozen=True)
class Comparison:
    """A change against a baseline, for one higher-is-better metric, in the metric's own units.

    :ivar difference: change mean minus baseline mean.
    :ivar ci_low, ci_high: the two-sided ``1 - 2 * significance`` Welch interval of the
        difference; each end is the one-sided bound the verdict uses.
    :ivar p_regression: p-value of "the drop is at most the tolerance" (small: a regression).
    :ivar p_improvement: p-value of "the rise is at most the tolerance" (small: an improvement).
    :ivar p_equivalence: p-value of "the difference is outside [-tolerance, +tolerance]"
        (small: within tolerance; the larger of the two one-sided tests).
    :ivar verdict: see the module's docstring.
    """

    baseline: Summary
    change: Summary
    difference: float
    ci_low: float
    ci_high: float
    p_regression: float
    p_improvement: float
    p_equivalence: float
    tolerance: float
    significance: float
    verdict: Verdict

    @property
    def p(self) -> float:
        """The p-value of the hypothesis the verdict rests on (the regression's test when inconclusive)."""
        return {
            "regression": self.p_regression,
            "improvement": self.p_improvement,
            "within tolerance": self.p_equivalence,
            "inconclusive": self.p_regression,
        }[self.verdict]


@dataclass(frozen=True)
class Welch:
    """Welch's statistics of a difference of two means."""

    difference: float
    standard_error: float
    df: float

    @classmethod
    def of(cls, change: np.ndarray, baseline: np.ndarray) -> Welch:
        first, second = np.var(change, ddof=1) / len(change), np.var(baseline, ddof=1) / len(baseline)
        error = math.sqrt(first + second)
        denominator = first**2 / (len(change) - 1) + second**2 / (len(baseline) - 1)
        df = (first + second) ** 2 / denominator if denominator > 0 else math.inf
        return cls(float(np.mean(change) - np.mean(baseline)), error, float(df))

    def p_below(self, bound: float) -> float:
        """One-sided p-value of the null "the true difference is at least ``bound``"."""
        from scipy import special

        if self.standard_error == 0:
            return 0.0 if self.difference < bound else 1.0
        return float(special.stdtr(self.df, (self.difference - bound) / self.standard_error))

    def p_above(self, bound: float) -> float:
        """One-sided p-value of the null "the true difference is at most ``bound``"."""
        from scipy import special

        if self.standard_error == 0:
            return 0.0 if self.difference > bound else 1.0
        return float(special.stdtr(self.df, -(self.difference - bound) / self.standard_error))

    def bounds(self, significance: float) -> tuple[float, float]:
        """The one-sided lower and upper (1 - significance) confidence bounds of the difference."""
        from scipy import special

        if self.standard_error == 0:
            return self.difference, self.difference
        half = float(special.stdtrit(self.df, 1 - significance)) * self.standard_error
        return self.difference - half, self.difference + half


class TooFewSeeds(ValueError):
    """A side has fewer seeds than the test needs; the message says which."""


def compare(baseline: ArrayLike, change: ArrayLike, tolerance: float, significance: float = 0.05) -> Comparison:
    """Compare per-seed values of a change with a baseline's (higher is better).

    :param tolerance: the largest drop that is not a regression, in the metric's own units
        (and the smallest rise that is an improvement); 0 for a plain one-sided test.
    :param significance: the one-sided level of each test.
    :raises TooFewSeeds: when a side has fewer than :data:`MIN_SEEDS` seeds.
    """
    old, new = np.asarray(baseline, dtype=float), np.asarray(change, dtype=float)
    if min(len(old), len(new)) < MIN_SEEDS:
        raise TooFewSeeds(
            f"{len(old)} baseline and {len(new)} change seeds: Welch's test needs at least {MIN_SEEDS} a side"
        )
    welch = Welch.of(new, old)
    p_regression = welch.p_below(-tolerance)
    p_improvement = welch.p_above(tolerance)
    p_equivalence = max(welch.p_above(-tolerance), welch.p_below(tolerance))
    verdict: Verdict = "inconclusive"
    if p_regression < significance:
        verdict = "regression"
    elif p_improvement < significance:
        verdict = "improvement"
    elif tolerance > 0 and p_equivalence < significance:
        verdict = "within tolerance"
    low, high = welch.bounds(significance)
    return Comparison(
        summarize(old),
        summarize(new),
        welch.difference,
        low,
        high,
        p_regression,
        p_improvement,
        p_equivalence,
        tolerance,
        significance,
        verdict,
    )
