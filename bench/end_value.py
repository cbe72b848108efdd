"""What valuing the storage left at a window's end moves on the held-out record (``env.reservoir.end_value``).

Usage (from the repository root; seconds)::

    .venv/bin/python -m bench.end_value

For three record reservoirs, each with ``end_value: none`` (the default) and ``water_value``:
the exact baselines replaying the held-out windows (the Markov SDP, the independent-inflow
SDP, SOP, foresight and the exact random anchor, :func:`reservoir_dqn.evaluation.reoperation.replay_baselines`),
foresight's mean return per window, each score against it with the block-bootstrap interval,
and the SDP's expected return on the fitted chain. Writes ``bench/results/end_value.{json,md}``.
"""

from __future__ import annotations

from bench.common import FLATBROOK, REPO, RESULTS, machine, write_results
from reservoir_dqn.commands.recipe import overrides
from reservoir_dqn.config import load_config
from reservoir_dqn.envs import profile
from reservoir_dqn.envs.reservoir.baselines import reservoir_optimum
from reservoir_dqn.evaluation.reoperation import bootstrap_weights, pooled, replay_baselines, water_years

CASES = {
    "Delaware recipe, 10-year windows after 2004": [],
    "Delaware recipe, 2-year windows (horizon_months=24)": ["env.reservoir.horizon_months=24"],
    "Flat Brook, sized by record add, 1961-1972 held out": FLATBROOK,
}
POLICIES = ("sdp", "sdp_independent", "sop")


def measure(sets: list[str], end_value: str) -> dict[str, float]:
    config = load_config(
        REPO / "params.yaml",
        [*overrides("reservoir-delaware", REPO / "recipes"), *sets, f"env.reservoir.end_value={end_value}"],
    ).env
    record = profile(config).held_out(config)
    assert record is not None
    played = replay_baselines(record)
    weights = bootstrap_weights(water_years(record.first_years, record.horizon)[1])
    random, bound = played["random"], played["foresight"]
    row = {"foresight": float(bound.sum(axis=-1).mean()), "random": float(random.sum(axis=-1).mean())}
    for name in POLICIES:
        score = pooled(played[name], random, bound, weights)
        row |= {name: score.score, f"{name}_lo": score.low, f"{name}_hi": score.high}
    return row | {"sdp_expected": reservoir_optimum(config.reservoir).expected_return}


def main() -> None:
    rows = {case: {end: measure(sets, end) for end in ("none", "water_value")} for case, sets in CASES.items()}
    data = {"machine": machine(), "rows": rows}
    write_results("end_value", data)
    lines = [
        "# What the storage left at a window's end is worth",
        "",
        f"Measured with `.venv/bin/python -m bench.end_value` on {data['machine']['date']}: the held-out windows' "
        "exact baselines with `env.reservoir.end_value` none (the default) -> water_value. Scores: random 0, "
        "foresight 1, pooled over the windows, 95% moving-block bootstrap over water years.",
        "",
        "| case | foresight per window | Markov SDP | independent SDP | SOP | SDP expected return (chain) |",
        "|---|---|---|---|---|---|",
    ]
    for case, ends in rows.items():
        none, valued = ends["none"], ends["water_value"]
        change = valued["foresight"] / none["foresight"] - 1
        cells = [f"{none['foresight']:,.1f} -> {valued['foresight']:,.1f} ({change:+.1%})"]
        cells += [f"{none[name]:.3f} -> {valued[name]:.3f} [{valued[name + '_lo']:.3f}, {valued[name + '_hi']:.3f}]"
                  for name in POLICIES]  # fmt: skip
        cells.append(f"{none['sdp_expected']:,.1f} -> {valued['sdp_expected']:,.1f}")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "end_value.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
