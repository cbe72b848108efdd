"""Cross-validation over blocks of decades: every decade of the record held out in turn.

Usage (from the repository root; about a minute)::

    .venv/bin/python -m bench.held_out_cv [--sets KEY=VALUE ...]

For the recipe ``reservoir-delaware`` (or it changed by ``--sets``, e.g. Flat Brook's column and
size), each block of ten water years from the record's first October is held out in turn
(``env.reservoir.record.held_out``): the chain is fitted on every other year, the SDPs are
solved on it, and every reference policy replays the block's window against foresight (random
0, foresight 1; its exact expectation), with the reliability of the Markov SDP. The drought of
record (the 1960s in the Northeast) is one of the blocks (``--anchor 1960``, the default), so it
is a test once. Agents are not
trained here: a DVC queue trains one experiment per block with the same ``-S``.
Writes ``bench/results/held_out_cv_<river>.{json,md}`` (``<river>``: ``env.name`` less ``reservoir-``).
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.common import REPO, RESULTS, machine, write_results
from reservoir_dqn.commands.recipe import overrides
from reservoir_dqn.config import load_config
from reservoir_dqn.envs import profile
from reservoir_dqn.envs.reservoir.records import load_record

BLOCK_YEARS = 10
POLICIES = ("sdp", "sdp_independent", "sop")


def blocks(sets: list[str], anchor: int) -> list[tuple[int, int]]:
    """The record's whole blocks of ten water years (each from the start month of its first year), one of them
    starting in ``anchor``."""
    config = load_config(REPO / "params.yaml", sets).env.reservoir
    record = load_record(config.record.path, config.record.column, config.record.units)
    start = config.start_month

    def index(year: int) -> int:  # the record index of the start month of ``year``
        return int((year - record.first[0]) * 12 + start - (record.first[1] - 1))

    first = next(year for year in range(int(record.years[0]), int(record.years[-1])) if index(year) >= 1)
    last = max(year for year in range(first, int(record.years[-1]) + 1) if index(year + 1) <= len(record))
    first += (anchor - first) % BLOCK_YEARS
    return [(year, year + BLOCK_YEARS - 1) for year in range(first, last - BLOCK_YEARS + 2, BLOCK_YEARS)]


def measure(sets: list[str], block: tuple[int, int]) -> dict[str, float]:
    held_out = f"env.reservoir.record.held_out=[{block[0]},{block[1]}]"
    config = load_config(REPO / "params.yaml", [*sets, "env.reservoir.record.last_year=null", held_out]).env
    record = profile(config).held_out(config)
    assert record is not None
    replayed = {name: record.replay(policy) for name, policy in record.policies().items()}
    random = float(record.random_rewards().sum())
    bound = float(replayed["foresight"].rewards.sum())
    row = {name: (float(replayed[name].rewards.sum()) - random) / (bound - random) for name in POLICIES}
    sdp = replayed["sdp"].performance[0]
    return row | {"sdp_reliability": sdp["reliability"], "sdp_deficit_hm3": sdp["deficit_hm3"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="*", default=[], metavar="KEY=VALUE", help="on top of the recipe")
    parser.add_argument(
        "--anchor", type=int, default=1960, help="a block starts in this year (1960: the 1960s drought is one block)"
    )
    args = parser.parse_args(argv)
    sets = [*overrides("reservoir-delaware", REPO / "recipes"), *args.sets]
    rows = {f"{first}-{last}": measure(sets, (first, last)) for first, last in blocks(sets, args.anchor)}
    data: dict[str, Any] = {"machine": machine(), "sets": sets, "rows": rows}
    name = "held_out_cv_" + load_config(REPO / "params.yaml", sets).env.name.removeprefix("reservoir-")
    write_results(name, data)
    lines = [
        "# Cross-validation over decades: each block of ten water years held out in turn",
        "",
        f"Measured with `.venv/bin/python -m bench.held_out_cv --anchor {args.anchor}"
        f"{' --sets ' + ' '.join(args.sets) if args.sets else ''}`"
        f" on {data['machine']['date']}: the recipe `reservoir-delaware` (`{' '.join(args.sets) or 'as shipped'}`), "
        "the chain fitted on every year but the block's, each reference policy replaying the block's 10-year "
        "window (score: random 0, foresight 1).",
        "",
        "| held out (water years from October) | Markov SDP | independent SDP | SOP | Markov SDP reliability "
        "| Markov SDP deficit hm3 |",
        "|---|---|---|---|---|---|",
    ]
    for block, row in rows.items():
        lines.append(
            f"| {block} | {row['sdp']:.3f} | {row['sdp_independent']:.3f} | {row['sop']:.3f} "
            f"| {row['sdp_reliability']:.3f} | {row['sdp_deficit_hm3']:,.1f} |"
        )
    text = "\n".join(lines) + "\n"
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
