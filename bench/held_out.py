"""What persistence is worth on the held-out record, by reservoir size and sparse-row rule.

Usage (from the repository root; about a minute)::

    .venv/bin/python -m bench.held_out

For the recipe ``reservoir-delaware`` with its active storage set to 10%, 20%, 40% (the
recipe's) and 80% of a mean year's flow (capacity 10, 20, 40 and 80 units of 106 hm3; the
minimum level at 20% and the initial storage at 60% of it, as in the default), and for the
chain fitted with pseudocount 0 (the default) and 1 (add-one): the Markov SDP and the
independent-inflow SDP replay the held-out windows (2005-10 to 2024-09), each scored against
foresight (random 0, foresight 1), with the block-bootstrap interval of
:mod:`reservoir_dqn.evaluation.reoperation`; and the difference Markov - independent with its interval.
Writes ``bench/results/held_out.{json,md}``.
"""

from __future__ import annotations

import numpy as np

from bench.common import REPO, RESULTS, machine, write_results
from reservoir_dqn.commands.recipe import overrides
from reservoir_dqn.config import load_config
from reservoir_dqn.envs import profile
from reservoir_dqn.evaluation.reoperation import (
    bootstrap_weights,
    pooled,
    replay_baselines,
    water_years,
)

CAPACITIES = (10, 20, 40, 80)  # units of 106 hm3: a hundredth of the mean annual flow each
PSEUDOCOUNTS = (0.0, 1.0)


def measure(capacity: int, pseudocount: float) -> dict[str, float]:
    sets = [
        *overrides("reservoir-delaware", REPO / "recipes"),
        f"env.reservoir.capacity={capacity}",
        f"env.reservoir.min_storage={round(0.2 * capacity)}",
        f"env.reservoir.initial_storage={round(0.6 * capacity)}",
        f"env.reservoir.record.pseudocount={pseudocount}",
    ]
    config = load_config(REPO / "params.yaml", sets).env
    record = profile(config).held_out(config)
    assert record is not None
    played = replay_baselines(record)
    weights = bootstrap_weights(water_years(record.first_years, record.horizon)[1])
    random, bound = played["random"], played["foresight"]
    markov, independent = (pooled(played[name], random, bound, weights) for name in ("sdp", "sdp_independent"))
    total = {name: (weights * values).sum(axis=(1, 2)) for name, values in played.items()}
    span = total["foresight"] - total["random"]
    differences = (total["sdp"] - total["sdp_independent"]) / span
    low, high = np.percentile(differences, [2.5, 97.5])
    return {
        "markov": markov.score,
        "markov_lo": markov.low,
        "markov_hi": markov.high,
        "independent": independent.score,
        "independent_lo": independent.low,
        "independent_hi": independent.high,
        "difference": markov.score - independent.score,
        "difference_lo": float(low),
        "difference_hi": float(high),
        "sop": pooled(played["sop"], random, bound, weights).score,
    }


def main() -> None:
    rows = {
        f"{capacity}/{pseudocount:g}": measure(capacity, pseudocount)
        for capacity in CAPACITIES
        for pseudocount in PSEUDOCOUNTS
    }
    data = {"machine": machine(), "rows": rows}
    write_results("held_out", data)
    lines = [
        "# What persistence is worth on the held-out record, by size",
        "",
        f"Measured with `.venv/bin/python -m bench.held_out` on {data['machine']['date']}. The recipe "
        "`reservoir-delaware` (Delaware at Trenton, chain fitted on 1945-2004), its active storage varied; "
        "the 10 held-out windows of 120 months starting each October from 2005 (2005-10 to 2024-09). "
        "Scores: random 0, perfect foresight 1, pooled over the windows; intervals: 95% moving-block "
        "bootstrap over water years (blocks of 3, 2,000 resamples).",
        "",
        "| active storage (share of a mean year) | pseudocount | Markov SDP | independent-inflow SDP "
        "| Markov - independent | SOP |",
        "|---|---|---|---|---|---|",
    ]
    for key, row in rows.items():
        capacity, pseudocount = key.split("/")
        lines.append(
            f"| {int(capacity)}% ({int(capacity) * 106:,} hm3) | {pseudocount} "
            f"| {row['markov']:.3f} [{row['markov_lo']:.3f}, {row['markov_hi']:.3f}] "
            f"| {row['independent']:.3f} [{row['independent_lo']:.3f}, {row['independent_hi']:.3f}] "
            f"| {row['difference']:+.3f} [{row['difference_lo']:+.3f}, {row['difference_hi']:+.3f}] "
            f"| {row['sop']:.3f} |"
        )
    text = "\n".join(lines) + "\n"
    (RESULTS / "held_out.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
