"""Episodes cut from the actual record: the training years' windows and the held-out years'.

A window is ``horizon_months`` consecutive months of the record starting in ``start_month``,
its first state's inflow class the class of the month before it. The record is split in
time (:mod:`.split`), as hydrologists validate a model on years it was not calibrated on:

- **held-out** years: ``record.held_out`` (first and last year, each year from its
  ``start_month`` on: anywhere in the record, say the drought of record) or, when it is
  empty, every month after the fitting years. No fit, training or validation ever sees them;
  their windows start in ``start_month`` and end inside them. With the shipped Delaware
  record (fitted on 1945-2004, ``held_out`` empty) they are the 10-year windows starting each
  October from 2005 to 2014: nineteen water years, 2005-10 to 2024-09;
- **fitting** months: the years ``record.first_year`` to ``record.last_year``, less the
  held-out years. The chain is fitted on them (on the transitions between two of them), and
  an agent may learn from their windows (``env.reservoir.scenarios: record``), which lie
  wholly inside them (the month before included);
- **validation** years (``record.validation``, optional): fitting years set aside from the fit
  and from every training episode, whose windows training validates on, so that its best
  snapshots, its convergence and the tuner choose on real years nobody trained on, and the
  held-out years are touched only to report.

A real flow meets the whole-unit storage grid by rounding each month's inflow to the nearest
unit (the mass balance stays exact); its class is read from the real flow against the chain's
class edges.

Beside whole windows, agents may learn from a **moving-block bootstrap of water years**
(``scenarios: bootstrap``, :class:`WaterYears`): an episode joins blocks of
``bootstrap_block_years`` consecutive fitting water years (each from ``start_month``), drawn
with replacement, so that sixty fitting years make many more distinct decades than their fifty
overlapping windows, while a block keeps the record's persistence within it (a multi-year
drought stays whole). Künsch (1989) and Vogel and Shallcross (1996, "The moving blocks
bootstrap versus parametric time series models", Water Resources Research) resample
streamflow this way. Where two blocks meet, the first state's class is read from the month
the agent has just seen: the last of the block before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from reservoir_dqn.envs.reservoir.inflows import InflowChain
from reservoir_dqn.envs.reservoir.records import MONTHS, Record, RecordError
from reservoir_dqn.envs.reservoir.settings import ReservoirConfig
from reservoir_dqn.envs.reservoir.split import Split, load_split

Part = Literal["training", "validation", "held_out"]
HELD_OUT_PREFIX = "held-out "  # the held-out record's trajectory rows: policy "held-out dqn", "held-out sdp", ...


@dataclass(frozen=True)
class Windows:
    """``W`` episodes of the record.

    :ivar starts: each window's first month, ``YYYY-MM``.
    :ivar first_years: each window's first calendar year (its water years follow on).
    :ivar classes: ``[W, H + 1]`` inflow class before each step (column 0: the month before the window).
    :ivar inflows: ``[W, H]`` each month's inflow, rounded to whole storage units.
    :ivar before: ``[W]`` the inflow of the month before each window, whole units (what ``observe_last_flow``
        shows at its first step).
    :ivar storages: ``[W]`` each window's storage at its start, in units; ``None``: the initial storage.
    """

    starts: tuple[str, ...]
    first_years: tuple[int, ...]
    classes: torch.Tensor
    inflows: torch.Tensor
    before: torch.Tensor
    storages: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.starts)

    def head(self, count: int) -> Windows:
        """The first ``count`` windows."""
        storages = None if self.storages is None else self.storages[:count]
        return Windows(
            self.starts[:count],
            self.first_years[:count],
            self.classes[:count],
            self.inflows[:count],
            self.before[:count],
            storages,
        )

    def tile(self, copies: int) -> Windows:
        """The windows ``copies`` times over, copy-major (for stacked agents, each playing every window)."""
        return Windows(
            self.starts * copies,
            self.first_years * copies,
            self.classes.repeat(copies, 1),
            self.inflows.repeat(copies, 1),
            self.before.repeat(copies),
            None if self.storages is None else self.storages.repeat(copies),
        )

    def starting_at(self, storages: torch.Tensor) -> Windows:
        """The windows, each starting with storage ``storages[i]`` (units)."""
        return Windows(self.starts, self.first_years, self.classes, self.inflows, self.before, storages)


def record_windows(config: ReservoirConfig, chain: InflowChain, part: Part) -> Windows:
    """The ``part`` windows of ``config.record`` (see the module's docstring); none is a :class:`RecordError`."""
    windows = find_windows(config, chain, part)
    if windows is None:
        settings = config.record
        raise RecordError(
            f"record {settings.path} ({settings.column}): no {part.replace('_', '-')} window of "
            f"{config.horizon_months} months starting in month {config.start_month + 1}"
            + {"training": " (the fitting years hold fewer)", "validation": " in the validation years"}.get(
                part, " after the fitting years"
            )
        )
    return windows


def find_windows(config: ReservoirConfig, chain: InflowChain, part: Part) -> Windows | None:
    """The ``part`` windows of ``config.record``, or ``None`` when the record holds none."""
    record, split = load_split(config)
    horizon = config.horizon_months
    starts = window_starts(record, split, part, horizon, config.start_month)
    if not starts:
        return None
    return _cut(record, chain, starts, horizon, config.unit_hm3)


def _cut(record: Record, chain: InflowChain, starts: list[int], length: int, unit_hm3: float) -> Windows:
    """The windows of ``length`` months from ``starts``: each month's inflow in whole units, its class before it."""
    flows = record.volumes_hm3 / unit_hm3
    months = record.calendar_months
    classes = torch.tensor(
        [[chain.classify(int(months[index]), float(flows[index])) for index in range(start - 1, start + length)]
         for start in starts]
    )  # fmt: skip
    inflows = torch.from_numpy(np.stack([np.round(flows[start : start + length]) for start in starts]))
    return Windows(
        starts=tuple(record.label(start) for start in starts),
        first_years=tuple(int(record.years[start]) for start in starts),
        classes=classes,
        inflows=inflows,
        before=torch.from_numpy(np.round(flows[[start - 1 for start in starts]])),
    )


def whole_period(config: ReservoirConfig, chain: InflowChain, part: Literal["validation", "held_out"]) -> Windows:
    """The whole held-out (or validation) period as one window: from its first window's start, its whole years (for
    the continuous replay; the record must have such a window, :func:`find_windows`)."""
    record, split = load_split(config)
    starts = window_starts(record, split, part, config.horizon_months, config.start_month)
    bounds = split.held_out if part == "held_out" else split.validation
    assert bounds is not None and starts
    first = starts[0]
    length = (bounds[1] - first + 1) // 12 * 12
    return _cut(record, chain, [first], length, config.unit_hm3)


def check_held_out(config: ReservoirConfig) -> None:
    """Refuse a split whose validation or held-out months hold no whole window (they would be skipped without a word).

    No held-out month is no hold-out (a record fitted whole, ``held_out`` empty); some months
    but no whole window is a :class:`RecordError` naming the years.
    """
    settings = config.record
    record, split = load_split(config)
    if split.validation is not None and not window_starts(
        record, split, "validation", config.horizon_months, config.start_month
    ):
        begin, end = split.validation
        raise RecordError(
            f"env.reservoir.record.validation = {list(settings.validation or ())}: its {end - begin + 1} months "
            f"({record.label(begin)} to {record.label(end)}) hold no whole window of {config.horizon_months} months "
            f"starting in month {config.start_month + 1}: validate on more years"
        )
    if split.held_out is None or window_starts(record, split, "held_out", config.horizon_months, config.start_month):
        return
    begin, end = split.held_out
    if settings.held_out is not None:
        setting, where, fix = f"held_out = {list(settings.held_out)}", "", "hold out more years"
    else:
        setting, where = f"last_year = {settings.last_year}", " after the fitting years"
        fix = "fit fewer years, or the whole record (last_year empty)"
    raise RecordError(
        f"env.reservoir.record.{setting}: the {end - begin + 1} held-out months{where} ({record.label(begin)} to "
        f"{record.label(end)}) hold no whole window of {config.horizon_months} months starting in month "
        f"{config.start_month + 1}: {fix}"
    )


def window_starts(record: Record, split: Split, part: Part, horizon: int, start_month: int) -> list[int]:
    """The record indices where the ``part`` windows start (in ``start_month``): training windows whose months are
    all fitting months and whose month before (its class is the first state's) is neither held out nor a validation
    month, validation ones inside their months with the month before not held out, held-out ones inside theirs."""
    if part == "training":
        fitting = np.concatenate([[0], np.cumsum(split.fitting)])
        # Months ``start`` to ``start + horizon - 1`` all fitting, and the month before (its class) not set aside.
        candidates = [
            start
            for start in range(1, len(record) - horizon + 1)
            if fitting[start + horizon] - fitting[start] == horizon and not split.is_set_aside(start - 1)
        ]
    elif part == "validation":  # the month before (its class) may be a fitting month, never a held-out one
        bounds = split.validation
        candidates = [] if bounds is None else list(range(max(bounds[0], 1), bounds[1] - horizon + 2))
        candidates = [start for start in candidates if not split.is_held_out(start - 1)]
    else:
        bounds = split.held_out
        candidates = [] if bounds is None else list(range(max(bounds[0], 1), bounds[1] - horizon + 2))
    return [index for index in candidates if int(record.calendar_months[index]) == start_month]


@dataclass(frozen=True)
class WaterYears:
    """The fitting years' water years (each twelve months from ``start_month``), the blocks a bootstrap joins.

    :ivar classes: ``[Y, 13]`` the class before each month of each water year (column 0: the month before it).
    :ivar inflows: ``[Y, 12]`` each month's inflow, rounded to whole storage units.
    :ivar block_starts: the water years a block of ``block_years`` may start at: its years are consecutive in the
        record and all fitting.
    :ivar block_years: water years per block.
    :ivar before: ``[Y]`` the inflow of the month before each water year, whole units.
    """

    classes: torch.Tensor
    inflows: torch.Tensor
    block_starts: tuple[int, ...]
    block_years: int
    before: torch.Tensor

    def draw(self, generator: np.random.Generator, horizon: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One episode of ``horizon`` months: ``[H + 1]`` classes, ``[H]`` inflows and the inflow before it, as a
        window has them.

        Blocks are drawn uniformly among :attr:`block_starts` (one ``integers`` draw each) and joined
        until the horizon is covered; the last is cut at it.
        """
        months = self.block_years * MONTHS
        blocks = -(-horizon // months)
        starts = generator.integers(len(self.block_starts), size=blocks)
        years = [self.block_starts[int(start)] + offset for start in starts for offset in range(self.block_years)]
        inflows = self.inflows[years].reshape(-1)[:horizon]
        # The class before month t + 1 is the class of month t's inflow: column 12 of a year is its last month's.
        after = self.classes[years, 1:].reshape(-1)[:horizon]
        return torch.cat([self.classes[years[0], :1], after]), inflows, self.before[years[0]]


def fitting_water_years(config: ReservoirConfig, chain: InflowChain) -> WaterYears:
    """The water years of ``config.record``'s fitting months (see :class:`WaterYears`); too few for one block is a
    :class:`RecordError` naming the setting."""
    record, split = load_split(config)
    block = config.bootstrap_block_years
    # A water year is fitting when its months and the month before it (its first class) are all fitting months.
    fitting = np.concatenate([[0], np.cumsum(split.fitting)])
    starts = [
        start
        for start in range(1, len(record) - MONTHS + 1)
        if int(record.calendar_months[start]) == config.start_month
        and fitting[start + MONTHS] - fitting[start - 1] == MONTHS + 1
    ]
    consecutive = [
        index
        for index in range(len(starts) - block + 1)
        if starts[index + block - 1] - starts[index] == (block - 1) * MONTHS
    ]
    if not consecutive:
        settings = config.record
        raise RecordError(
            f"env.reservoir.bootstrap_block_years = {block}: record {settings.path} ({settings.column}) has "
            f"{len(starts)} fitting water years from month {config.start_month + 1}, and no {block} consecutive "
            "ones: shorten the blocks or fit more years"
        )
    years = _cut(record, chain, starts, MONTHS, config.unit_hm3)
    return WaterYears(years.classes, years.inflows, tuple(consecutive), block, years.before)
