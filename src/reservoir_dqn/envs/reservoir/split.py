"""How a record is split in time: the months the chain is fitted on and agents learn from, and the held-out months.

See :mod:`.windows` for the episodes cut from each part.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass

import numpy as np

from reservoir_dqn.envs.reservoir.records import Record, RecordError, load_record
from reservoir_dqn.envs.reservoir.settings import RecordConfig, ReservoirConfig


@dataclass(frozen=True)
class Split:
    """A record split in time (see the module's docstring).

    :ivar fitting: ``[N]`` whether each month of the record is one the chain is fitted on (and agents learn from).
    :ivar held_out: the first and last index of the held-out months, or ``None`` (a record fitted whole).
        Months that are neither (years outside ``first_year`` to ``last_year``) are not used at all.
    """

    fitting: np.ndarray
    held_out: tuple[int, int] | None

    def is_held_out(self, index: int) -> bool:
        """Whether month ``index`` of the record is held out."""
        return self.held_out is not None and self.held_out[0] <= index <= self.held_out[1]


def record_split(record: Record, settings: RecordConfig, start_month: int) -> Split:
    """The split of ``record`` that ``settings`` describe: a held-out range outside the record is a
    :class:`RecordError` naming the years."""
    first_year = settings.first_year if settings.first_year is not None else int(record.years[0])
    last_year = settings.last_year if settings.last_year is not None else int(record.years[-1])
    fitting = (record.years >= first_year) & (record.years <= last_year)
    if settings.held_out is None:
        chosen = np.flatnonzero(fitting)
        last = int(chosen[-1]) if len(chosen) else len(record) - 1
        return Split(fitting, (last + 1, len(record) - 1) if last + 1 < len(record) else None)
    first, last = settings.held_out
    begin = _index(record, first, start_month)
    end = _index(record, last + 1, start_month) - 1
    if begin < 0 or end >= len(record):
        raise RecordError(
            f"env.reservoir.record.held_out = [{first}, {last}]: the years from {calendar.month_abbr[start_month + 1]} "
            f"{first} to {calendar.month_abbr[(start_month - 1) % 12 + 1]} {last + (start_month > 0)} are not all in "
            f"the record ({record.span})"
        )
    months = np.arange(len(record))
    return Split(fitting & ((months < begin) | (months > end)), (begin, end))


def _index(record: Record, year: int, month: int) -> int:
    """The record index of calendar ``month`` (0 = January) of ``year`` (may lie outside the record)."""
    return (year - record.first[0]) * 12 + month - (record.first[1] - 1)


def load_split(config: ReservoirConfig) -> tuple[Record, Split]:
    """``config.record`` and its split."""
    settings = config.record
    record = load_record(settings.path, settings.column, settings.units)
    return record, record_split(record, settings, config.start_month)
