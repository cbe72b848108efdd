"""A gauge's file as a user has it, read into a river's monthly record: plain CSV or USGS RDB, daily or monthly.

Two formats are read:

- **USGS RDB**, the tab-separated text NWIS's web services serve (and ``dataretrieval``'s
  ``nwis.get_dv`` downloads): ``#`` comment lines, a header (``agency_cd``, ``site_no``,
  ``datetime`` and the value columns), then a line of field formats (``5s 15s 20d 14n 10s``).
  The flow is the daily mean discharge, USGS parameter 00060 statistic 00003 (a column named
  ``<series>_00060_00003``), in cubic feet per second; its qualifier column (``..._cd``) is not
  read. The gauge is the ``site_no``.
- **CSV** with a header: the dates in the first column (or ``date_column``), in one form for the
  whole file: ``YYYY-MM`` (monthly), ``YYYY-MM-DD``, ``YYYY/MM/DD``, ``MM/DD/YYYY`` (the US form;
  a day-first ``DD/MM/YYYY`` is read as month-first, so it fails on its first day past the 12th),
  or an ISO date and time, ``YYYY-MM-DD HH:MM[:SS][+HH:MM]`` (a pandas index written with
  ``to_csv``, ``dataretrieval``'s: the day is kept, the time dropped). The flows are ``column``,
  or the one column that is neither the date, ``site_no``, ``agency_cd`` nor a ``_cd`` qualifier.

A daily file's first and last months are left out when they are partial (a download that ends
yesterday): :attr:`GaugeFile.left_out` says which. The rows then go through
:func:`~.records.record_from_rows`: every day of every month once (a partial month inside the
record, a gap or a duplicate is refused with its line), summed into months in hm3.
"""

from __future__ import annotations

import calendar
import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reservoir_dqn.envs.reservoir.records import UNITS, Record, RecordError, flow_value, record_from_rows

RDB_DISCHARGE = re.compile(r"^\d+_00060_00003$")  # daily mean discharge, cfs
NOT_FLOWS = {"site_no", "agency_cd"}


@dataclass(frozen=True)
class DateForm:
    """One way of writing dates: its name for messages, and how a cell becomes ``(year, month[, day])``."""

    name: str
    pattern: re.Pattern[str]
    fields: Callable[[re.Match[str]], tuple[int, ...]]


DATE_FORMS = (
    DateForm("YYYY-MM", re.compile(r"^(\d{4})-(\d{1,2})$"), lambda m: (int(m[1]), int(m[2]))),
    DateForm("YYYY-MM-DD", re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$"), lambda m: (int(m[1]), int(m[2]), int(m[3]))),
    DateForm("YYYY/MM/DD", re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$"), lambda m: (int(m[1]), int(m[2]), int(m[3]))),
    DateForm("MM/DD/YYYY", re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$"), lambda m: (int(m[3]), int(m[1]), int(m[2]))),
    DateForm(
        "YYYY-MM-DD HH:MM[:SS][+HH:MM]",
        re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?$"),
        lambda m: (int(m[1]), int(m[2]), int(m[3])),
    ),
)


@dataclass(frozen=True)
class GaugeFile:
    """What a user's file holds: its monthly record, the gauge's name and the form its dates were read in."""

    record: Record
    gauge: str
    date_form: str
    units: str
    rdb: bool
    left_out: tuple[str, ...] = ()  # partial months at the ends, left out: "2025-05 (5 of its 31 days)"


def read_gauge_file(
    path: Path, column: str | None = None, units: str | None = None, date_column: str | None = None
) -> GaugeFile:
    """The monthly record in ``path`` (see the module's docstring); a :class:`RecordError` in one line otherwise.

    :param units: what a CSV's flows are (``hm3``, ``m3/s`` or ``cfs``); an RDB file's discharge is cfs, and
        another value for it is refused (mixed units).
    """
    if not path.is_file():
        raise RecordError(f"record {path}: no such file")
    lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()  # -sig: a byte-order mark goes
    header = next((line for line in lines if line and not line.startswith("#")), "")
    if "\t" in header and "datetime" in header.split("\t"):  # RDB: tab-separated, its date column 'datetime'
        return _read_rdb(path, lines, column, units)
    return _read_csv(path, lines, column, units, date_column)


def _read_rdb(path: Path, lines: list[str], column: str | None, units: str | None) -> GaugeFile:
    body = [(number, line) for number, line in enumerate(lines, start=1) if line and not line.startswith("#")]
    if len(body) < 2:
        raise RecordError(f"record {path}: an RDB file without its header and format lines")
    header = body[0][1].split("\t")
    if "datetime" not in header:
        raise RecordError(f"record {path}, line {body[0][0]}: an RDB header without a datetime column")
    flows = [name for name in header if RDB_DISCHARGE.match(name)]
    if column is not None:
        if column not in header:
            raise RecordError(f"record {path}: no column {column!r} (columns: {', '.join(header)})")
        flows = [column]
    if len(flows) != 1:
        found = ", ".join(flows) or "none"
        raise RecordError(
            f"record {path}: one daily mean discharge column (<series>_00060_00003) is needed, found {found}: "
            "name it with --column"
        )
    if units not in (None, "cfs"):
        raise RecordError(
            f"record {path}: --units {units}, but an RDB file's discharge (USGS parameter 00060) is in cfs: "
            "leave --units out"
        )
    date_index, flow_index = header.index("datetime"), header.index(flows[0])
    site = header.index("site_no") if "site_no" in header else None
    dates, values, numbers, sites = [], [], [], set()
    formats = all(re.fullmatch(r"\d+[sdn]", cell.strip()) for cell in body[1][1].split("\t"))
    for number, line in body[2 if formats else 1 :]:  # the line of field formats (5s 15s 20d 14n 10s), if any
        cells = line.split("\t")
        where = f"record {path}, line {number}"
        dates.append(_date(cells[date_index].strip() if date_index < len(cells) else "", DATE_FORMS[1], where))
        values.append(flow_value(cells[flow_index].strip() if flow_index < len(cells) else "", where, flows[0]))
        numbers.append(number)
        if site is not None and site < len(cells):
            sites.add(cells[site].strip())
    if len(sites) > 1:
        raise RecordError(f"record {path}: the file holds several gauges ({', '.join(sorted(sites))}); one a file")
    gauge = sites.pop() if sites else flows[0]
    dates, values, numbers, left_out = _whole_months(dates, values, numbers)
    record = record_from_rows(str(path), gauge, dates, values, "cfs", numbers)
    return GaugeFile(record, gauge, DATE_FORMS[1].name, "cfs", rdb=True, left_out=left_out)


def _read_csv(
    path: Path, lines: list[str], column: str | None, units: str | None, date_column: str | None
) -> GaugeFile:
    rows = [(number, row) for number, row in enumerate(csv.reader(lines), start=1) if any(c.strip() for c in row)]
    if not rows:
        raise RecordError(f"record {path}: the file is empty")
    header = [name.strip() for name in rows[0][1]]
    date_at = header.index(date_column) if date_column in header else 0
    if date_column is not None and date_column not in header:
        raise RecordError(f"record {path}: no date column {date_column!r} (columns: {', '.join(header)})")
    candidates = [
        name for i, name in enumerate(header) if i != date_at and name not in NOT_FLOWS and not name.endswith("_cd")
    ]
    if column is None:
        if len(candidates) != 1:
            raise RecordError(f"record {path}: name the flows' column with --column (columns: {', '.join(header)})")
        column = candidates[0]
    if column not in header:
        raise RecordError(f"record {path}: no column {column!r} (columns: {', '.join(header)})")
    if units is None:
        raise RecordError(f"record {path}: say what the flows are with --units ({', '.join(UNITS)})")
    if units not in UNITS:
        raise RecordError(f"record {path}: units {units!r} is none of {', '.join(UNITS)}")
    if len(rows) < 2:
        raise RecordError(f"record {path}: no data lines")
    first_number, first_row = rows[1]
    form = _form(first_row[date_at].strip() if date_at < len(first_row) else "", f"record {path}, line {first_number}")
    index = header.index(column)
    dates, values, numbers = [], [], []
    for number, row in rows[1:]:
        where = f"record {path}, line {number}"
        dates.append(_date(row[date_at].strip() if date_at < len(row) else "", form, where))
        values.append(flow_value(row[index].strip() if index < len(row) else "", where, column))
        numbers.append(number)
    dates, values, numbers, left_out = _whole_months(dates, values, numbers)
    record = record_from_rows(str(path), column, dates, values, units, numbers)
    return GaugeFile(record, column, form.name, units, rdb=False, left_out=left_out)


def _whole_months(
    dates: list[tuple[int, ...]], values: list[float], numbers: list[int]
) -> tuple[list[tuple[int, ...]], list[float], list[int], tuple[str, ...]]:
    """Daily rows without the partial months at the record's ends, and those months (a monthly file: unchanged)."""
    if not any(len(date) == 3 and date[2] != 1 for date in dates):  # monthly, as records.record_from_rows reads it
        return dates, values, numbers, ()
    keep = [True] * len(dates)
    left_out = []
    for end in (dates[0][:2], dates[-1][:2]):
        rows = [index for index, date in enumerate(dates) if date[:2] == end]
        days = calendar.monthrange(end[0], end[1])[1]
        if len(rows) < days and keep[rows[0]]:
            left_out.append(f"{end[0]}-{end[1]:02d} ({len(rows)} of its {days} days)")
            for index in rows:
                keep[index] = False
    kept = [index for index, flag in enumerate(keep) if flag]
    return [dates[i] for i in kept], [values[i] for i in kept], [numbers[i] for i in kept], tuple(left_out)


def _form(text: str, where: str) -> DateForm:
    for form in DATE_FORMS:
        if form.pattern.match(text):
            return form
    forms = ", ".join(form.name for form in DATE_FORMS)
    raise RecordError(f"{where}: date {text!r} is in no form this reader knows ({forms})")


def _date(text: str, form: DateForm, where: str) -> tuple[int, ...]:
    match = form.pattern.match(text)
    if match is None:
        raise RecordError(f"{where}: date {text!r} is not {form.name}, the form of the file's first date")
    fields = form.fields(match)
    if not 1 <= fields[1] <= 12:
        raise RecordError(f"{where}: date {text!r} has no month {fields[1]} (read as {form.name})")
    if len(fields) == 3 and not 1 <= fields[2] <= calendar.monthrange(fields[0], fields[1])[1]:
        raise RecordError(f"{where}: date {text!r} has no day {fields[2]} in its month (read as {form.name})")
    return fields


def monthly_csv(record: Record) -> str:
    """The record as the monthly hm3 CSV the reservoir reads (``month``, then the gauge's column)."""
    rows = [f"month,{record.column}"]
    rows += [f"{record.label(index)},{volume:.4f}" for index, volume in enumerate(record.volumes_hm3)]
    return "\n".join(rows) + "\n"
