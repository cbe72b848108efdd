"""``reservoir-dqn record add``: a user's gauge file made a record the reservoir runs on, and the command to run it.

    .venv/bin/reservoir-dqn record add 01440000.rdb --name flatbrook

reads the file (plain CSV or USGS RDB, daily or monthly: :mod:`reservoir_dqn.envs.reservoir.gauges`
says which date forms and units), sums it into calendar months in hm3, and writes
``data/<name>_monthly_hm3.csv``. In a git repository the file is then staged (``git add``): a
queued or ``--temp`` DVC experiment runs in a copy that holds only the files git or DVC track,
so an unstaged record would be missing there. Last, it prints the ``dvc exp run`` line that
trains and evaluates a reservoir on it, named ``reservoir-<name>`` (its own MLflow experiment,
model and champion), sized for this river (:mod:`reservoir_dqn.envs.reservoir.sizing`: one
storage unit a hundredth of the mean annual flow; ``--storage-share`` and ``--demand-share``
set the active storage and the year's demand as shares of that flow), fitted on the record
but its last ``--hold-out-years`` whole years, which are held out, or but the years ``--held-out
FIRST-LAST`` anywhere in it (a drought of record).

A file that cannot be read, a name already taken by another file, a share out of range: one
line, exit status 2, nothing written.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from reservoir_dqn.commands.plumbing import run_stage
from reservoir_dqn.commands.recipe import set_value
from reservoir_dqn.common.errors import ConfigError, RunFailed
from reservoir_dqn.common.files import write_text
from reservoir_dqn.common.process import exit_process
from reservoir_dqn.config import DEFAULT_PARAMS, load_config
from reservoir_dqn.envs.reservoir.gauges import monthly_csv, read_gauge_file
from reservoir_dqn.envs.reservoir.records import UNITS, Record, RecordError
from reservoir_dqn.envs.reservoir.settings import ReservoirConfig
from reservoir_dqn.envs.reservoir.sizing import RiverSize, sized_settings
from reservoir_dqn.envs.reservoir.split import record_split
from reservoir_dqn.envs.reservoir.windows import window_starts

DATA = Path("data")
NAME = re.compile(r"^[a-z][a-z0-9-]*$")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reservoir-dqn record", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="action", required=True, metavar="add")
    add = commands.add_parser("add", help="make a gauge's file a record and print the experiment that runs it")
    add.add_argument("file", type=Path, help="the gauge's file: CSV or USGS RDB, daily or monthly")
    add.add_argument(
        "--name", required=True, help="the river's short name: data/<name>_monthly_hm3.csv, reservoir-<name>"
    )
    add.add_argument("--column", help="the flows' column (default: the one flow column; an RDB file's discharge)")
    add.add_argument("--date-column", help="a CSV's date column (default: the first)")
    add.add_argument("--units", choices=UNITS, help="what a CSV's flows are (an RDB file's discharge is cfs)")
    add.add_argument("--storage-share", type=float, help="active storage, share of the mean annual flow (default 0.4)")
    add.add_argument(
        "--demand-share", type=float, help="the year's demand, share of the mean annual flow (default 0.56)"
    )
    held = add.add_mutually_exclusive_group()
    held.add_argument("--hold-out-years", type=int, default=20, help="the record's last whole years held out (20)")
    held.add_argument(
        "--held-out",
        metavar="FIRST-LAST",
        help="held-out years anywhere in the record instead (e.g. 1961-1972, a drought of record), each from the "
        "reservoir's start month; the chain is fitted on every other whole year",
    )
    add.add_argument(
        "--force", action="store_true", help="replace data/<name>_monthly_hm3.csv if it holds another record"
    )
    add.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="the parameter file the sizing starts from")
    return parser


def fitting_years(record: Record, held_out: int, reservoir: ReservoirConfig) -> tuple[int, int]:
    """The whole calendar years the chain is fitted on: all but the last ``held_out`` whole ones, which must hold a
    held-out window (``reservoir``'s horizon, starting in its ``start_month``) and leave a training window."""
    first = int(record.years[0]) + (record.first[1] != 1)
    last_whole = int(record.years[-1]) - (int(record.calendar_months[-1]) != 11)
    last = last_whole - held_out
    horizon, start = reservoir.horizon_months, reservoir.start_month
    years = {"first_year": first, "last_year": last, "held_out": None, "validation": None}
    split = record_split(record, reservoir.record.model_copy(update=years), start)
    if not window_starts(record, split, "training", horizon, start):
        raise ConfigError(
            f"--hold-out-years {held_out}: the record's whole years {first}-{last_whole} leave {first}-{last} to fit "
            f"on, which hold no {horizon}-month training window starting in month {start + 1}"
        )
    if not window_starts(record, split, "held_out", horizon, start):
        raise ConfigError(
            f"--hold-out-years {held_out}: {last + 1}-{last_whole} hold no {horizon}-month window starting in month "
            f"{start + 1}: hold out more years"
        )
    return first, last


def held_out_years(record: Record, text: str, reservoir: ReservoirConfig) -> tuple[int, int, tuple[int, int]]:
    """``--held-out FIRST-LAST``: the record's whole years, and the held-out years, which must hold a held-out
    window of ``reservoir``'s horizon and leave a training window outside them."""
    match = re.fullmatch(r"(\d{4})-(\d{4})", text)
    if match is None or int(match[1]) > int(match[2]):
        raise ConfigError(f"--held-out {text}: two years, the first first, as FIRST-LAST (e.g. 1961-1972)")
    held_out = (int(match[1]), int(match[2]))
    first = int(record.years[0]) + (record.first[1] != 1)
    last = int(record.years[-1]) - (int(record.calendar_months[-1]) != 11)
    settings = reservoir.record.model_copy(
        update={"first_year": first, "last_year": last, "held_out": held_out, "validation": None}
    )
    try:
        split = record_split(record, settings, reservoir.start_month)
    except RecordError as error:
        raise ConfigError(f"--held-out {text}: {str(error).split(': ', 1)[1]}") from None
    horizon, start = reservoir.horizon_months, reservoir.start_month
    for part, fix in (("held_out", "hold out more years"), ("training", "hold out fewer years")):
        if not window_starts(record, split, part, horizon, start):  # type: ignore[arg-type]
            raise ConfigError(
                f"--held-out {text}: {'these' if part == 'held_out' else 'the other'} years of {record.span} hold no "
                f"{horizon}-month {part.replace('_', '-')} window starting in month {start + 1}: {fix}"
            )
    return first, last, held_out


def experiment_line(name: str, settings: Mapping[str, object]) -> str:
    """The ``dvc exp run`` command that runs the reservoir ``settings`` describe (``-S key=value`` each)."""
    sets = " ".join(f"-S {shlex.quote(f'{key}={set_value(value)}')}" for key, value in settings.items())
    return f".venv/bin/reservoir-dqn dvc exp run --temp --name {name} {sets}"


def _stage(path: Path) -> str:
    """Stage ``path`` in git, so queued and --temp experiments see it; say what happened."""
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True, check=False)
    if inside.returncode != 0:
        return "not a git repository: add it to git (or DVC) yourself before a queued or --temp experiment"
    added = subprocess.run(["git", "add", "--", str(path)], capture_output=True, text=True, check=False)
    if added.returncode != 0:
        why = next((line for line in added.stderr.splitlines() if line and not line.startswith("hint:")), "?")
        raise RunFailed(f"{path} is written, but git add failed ({why}): add it to git yourself")
    return "staged with git add: queued and --temp experiments see it (commit it with your experiment)"


def run(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if not NAME.match(args.name):
        raise ConfigError(f"--name {args.name!r}: lower-case letters, digits and '-', starting with a letter")
    for option in ("storage_share", "demand_share"):
        value = getattr(args, option)
        if value is not None and not 0 < value <= 5:
            raise ConfigError(f"--{option.replace('_', '-')} {value:g}: a share of the mean annual flow, above 0")
    gauge = read_gauge_file(args.file, args.column, args.units, args.date_column)
    record, size = gauge.record, RiverSize.of(gauge.record)
    default: ReservoirConfig = load_config(args.params).env.settings(ReservoirConfig, "reservoir")
    if args.held_out is not None:
        first, last, held_out = held_out_years(record, args.held_out, default)
    else:
        (first, last), held_out = fitting_years(record, args.hold_out_years, default), None
    target = DATA / f"{args.name}_monthly_hm3.csv"
    if target.as_posix() == Path(default.record.path).as_posix():
        raise ConfigError(f"--name {args.name}: {target} is {args.params}'s own record; choose another name")
    reservoir = {
        "inflow_model": "record",
        "record.path": target.as_posix(),
        "record.column": record.column,
        "record.units": "hm3",
        "record.first_year": first,
        "record.last_year": last,
        **({} if held_out is None else {"record.held_out": list(held_out)}),
        **sized_settings(size, default, args.storage_share, args.demand_share),
    }
    settings = {"env.name": f"reservoir-{args.name}", "env.section": "reservoir"}
    settings |= {f"env.reservoir.{key}": value for key, value in reservoir.items()}
    text = monthly_csv(record)
    if target.is_file() and target.read_text(encoding="utf-8") != text and not args.force:
        raise ConfigError(f"--name {args.name}: {target} holds another record; choose another name, or --force")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text(target, text)
    flow = size.mean_annual_hm3 * 1e6 / (365.25 * 86_400)
    print(
        f"wrote {target}: gauge {record.column}, {len(record)} months {record.span} (read as "
        f"{'USGS RDB' if gauge.rdb else 'CSV'}, dates {gauge.date_form}, {gauge.units}); mean annual flow "
        f"{size.mean_annual_hm3:,.1f} hm3 ({flow:,.2f} m3/s) over {size.years} whole years"
    )
    for month in gauge.left_out:
        print(f"left out {month}: a partial month at the record's end")
    print(_stage(target))
    print(
        f"sized for this river: one storage unit is {size.unit_hm3:g} hm3 (a hundredth of the mean annual flow), "
        f"active storage {reservoir.get('capacity', default.capacity)} units, "
        + (
            f"the chain fitted on {first}-{last}, held out: the {default.horizon_months}-month windows from "
            f"{last + 1} on"
            if held_out is None
            else f"held out: {held_out[0]}-{held_out[1]}, the chain fitted on the other years of {first}-{last}"
        )
    )
    print("run it:")
    print(f"  {experiment_line(args.name, settings)}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)


if __name__ == "__main__":
    exit_process(main())
