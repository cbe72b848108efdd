"""Your own river: a gauge's file read (CSV or USGS RDB), `reservoir-dqn record add`, gauge ids kept as text,
and the sizing check that refuses a reservoir sized for another river."""

from __future__ import annotations

import calendar
import subprocess
from pathlib import Path

import numpy as np
import pytest

from reservoir_dqn.commands import record as record_command
from reservoir_dqn.commands import train
from reservoir_dqn.config import ConfigError, load_config
from reservoir_dqn.envs.reservoir.gauges import monthly_csv, read_gauge_file
from reservoir_dqn.envs.reservoir.records import CUBIC_METRES_PER_CUBIC_FOOT, RecordError, load_record
from reservoir_dqn.envs.reservoir.settings import ReservoirConfig
from reservoir_dqn.envs.reservoir.sizing import RiverSize, check_size, sized_settings, sizing_problems
from tests.conftest import REPO
from tests.delaware import RECORD

GAUGE = "01440000"  # Flat Brook near Flatbrookville, NJ: a hundredth of Trenton's flow
DEFAULT = load_config(REPO / "params.yaml").env.settings(ReservoirConfig, "reservoir")


def _days(first_year: int, years: int) -> list[tuple[int, int, int]]:
    return [
        (year, month, day)
        for year in range(first_year, first_year + years)
        for month in range(1, 13)
        for day in range(1, calendar.monthrange(year, month)[1] + 1)
    ]


def write_rdb(path: Path, days: list[tuple[int, int, int]], cfs: float = 10.0, site: str = GAUGE) -> None:
    """A USGS RDB daily-values file as NWIS serves it: comments, header, field formats, tab-separated rows."""
    lines = ["# U.S. Geological Survey", "# Daily values", "#"]
    lines += ["agency_cd\tsite_no\tdatetime\t68478_00060_00003\t68478_00060_00003_cd", "5s\t15s\t20d\t14n\t10s"]
    lines += [f"USGS\t{site}\t{y:04d}-{m:02d}-{d:02d}\t{cfs + m:.1f}\tA" for y, m, d in days]
    path.write_text("\n".join(lines) + "\n")


def test_an_rdb_file_in_cfs_becomes_monthly_hm3_without_its_partial_last_month(tmp_path: Path) -> None:
    days = [*_days(1990, 2), (1992, 1, 1), (1992, 1, 2)]
    write_rdb(tmp_path / "gauge.rdb", days)
    gauge = read_gauge_file(tmp_path / "gauge.rdb")
    assert (gauge.gauge, gauge.rdb, gauge.units, gauge.left_out) == (
        GAUGE,
        True,
        "cfs",
        ("1992-01 (2 of its 31 days)",),
    )
    record = gauge.record
    assert (len(record), record.span) == (24, "1990-01 to 1991-12")
    february = (10.0 + 2) * CUBIC_METRES_PER_CUBIC_FOOT * 28 * 86_400 / 1e6
    assert record.volumes_hm3[1] == pytest.approx(february)
    assert monthly_csv(record).splitlines()[:2] == [f"month,{GAUGE}", f"1990-01,{record.volumes_hm3[0]:.4f}"]


@pytest.mark.parametrize(
    ("dates", "form"),
    [
        (lambda y, m, d: f"{y}-{m:02d}-{d:02d}", "YYYY-MM-DD"),
        (lambda y, m, d: f"{y}/{m:02d}/{d:02d}", "YYYY/MM/DD"),
        (lambda y, m, d: f"{m}/{d}/{y}", "MM/DD/YYYY"),
        (lambda y, m, d: f"{y}-{m:02d}-{d:02d} 00:00:00+00:00", "YYYY-MM-DD HH:MM[:SS][+HH:MM]"),
    ],
)
def test_a_csv_in_each_date_form_reads_the_same_record(tmp_path: Path, dates, form: str) -> None:  # type: ignore[no-untyped-def]
    rows = [f"{dates(*day)},{GAUGE},{1.0 + day[1]},A" for day in _days(2000, 1)]
    path = tmp_path / "flows.csv"
    path.write_text("datetime,site_no,00060_Mean,00060_Mean_cd\n" + "\n".join(rows) + "\n")  # dataretrieval's columns
    gauge = read_gauge_file(path, units="m3/s")
    assert (gauge.gauge, gauge.date_form) == ("00060_Mean", form)
    assert gauge.record.volumes_hm3[0] == pytest.approx(2.0 * 31 * 86_400 / 1e6)


BAD = [
    ("no file", None, {}, "no such file"),
    ("an unknown date form", "date,q\n31.01.2000,1\n", {"units": "hm3"}, "line 2: date '31.01.2000' is in no form"),
    (
        "a day-first date",
        "date,q\n01/13/2000,1\n13/01/2000,1\n",
        {"units": "hm3"},
        "line 3: date '13/01/2000' has no month 13",
    ),
    (
        "mixed date forms",
        "date,q\n2000-01,1\n2000/02/01,1\n",
        {"units": "hm3"},
        "line 3: date '2000/02/01' is not YYYY-MM",
    ),
    ("no units", "date,q\n2000-01,1\n", {}, "say what the flows are with --units (hm3, m3/s, cfs)"),
    ("unknown units", "date,q\n2000-01,1\n", {"units": "gpm"}, "units 'gpm' is none of hm3, m3/s, cfs"),
    (
        "mixed units",
        "rdb",
        {"units": "m3/s"},
        "--units m3/s, but an RDB file's discharge (USGS parameter 00060) is in cfs",
    ),
    (
        "a gap",
        "date,q\n2000-01,1\n2000-03,1\n",
        {"units": "hm3"},
        "line 3: 2000-03 follows 2000-01: 2000-02 is missing",
    ),
    ("a partial month inside", "partial", {"units": "hm3"}, "2000-02 has 28 of its 29 days (a partial month)"),
    ("two flow columns", "date,a,b\n2000-01,1,2\n", {"units": "hm3"}, "name the flows' column with --column"),
]


@pytest.mark.parametrize(("case", "content", "options", "message"), BAD, ids=[case for case, *_ in BAD])
def test_a_bad_gauge_file_is_refused_in_one_line(tmp_path: Path, case: str, content, options, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "gauge.csv"
    if content == "rdb":
        write_rdb(path, _days(2000, 1))
    elif content == "partial":
        days = [day for day in _days(2000, 1) if day[:3] != (2000, 2, 10)]
        path.write_text("date,q\n" + "".join(f"{y}-{m:02d}-{d:02d},1\n" for y, m, d in days))
    elif content is not None:
        path.write_text(content)
    with pytest.raises(RecordError) as refused:
        read_gauge_file(path, **options)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_the_sizing_follows_the_river_and_refuses_a_reservoir_sized_for_another() -> None:
    small = RiverSize.of(load_record(RECORD, GAUGE, "hm3"))
    trenton = RiverSize.of(load_record(RECORD, "01463500", "hm3"))
    assert trenton.unit_hm3 == pytest.approx(106.0, rel=0.05)  # the Delaware recipe's unit: 1945-2025 here
    assert small.mean_annual_hm3 == pytest.approx(104.3, abs=0.1) and small.unit_hm3 == 1.04
    sized = sized_settings(small, DEFAULT)
    assert sized == {"unit_hm3": 1.04, "weight_energy": pytest.approx(9.62)}  # the default's 10 hm3 unit, 1.0 weight
    refusals, warnings = sizing_problems(DEFAULT, small)  # the default reservoir on Flat Brook: 10.4 units a year
    assert len(refusals) == 1 and "a mean year is 10.4 storage units, under 20" in refusals[0]
    assert "unit_hm3=1.04" in refusals[0]
    assert len(warnings) == 1 and "5.4 times the record's mean annual flow" in warnings[0]
    resized = DEFAULT.model_copy(update=sized)
    assert sizing_problems(resized, small) == ([], [])
    shares = sized_settings(small, DEFAULT, storage_share=1.5, demand_share=0.28)
    assert (shares["capacity"], shares["min_storage"], shares["initial_storage"]) == (150, 30, 90)
    assert sum(shares["demand"]) == pytest.approx(28, abs=3) and set(shares["demand"]) <= set(DEFAULT.release_levels)


def test_a_river_whose_flows_the_grid_cannot_tell_apart_leaves_no_decision_and_is_refused(tmp_path: Path) -> None:
    """Sized by the convention (100 units a mean year) but with the same flow every month: the Markov SDP is at
    the foresight bound on the fitting years, so no score against foresight means anything: one line, refused.
    The Flat Brook reservoir, sized for it, passes (its SDP scores about 0.92 of foresight there)."""
    steady = tmp_path / "steady.csv"
    steady.write_text("date,flow\n" + "".join(f"{y}-{m:02d},10.0\n" for y in range(1945, 2025) for m in range(1, 13)))
    sized = {"unit_hm3": 1.2, "weight_energy": 8.0, "inflow_model": "record"}
    record = DEFAULT.record.model_copy(update={"path": str(steady), "column": "flow", "last_year": 2004})
    with pytest.raises(ConfigError, match=r"the Markov SDP scores 1.000 of the foresight bound on the fitting years"):
        check_size(DEFAULT.model_copy(update=sized | {"record": record}))
    flatbrook = DEFAULT.record.model_copy(update={"path": str(RECORD), "column": GAUGE})
    check_size(DEFAULT.model_copy(update={"unit_hm3": 1.04, "weight_energy": 9.62, "inflow_model": "record",
                                          "record": flatbrook}))  # fmt: skip


def test_a_gauge_id_keeps_its_leading_zeros_or_the_refusal_says_to_quote_it(tmp_path: Path) -> None:
    sets = ["env.reservoir.record.column=01440000"]  # what `dvc exp run -S` writes as '01440000' too
    assert load_config(REPO / "params.yaml", sets).env.reservoir.record.column == GAUGE
    params = (REPO / "params.yaml").read_text().replace("column: '01463500'", "column: 01463500")
    (tmp_path / "params.yaml").write_text(params)
    assert load_config(tmp_path / "params.yaml").env.reservoir.record.column == "01463500"  # unquoted, still text
    with pytest.raises(ConfigError, match=r"record.column = 1463500: Input should be a valid string \(write it in "):
        load_config(REPO / "params.yaml", ["env.reservoir.record.column=1463500"])
    assert load_config(REPO / "params.yaml", ["dqn.lr=1e-3"]).dqn.lr == 1e-3  # numbers are still numbers
    from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S` does to params.yaml

    apply_overrides(str(tmp_path / "params.yaml"), ["env.reservoir.record.column=01440000"])
    assert load_config(tmp_path / "params.yaml").env.reservoir.record.column == GAUGE


@pytest.mark.slow
def test_record_add_writes_stages_and_prints_a_run_the_stages_accept(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """From an RDB file to a reservoir the train stage accepts, sized for the river; a second name refused."""
    subprocess.run(["git", "init", "-q"], check=True)
    rng = np.random.default_rng(0)
    days = _days(1960, 32)
    lines = ["agency_cd\tsite_no\tdatetime\t68478_00060_00003\t68478_00060_00003_cd", "5s\t15s\t20d\t14n\t10s"]
    lines += [f"USGS\t{GAUGE}\t{y:04d}-{m:02d}-{d:02d}\t{rng.lognormal(3, 0.6):.1f}\tA" for y, m, d in days]
    (project / "flatbrook.rdb").write_text("\n".join(lines) + "\n")
    assert record_command.main(["add", "flatbrook.rdb", "--name", "flatbrook", "--params", "params.yaml"]) == 0
    out = capsys.readouterr().out
    assert "wrote data/flatbrook_monthly_hm3.csv: gauge 01440000, 384 months 1960-01 to 1991-12" in out
    staged = subprocess.run(["git", "diff", "--cached", "--name-only"], capture_output=True, text=True, check=True)
    assert staged.stdout.split() == ["data/flatbrook_monthly_hm3.csv"]
    line = next(text for text in out.splitlines() if "dvc exp run" in text)
    sets = line.split(" -S ")[1:]  # the printed run's settings, as `dvc exp run -S` takes them
    assert "env.reservoir.record.first_year=1960" in sets and "env.reservoir.record.last_year=1971" in sets
    status = train.main(
        ["--set", "train.total_frames=200", "--set", "train.eval_interval_frames=0"]
        + [arg for value in sets for arg in ("--set", value)]
    )
    assert status == 0
    (project / "other.rdb").write_text("\n".join(lines).replace("\t1", "\t2") + "\n")
    assert record_command.main(["add", "other.rdb", "--name", "flatbrook", "--params", "params.yaml"]) == 2
    assert "holds another record; choose another name, or --force" in capsys.readouterr().err


def test_fitting_years_that_leave_no_whole_held_out_window_are_refused_naming_the_years() -> None:
    from reservoir_dqn.envs import profile

    sets = ["env.reservoir.inflow_model=record", "env.reservoir.unit_hm3=106.0"]
    short = load_config(REPO / "params.yaml", [*sets, "env.reservoir.record.last_year=2018"]).env
    with pytest.raises(RecordError) as refused:
        profile(short).check(short)
    assert "the 76 held-out months after the fitting years (2019-01 to 2025-04) hold no whole window" in str(
        refused.value
    )
    whole = load_config(REPO / "params.yaml", [*sets, "env.reservoir.record.last_year=2025"]).env
    profile(whole).check(whole)  # fitted on the whole record: no hold-out, and nothing to refuse
    assert profile(whole).held_out(whole) is None


def test_a_monthly_file_dated_on_the_first_keeps_its_ends_and_an_rdb_file_without_formats_its_first_day(
    tmp_path: Path,
) -> None:
    monthly = tmp_path / "monthly.csv"
    monthly.write_text("date,q\n" + "".join(f"2000-{month:02d}-01,{month}\n" for month in range(1, 13)))
    gauge = read_gauge_file(monthly, units="hm3")
    assert (len(gauge.record), gauge.left_out) == (12, ())  # read as monthly, as the record loader reads it
    rdb = tmp_path / "gauge.rdb"
    write_rdb(rdb, _days(1990, 1))
    rdb.write_text("".join(line for line in rdb.read_text().splitlines(keepends=True) if not line.startswith("5s")))
    assert read_gauge_file(rdb).record.volumes_hm3[0] == pytest.approx(read_gauge_file(rdb).record.volumes_hm3[0])
    assert len(read_gauge_file(rdb).record) == 12  # January whole: its first day was not taken for a format line


def test_record_add_refuses_the_params_own_record_and_a_hold_out_without_a_window(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "data").mkdir()
    shipped = (REPO / "data/delaware_monthly_hm3.csv").read_text()
    (project / "data/delaware_monthly_hm3.csv").write_text(shipped)
    common = ["add", "data/delaware_monthly_hm3.csv", "--column", GAUGE, "--units", "hm3", "--params", "params.yaml"]
    assert record_command.main([*common, "--name", "delaware", "--force"]) == 2
    assert "data/delaware_monthly_hm3.csv is params.yaml's own record" in capsys.readouterr().err
    assert (project / "data/delaware_monthly_hm3.csv").read_text() == shipped
    assert record_command.main([*common, "--name", "flatbrook", "--hold-out-years", "10"]) == 2
    assert "2015-2024 hold no 120-month window starting in month 10: hold out more years" in capsys.readouterr().err
    assert not (project / "data/flatbrook_monthly_hm3.csv").exists()


def test_a_tracking_backend_no_one_registered_is_refused_even_with_tracking_off(tmp_path: Path) -> None:
    from reservoir_dqn.tracking import Tracking

    refusal = r"'file' is no tracking.backend \(did you mean 'files'\?\)"
    with pytest.raises(ConfigError, match=refusal):  # the registry is loaded: refused when params.yaml loads
        load_config(REPO / "params.yaml", ["tracking.enabled=false", "tracking.backend=file"])
    config = load_config(REPO / "params.yaml", ["tracking.enabled=false"])
    unchecked = config.model_copy(update={"tracking": config.tracking.model_copy(update={"backend": "file"})})
    with pytest.raises(ConfigError, match=refusal):  # loaded before the registry was: refused when tracking starts
        Tracking(unchecked, None, tmp_path)
