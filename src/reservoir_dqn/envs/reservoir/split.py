"""How a record is split in time: the months the chain is fitted on and agents learn from, the validation months
training validates on, and the held-out months.

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
    :ivar validation: the first and last index of the validation months (``record.validation``), or ``None``:
        fitting-year months set aside from the fit and the training episodes, for training's validation.
    """

    fitting: np.ndarray
    held_out: tuple[int, int] | None
    validation: tuple[int, int] | None = None

    def is_held_out(self, index: int) -> bool:
        """Whether month ``index`` of the record is held out."""
        return self.held_out is not None and self.held_out[0] <= index <= self.held_out[1]

    def is_set_aside(self, index: int) -> bool:
        """Whether month ``index`` of the record is held out or a validation month (no training episode may read
        it, not even as the class before its first month)."""
        return self.is_held_out(index) or (
            self.validation is not None and self.validation[0] <= index <= self.validation[1]
        )


def record_split(record: Record, settings: RecordConfig, start_month: int) -> Split:
    """The split of ``record`` that ``settings`` describe: a held-out or validation range outside the record, or
    validation years outside the fitting years or inside the held-out ones, is a :class:`RecordError` naming the
    years."""
    first_year = settings.first_year if settings.first_year is not None else int(record.years[0])
    last_year = settings.last_year if settings.last_year is not None else int(record.years[-1])
    in_range = (record.years >= first_year) & (record.years <= last_year)
    months = np.arange(len(record))
    if settings.held_out is None:
        chosen = np.flatnonzero(in_range)
        last = int(chosen[-1]) if len(chosen) else len(record) - 1
        held_out = (last + 1, len(record) - 1) if last + 1 < len(record) else None
    else:
        held_out = _months(record, "held_out", settings.held_out, start_month)
    split = Split(in_range & ~_inside(months, held_out), held_out)
    if settings.validation is None:
        return split
    validation = _months(record, "validation", settings.validation, start_month)
    setting = f"env.reservoir.record.validation = {list(settings.validation)}"
    if not in_range[validation[0] : validation[1] + 1].all():
        raise RecordError(
            f"{setting}: {_years_text(record, validation)} are not all fitting years ({first_year} to {last_year}): "
            "validate on years the chain could be fitted on"
        )
    if any(split.is_held_out(index) for index in range(validation[0], validation[1] + 1)):
        raise RecordError(f"{setting}: {_years_text(record, validation)} overlap the held-out months")
    return Split(split.fitting & ~_inside(months, validation), held_out, validation)


def _months(record: Record, name: str, years: tuple[int, int], start_month: int) -> tuple[int, int]:
    """The first and last index of ``years`` (each from ``start_month`` for twelve months); outside the record is a
    :class:`RecordError` naming the setting."""
    first, last = years
    begin, end = _index(record, first, start_month), _index(record, last + 1, start_month) - 1
    if begin < 0 or end >= len(record):
        raise RecordError(
            f"env.reservoir.record.{name} = [{first}, {last}]: the years from {calendar.month_abbr[start_month + 1]} "
            f"{first} to {calendar.month_abbr[(start_month - 1) % 12 + 1]} {last + (start_month > 0)} are not all in "
            f"the record ({record.span})"
        )
    return begin, end


def _inside(months: np.ndarray, bounds: tuple[int, int] | None) -> np.ndarray:
    """Whether each of ``months`` lies in ``bounds`` (first and last index; ``None``: none does)."""
    if bounds is None:
        return np.zeros(len(months), dtype=bool)
    return (months >= bounds[0]) & (months <= bounds[1])


def _years_text(record: Record, bounds: tuple[int, int]) -> str:
    """``the months YYYY-MM to YYYY-MM``."""
    return f"the months {record.label(bounds[0])} to {record.label(bounds[1])}"


def _index(record: Record, year: int, month: int) -> int:
    """The record index of calendar ``month`` (0 = January) of ``year`` (may lie outside the record)."""
    return (year - record.first[0]) * 12 + month - (record.first[1] - 1)


def load_split(config: ReservoirConfig) -> tuple[Record, Split]:
    """``config.record`` and its split."""
    settings = config.record
    record = load_record(settings.path, settings.column, settings.units)
    return record, record_split(record, settings, config.start_month)
