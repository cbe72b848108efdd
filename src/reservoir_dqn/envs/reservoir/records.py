"""A river's monthly inflow record, read from a user's CSV file, strictly.

The file has a header line; its first column is the date, another one (``column``) the
flows. Two resolutions are read:

- **monthly**: one line per calendar month, dated ``YYYY-MM`` or ``YYYY-MM-01``; every
  month between the first and the last must be there exactly once;
- **daily**: one line per day, dated ``YYYY-MM-DD``, summed into calendar months; every
  day of every month must be there, so a record that starts or ends mid-month (a *partial
  month*) is refused rather than read as a month of low flow.

``units`` says what a value is: ``hm3``, the volume of the line's period (a month or a
day) in cubic hectometres, ``m3/s``, the period's mean flow (times the period's seconds,
divided by 10^6, is hm3), or ``cfs``, the mean flow in cubic feet per second (USGS
discharge, parameter 00060: 0.028316846592 m3/s each). Anything else is a :class:`RecordError`: one line naming the
file, the line and the problem, raised before any output is written.
"""

from __future__ import annotations

import calendar
import csv
import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from reservoir_dqn.config import ConfigError

SECONDS_PER_DAY = 86_400.0
MONTHS = 12
CUBIC_METRES_PER_CUBIC_FOOT = 0.028316846592  # exact (the international foot)
UNITS = ("hm3", "m3/s", "cfs")


class RecordError(ConfigError):
    """A record that cannot drive the reservoir; the message names the file and the line."""


@dataclass(frozen=True)
class Record:
    """Consecutive calendar months of inflow volume.

    :ivar first: the first month, as ``(year, month)`` with month 1 = January.
    :ivar volumes_hm3: ``[M]`` each month's inflow volume in hm3, from ``first`` on.
    """

    path: str
    column: str
    first: tuple[int, int]
    volumes_hm3: np.ndarray

    def __len__(self) -> int:
        return len(self.volumes_hm3)

    @property
    def calendar_months(self) -> np.ndarray:
        """``[M]`` the calendar month (0 = January) of each month of the record."""
        return (np.arange(len(self)) + self.first[1] - 1) % MONTHS

    @property
    def years(self) -> np.ndarray:
        """``[M]`` the calendar year of each month of the record."""
        return self.first[0] + (np.arange(len(self)) + self.first[1] - 1) // MONTHS

    def label(self, index: int) -> str:
        return f"{int(self.years[index])}-{int(self.calendar_months[index]) + 1:02d}"

    @property
    def span(self) -> str:
        return f"{self.label(0)} to {self.label(len(self) - 1)}"


def record_version(path: str | Path) -> int:
    """The version of the record file ``path`` (its modification time): what caches of it are keyed on."""
    file = Path(path)
    if not file.is_file():
        raise RecordError(f"record {path}: no such file")
    return file.stat().st_mtime_ns


def load_record(path: str | Path, column: str, units: str) -> Record:
    """The record of ``column`` in the CSV file ``path`` (see the module's docstring); cached per file version."""
    return _load(str(path), record_version(path), column, units)


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int, column: str, units: str) -> Record:
    if units not in UNITS:
        raise RecordError(f"record {path}: units {units!r} must be one of {', '.join(UNITS)}")
    with open(path, newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    if not lines:
        raise RecordError(f"record {path}: the file is empty")
    header = [name.strip() for name in lines[0]]
    if column not in header[1:]:
        raise RecordError(f"record {path}: no column {column!r} (columns: {', '.join(header[1:]) or 'none'})")
    index = header.index(column)
    dates, values, numbers = [], [], []  # numbers: each data row's line in the file (blank lines skipped)
    for number, row in enumerate(lines[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"record {path}, line {number}"
        dates.append(_date(row[0].strip(), where))
        values.append(flow_value(row[index].strip() if index < len(row) else "", where, column))
        numbers.append(number)
    return record_from_rows(path, column, dates, values, units, numbers)


def record_from_rows(
    path: str, column: str, dates: list[tuple[int, ...]], values: list[float], units: str, lines: list[int]
) -> Record:
    """The record of rows already read: ``dates`` as ``(year, month)`` or ``(year, month, day)``, ``values`` in
    ``units``, ``lines`` each row's line in ``path`` (for the messages); daily rows are summed into months."""
    if not dates:
        raise RecordError(f"record {path}: no data lines")
    if units == "cfs":
        values, units = [value * CUBIC_METRES_PER_CUBIC_FOOT for value in values], "m3/s"
    daily = any(len(date) == 3 and date[2] != 1 for date in dates)
    if daily:
        first, volumes = _monthly_from_days(path, dates, values, units, lines)
    else:
        first, volumes = _months(path, dates, values, units, lines)
    return Record(path, column, first, np.asarray(volumes, dtype=np.float64))


def _date(text: str, where: str) -> tuple[int, ...]:
    parts = text.split("-")
    try:
        numbers = tuple(int(part) for part in parts)
        if len(numbers) not in (2, 3) or not 1 <= numbers[1] <= MONTHS:
            raise ValueError
        if len(numbers) == 3 and not 1 <= numbers[2] <= calendar.monthrange(numbers[0], numbers[1])[1]:
            raise ValueError
    except ValueError:
        raise RecordError(f"{where}: date {text!r} is not YYYY-MM or YYYY-MM-DD") from None
    return numbers


def flow_value(text: str, where: str, column: str) -> float:
    """A flow of the record: a finite number, 0 or more; one line naming ``where`` otherwise."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise RecordError(f"{where}: {column} {text!r} is not a number")
    if value < 0:
        raise RecordError(f"{where}: {column} {text} is negative")
    return value


def _month_number(year: int, month: int) -> int:
    return year * MONTHS + month - 1


def _months(
    path: str, dates: list[tuple[int, ...]], values: list[float], units: str, lines: list[int]
) -> tuple[tuple[int, int], list[float]]:
    """A monthly record: each month once, none missing (``lines``: each row's line in the file)."""
    numbers = [_month_number(date[0], date[1]) for date in dates]
    for line, (previous, current) in zip(lines[1:], itertools.pairwise(numbers), strict=True):
        if current == previous:
            raise RecordError(f"record {path}, line {line}: month {_label(current)} is duplicated")
        where = f"record {path}, line {line}: {_label(current)}"
        if current < previous:
            raise RecordError(f"{where} follows {_label(previous)}: the months are out of order")
        if current != previous + 1:
            gap = "is missing" if current == previous + 2 else f"to {_label(current - 1)} are missing"
            raise RecordError(f"{where} follows {_label(previous)}: {_label(previous + 1)} {gap}")
    volumes = [
        value if units == "hm3" else value * _days(number) * SECONDS_PER_DAY / 1e6
        for number, value in zip(numbers, values, strict=True)
    ]
    return (dates[0][0], dates[0][1]), volumes


def _monthly_from_days(
    path: str, dates: list[tuple[int, ...]], values: list[float], units: str, lines: list[int]
) -> tuple[tuple[int, int], list[float]]:
    """A daily record summed into months: each day once, none missing, no partial month."""
    if any(len(date) != 3 for date in dates):
        line = next(number for number, date in zip(lines, dates, strict=True) if len(date) != 3)
        raise RecordError(f"record {path}, line {line}: a monthly date in a daily record")
    ordinals = [np.datetime64(f"{y:04d}-{m:02d}-{d:02d}").astype(int) for y, m, d in dates]
    for row, (previous, current) in enumerate(itertools.pairwise(ordinals), start=1):
        if current == previous:
            raise RecordError(f"record {path}, line {lines[row]}: day {_day(dates[row])} is duplicated")
        if current < previous:
            raise RecordError(f"record {path}, line {lines[row]}: day {_day(dates[row])} is out of order")
    totals: dict[int, list[float]] = {}
    first_line: dict[int, int] = {}
    for line, date, value in zip(lines, dates, values, strict=True):
        month = _month_number(date[0], date[1])
        first_line.setdefault(month, line)
        totals.setdefault(month, []).append(value if units == "hm3" else value * SECONDS_PER_DAY / 1e6)
    for month, days in totals.items():
        if len(days) != _days(month):
            raise RecordError(
                f"record {path}, line {first_line[month]}: {_label(month)} has {len(days)} of its "
                f"{_days(month)} days (a partial month)"
            )
    months = sorted(totals)
    for previous, current in itertools.pairwise(months):
        if current != previous + 1:
            raise RecordError(f"record {path}, line {first_line[current]}: {_label(previous + 1)} is missing")
    return (months[0] // MONTHS, months[0] % MONTHS + 1), [sum(totals[month]) for month in months]


def _days(month_number: int) -> int:
    return calendar.monthrange(month_number // MONTHS, month_number % MONTHS + 1)[1]


def _label(month_number: int) -> str:
    return f"{month_number // MONTHS}-{month_number % MONTHS + 1:02d}"


def _day(date: tuple[int, ...]) -> str:
    return f"{date[0]:04d}-{date[1]:02d}-{date[2]:02d}"
