"""Episodes cut from the actual record: the training years' windows and the held-out years'.

A window is ``horizon_months`` consecutive months of the record starting in ``start_month``,
its first state's inflow class the class of the month before it. The record is split in
time, as hydrologists validate a model on years it was not calibrated on:

- **training** windows lie inside the fitting years (``record.first_year`` to
  ``record.last_year``, the month before included): the chain is fitted on them, and an
  agent may learn from them (``env.reservoir.scenarios: record``);
- **held-out** windows start in ``start_month`` after the fitting years' last month and end
  by the record's last whole month: no fit, training or validation ever sees them. With the
  shipped Delaware record (fitted on 1945-2004) they are the 10-year windows starting each
  October from 2005 to 2014: nineteen water years, 2005-10 to 2024-09.

A real flow meets the whole-unit storage grid by rounding each month's inflow to the nearest
unit (the mass balance stays exact); its class is read from the real flow against the chain's
class edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from reservoir_dqn.envs.reservoir.inflows import InflowChain
from reservoir_dqn.envs.reservoir.records import Record, RecordError, load_record
from reservoir_dqn.envs.reservoir.settings import ReservoirConfig

HELD_OUT_PREFIX = "held-out "  # the held-out record's trajectory rows: policy "held-out dqn", "held-out sdp", ...


@dataclass(frozen=True)
class Windows:
    """``W`` episodes of the record.

    :ivar starts: each window's first month, ``YYYY-MM``.
    :ivar first_years: each window's first calendar year (its water years follow on).
    :ivar classes: ``[W, H + 1]`` inflow class before each step (column 0: the month before the window).
    :ivar inflows: ``[W, H]`` each month's inflow, rounded to whole storage units.
    """

    starts: tuple[str, ...]
    first_years: tuple[int, ...]
    classes: torch.Tensor
    inflows: torch.Tensor

    def __len__(self) -> int:
        return len(self.starts)

    def head(self, count: int) -> Windows:
        """The first ``count`` windows."""
        return Windows(self.starts[:count], self.first_years[:count], self.classes[:count], self.inflows[:count])

    def tile(self, copies: int) -> Windows:
        """The windows ``copies`` times over, copy-major (for stacked agents, each playing every window)."""
        return Windows(
            self.starts * copies,
            self.first_years * copies,
            self.classes.repeat(copies, 1),
            self.inflows.repeat(copies, 1),
        )


def record_windows(config: ReservoirConfig, chain: InflowChain, part: Literal["training", "held_out"]) -> Windows:
    """The ``part`` windows of ``config.record`` (see the module's docstring); none is a :class:`RecordError`."""
    windows = find_windows(config, chain, part)
    if windows is None:
        settings = config.record
        raise RecordError(
            f"record {settings.path} ({settings.column}): no {part.replace('_', '-')} window of "
            f"{config.horizon_months} months starting in month {config.start_month + 1}"
            + (" (the fitting years hold fewer)" if part == "training" else " after the fitting years")
        )
    return windows


def find_windows(config: ReservoirConfig, chain: InflowChain, part: Literal["training", "held_out"]) -> Windows | None:
    """The ``part`` windows of ``config.record``, or ``None`` when the record holds none."""
    settings = config.record
    record = load_record(settings.path, settings.column, settings.units)
    fitting = fitting_range(record, settings.first_year, settings.last_year)
    horizon = config.horizon_months
    starts = window_starts(record, fitting, part, horizon, config.start_month)
    if not starts:
        return None
    flows = record.volumes_hm3 / config.unit_hm3
    months = record.calendar_months
    classes = torch.tensor(
        [[chain.classify(int(months[index]), float(flows[index])) for index in range(start - 1, start + horizon)]
         for start in starts]
    )  # fmt: skip
    inflows = torch.from_numpy(np.stack([np.round(flows[start : start + horizon]) for start in starts]))
    return Windows(
        starts=tuple(record.label(start) for start in starts),
        first_years=tuple(int(record.years[start]) for start in starts),
        classes=classes,
        inflows=inflows,
    )


def check_held_out(config: ReservoirConfig) -> None:
    """Refuse fitting years that leave a part of the record after them too short for one held-out window.

    No month after them is no hold-out (a record fitted whole); some months but no whole window
    would be skipped without a word, so it is a :class:`RecordError` naming the years.
    """
    settings = config.record
    record = load_record(settings.path, settings.column, settings.units)
    fitting = fitting_range(record, settings.first_year, settings.last_year)
    last = fitting[1]
    if last + 1 < len(record) and not window_starts(
        record, fitting, "held_out", config.horizon_months, config.start_month
    ):
        months = len(record) - last - 1
        raise RecordError(
            f"env.reservoir.record.last_year = {settings.last_year}: the {months} months after the fitting years "
            f"({record.label(last + 1)} to {record.label(len(record) - 1)}) hold no whole held-out window of "
            f"{config.horizon_months} months starting in month {config.start_month + 1}: fit fewer years, or the "
            "whole record (last_year empty)"
        )


def window_starts(
    record: Record, fitting: tuple[int, int], part: Literal["training", "held_out"], horizon: int, start_month: int
) -> list[int]:
    """The record indices where the ``part`` windows start (in ``start_month``): training windows inside the
    fitting months ``fitting`` (from the record's second month: a window's first class needs the month before),
    held-out ones after them, each ending by the record's last month."""
    first, last = fitting
    candidates = (
        range(max(first, 1), last - horizon + 2) if part == "training" else range(last + 1, len(record) - horizon + 1)
    )
    return [index for index in candidates if int(record.calendar_months[index]) == start_month]


def fitting_range(record: Record, first_year: int | None, last_year: int | None) -> tuple[int, int]:
    """The record indices of the first and last month of the fitting years."""
    chosen = np.flatnonzero(
        (record.years >= (first_year if first_year is not None else record.years[0]))
        & (record.years <= (last_year if last_year is not None else record.years[-1]))
    )
    return int(chosen[0]), int(chosen[-1])
