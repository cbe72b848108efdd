"""A reservoir sized for its river, in the river's own terms, and the check that refuses one sized for another.

**The convention** (the default reservoir's, the Delaware recipe's and ``bench/held_out.py``'s):
one storage unit is a hundredth of the record's mean annual flow, so the settings counted in
units keep their share of the river: active storage ``capacity`` units is ``capacity`` % of a
mean year's flow (the default, 40: 40 %), the demand's 56 units a year 56 % of it, the turbines'
12 units a month, the release levels. :func:`sized_settings` gives the settings of a river
from its record: ``unit_hm3``, the weight of energy (a unit turbined yields energy in
proportion to its volume, so ``weight_energy`` shrinks as the unit grows, keeping the
default's balance against the per-unit penalties), and, for another storage or demand share,
``capacity`` with the minimum (20 %) and starting (60 %) storage, and the demand scaled month
by month to the nearest release level.

**The check** (:func:`sizing_problems`), made whenever a stage asks for a record-driven
reservoir's profile, before any work:

- *refused*: a grid too coarse for the river: a mean year's inflow under
  :data:`MIN_UNITS_PER_YEAR` storage units. The record is read in whole units, so most months'
  inflows round to 0 or 1, every policy's return is dominated by that rounding, and the
  figures (SOP below random, the SDP at the foresight bound) mean nothing;
- *refused*: a reservoir whose Markov SDP already scores 1.000 of the foresight bound on the
  fitting years' windows (random 0): knowing every inflow in advance is worth nothing there, so
  there is no decision under uncertainty to learn or to measure, and every score against
  foresight would be 1 or meaningless (a river with no variability the grid can see);
- *warned*: a demand above the mean annual flow (no storage can meet it on average: every
  policy's return is dominated by shortage; a real over-allocated river is a study one may
  want, so it runs); an active storage below the median month's inflow (a run-of-river plant:
  little to operate, but a real design).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from reservoir_dqn.config import ConfigError
from reservoir_dqn.envs.reservoir.baselines import reservoir_optimum
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.records import MONTHS, Record, load_record, record_version
from reservoir_dqn.envs.reservoir.sdp import foresight, random_rewards, table_returns
from reservoir_dqn.envs.reservoir.settings import ReservoirConfig
from reservoir_dqn.envs.reservoir.windows import find_windows

log = logging.getLogger(__name__)

UNITS_PER_MEAN_YEAR = 100  # one storage unit is a hundredth of the mean annual flow
MIN_UNITS_PER_YEAR = 20  # below: the grid cannot resolve the river (the convention gives 100)
MIN_SHARE, START_SHARE = 0.2, 0.6  # the minimum and starting storage as shares of the active storage


@dataclass(frozen=True)
class RiverSize:
    """A record's scale: its mean annual flow and each calendar month's median, in hm3."""

    mean_annual_hm3: float
    monthly_median_hm3: tuple[float, ...]  # January first
    years: int  # the whole calendar years it was measured on

    @classmethod
    def of(cls, record: Record) -> RiverSize:
        months = record.calendar_months
        whole = [
            year for year in np.unique(record.years) if int((record.years == year).sum()) == MONTHS
        ]  # whole calendar years only: a partial year would bias the mean
        if not whole:
            volumes = record.volumes_hm3
            annual = float(volumes.mean() * MONTHS)
        else:
            annual = float(np.mean([record.volumes_hm3[record.years == year].sum() for year in whole]))
        medians = tuple(float(np.median(record.volumes_hm3[months == month])) for month in range(MONTHS))
        return cls(annual, medians, len(whole))

    @property
    def unit_hm3(self) -> float:
        """The storage unit the convention gives this river, rounded to 3 significant digits."""
        return float(f"{self.mean_annual_hm3 / UNITS_PER_MEAN_YEAR:.3g}")


def sized_settings(
    size: RiverSize, default: ReservoirConfig, storage_share: float | None = None, demand_share: float | None = None
) -> dict[str, Any]:
    """The ``env.reservoir`` settings (dotted keys under it) that size ``default``'s shape for the river ``size``.

    :param storage_share: active storage as a share of the mean annual flow (``None``: the default's).
    :param demand_share: the year's demand as a share of the mean annual flow (``None``: the default's).
    """
    unit = size.unit_hm3
    settings: dict[str, Any] = {
        "unit_hm3": unit,
        "weight_energy": float(f"{default.weight_energy * default.unit_hm3 / unit:.3g}"),
    }
    if storage_share is not None:
        capacity = max(1, round(storage_share * UNITS_PER_MEAN_YEAR))
        settings |= {
            "capacity": capacity,
            "min_storage": round(MIN_SHARE * capacity),
            "initial_storage": round(START_SHARE * capacity),
        }
    if demand_share is not None:
        levels = np.array(default.release_levels)
        factor = demand_share * UNITS_PER_MEAN_YEAR / sum(default.demand)
        demand = [int(levels[np.abs(levels - month * factor).argmin()]) for month in default.demand]
        settings["demand"] = demand
    return settings


def sizing_problems(config: ReservoirConfig, size: RiverSize) -> tuple[list[str], list[str]]:
    """What is wrong with ``config``'s size on the river ``size``: lines that refuse it, and lines that warn."""
    unit, refusals, warnings = config.unit_hm3, [], []
    per_year = size.mean_annual_hm3 / unit
    advice = f"size it by its river: unit_hm3={size.unit_hm3:g} (a hundredth of the mean annual flow; "
    advice += "`reservoir-dqn record add` prints every setting)"
    if per_year < MIN_UNITS_PER_YEAR:
        refusals.append(
            f"env.reservoir.unit_hm3 = {unit:g} hm3 is {unit / size.mean_annual_hm3:.0%} of the record's mean annual "
            f"flow ({size.mean_annual_hm3:,.1f} hm3): a mean year is {per_year:.1f} storage units, under "
            f"{MIN_UNITS_PER_YEAR}, so most months' inflows round to 0 or 1 unit and no figure means anything; {advice}"
        )
    demand = sum(config.demand) * unit
    if demand > size.mean_annual_hm3:
        warnings.append(
            f"env.reservoir.demand: {demand:,.0f} hm3 a year is {demand / size.mean_annual_hm3:.1f} times the "
            f"record's mean annual flow ({size.mean_annual_hm3:,.0f} hm3): no storage meets it on average, and "
            "every policy's return is mostly shortage"
        )
    storage, median = config.capacity * unit, float(np.median(size.monthly_median_hm3))
    if storage < median:
        warnings.append(
            f"env.reservoir.capacity: {storage:,.1f} hm3 of active storage is less than the median month's inflow "
            f"({median:,.1f} hm3): a run-of-river plant, with little to operate"
        )
    return refusals, warnings


_warned: set[str] = set()  # each warning once a process: a stage asks for the profile many times


@lru_cache(maxsize=8)
def _river(path: str, version: int, column: str, units: str) -> RiverSize:
    return RiverSize.of(load_record(path, column, units))


def check_size(config: ReservoirConfig) -> None:
    """Refuse a record-driven reservoir sized for another river (:class:`ConfigError`, one line); warn once."""
    record = config.record
    size = _river(record.path, record_version(record.path), record.column, record.units)
    refusals, warnings = sizing_problems(config, size)
    if refusals:
        raise ConfigError(refusals[0])
    if (score := _sdp_over_foresight(config, record_version(record.path))) is not None and score >= 1.0 - 1e-9:
        raise ConfigError(
            f"env.reservoir (record {record.path}, {record.column}): the Markov SDP scores {score:.3f} of the "
            "foresight bound on the fitting years' windows, so knowing every inflow in advance is worth nothing and "
            "no policy has a decision under uncertainty to learn: size the reservoir for a river whose flows vary "
            "on its grid (a smaller unit_hm3, or another record)"
        )
    for line in warnings:
        if line not in _warned:
            _warned.add(line)
            log.warning(f"warning: {line}")


@lru_cache(maxsize=8)
def _sdp_over_foresight(config: ReservoirConfig, version: int) -> float | None:
    """The Markov SDP's score (random 0, foresight 1) on the fitting years' windows, or ``None`` (no window; the
    record's own check says so). ``version``: the record file's, which the cache key must hold."""
    model = ReservoirModel.from_config(config)
    windows = find_windows(config, model.chain, "training")
    if windows is None:
        return None
    last = windows.classes[:, -1]
    bound = float(foresight(model, windows.inflows, last).returns.sum())
    random = float(random_rewards(model, windows.inflows.double(), last).sum())
    optimum = float(table_returns(model, reservoir_optimum(config).policy, windows.inflows, windows.classes).sum())
    return (optimum - random) / (bound - random) if bound > random else 1.0
