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

The agents against the SDP on the held-out record, per river, size and training source
(about 3 minutes a run on 2 cores; 32 runs, two at a time, about 55 minutes)::

    .venv/bin/python -m bench.held_out agents --jobs 2
    .venv/bin/python -m bench.held_out agents --cases delaware-10 --scenarios chain,bootstrap
    .venv/bin/python -m bench.held_out agents --cases delaware-10 --scenarios chain --sets dqn.double_dqn=true \
        --label double

Each case (:data:`CASES`: the Delaware recipe at 40% of a mean year's flow, at 10% and at 80%
(storage that carries water over years), Flat Brook with its drought of record held out, and the
recipe with ``observe_last_flow``: the agent also sees last month's actual inflow; and the small
reservoir trained until its agents converge; and the recipe and the small reservoir with 1990-2004 held out
instead, a validation set of real years that never touches 2005-2024; and the two with those years as the train
stage's validation years, ``record.validation``, so that training itself validates on them) is
trained with the recipe's settings (5 seeds, 150,000 frames each, tracking off) on each source of
episodes (``env.reservoir.scenarios``: chain, record, bootstrap, mixture) and evaluated as a user runs
the stages. Per run: the final networks' and best snapshots' scores on the chain's test scenarios
per seed, DQN over the Markov SDP on the held-out record with its block-bootstrap interval, each
seed's held-out score over the SDP's, and each agent's convergence frame. Writes
``bench/results/held_out_agents.{json,md}`` after every run, so an interrupted sweep keeps what it
measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from bench.common import FLATBROOK, QUIET, REPO, RESULTS, machine, run_pipeline, write_results
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


def baselines() -> None:
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


CASES = {
    "delaware-40": [],  # the recipe: 40 units of 106 hm3, 40% of a mean year's flow
    "delaware-10": ["env.reservoir.capacity=10", "env.reservoir.min_storage=2", "env.reservoir.initial_storage=6"],
    "delaware-80": ["env.reservoir.capacity=80", "env.reservoir.min_storage=16", "env.reservoir.initial_storage=48"],
    "flatbrook-1961": FLATBROOK,  # a hundredth of the Delaware, sized by record add, its drought of record held out
    "delaware-40+flow": ["env.reservoir.observe_last_flow=true"],  # the recipe, the agent seeing last month's flow
    # Validation on real years: the last fifteen fitting years (1990-2004) held out instead of 2005-2024, which
    # stay untouched, so that a choice made on these rows never sees the held-out years.
    "delaware-40-validation": ["env.reservoir.record.held_out=[1990,2004]"],
    "delaware-10-validation": [
        "env.reservoir.capacity=10",
        "env.reservoir.min_storage=2",
        "env.reservoir.initial_storage=6",
        "env.reservoir.record.held_out=[1990,2004]",
    ],
    # Validation years in the train stage (record.validation): 1990-10 to 2004-09 kept out of the fit and the
    # training episodes, and training validates on their five windows (its best snapshots, convergence); the
    # held-out years stay 2005-2024.
    "delaware-40+validation-years": ["env.reservoir.record.validation=[1990,2003]"],
    "delaware-10+validation-years": [
        "env.reservoir.capacity=10",
        "env.reservoir.min_storage=2",
        "env.reservoir.initial_storage=6",
        "env.reservoir.record.validation=[1990,2003]",
    ],
    # The small reservoir trained until every agent has converged, 450,000 frames at most.
    "delaware-10+converged": [
        "env.reservoir.capacity=10",
        "env.reservoir.min_storage=2",
        "env.reservoir.initial_storage=6",
        "train.until_converged=true",
        "train.total_frames=450000",
    ],
}
SCENARIOS = ("chain", "record", "bootstrap", "mixture")
AGENTS = RESULTS / "held_out_agents.json"


def agents_run(case: str, scenarios: str, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Train and evaluate one case on one source of episodes (and ``extra`` settings); what the table shows of it."""
    sets = [
        *QUIET,
        *overrides("reservoir-delaware", REPO / "recipes"),
        *CASES[case],
        f"env.reservoir.scenarios={scenarios}",
        *extra,
    ]
    run = run_pipeline(sets)
    evaluation, train = run.eval, run.train
    assert evaluation is not None and evaluation.get("held_out") is not None
    held = evaluation["held_out"]
    sdp = held["baselines"]["sdp"]["score"]
    return {
        "sets": sets,
        "process_s": round(run.wall_s, 1),
        "test": {kind: evaluation["dqn"][kind]["score"]["per_seed"] for kind in ("final", "best")},
        "held_out": {kind: held["dqn_per_seed"][kind]["per_seed"] for kind in ("final", "best")},
        "over_sdp": {kind: held["dqn_over_sdp"][kind] for kind in ("final", "best")},
        "sdp": sdp,
        "windows": [held["windows"][0], held["windows"][-1]],
        "converged_at_frames": [agent.get("converged_at_frames") for agent in train["agents"]],
        "validation": {
            "final": [agent["final_validation_score"] for agent in train["agents"]],
            "best": [agent["best_validation_score"] for agent in train["agents"]],
        },
        "stopped_at_frames": [agent.get("stopped_at_frames") for agent in train["agents"]],
        "frames": train["frames"],
    }


def learning_rate(sets: Sequence[str]) -> str:
    """How a run's learning rate moved, from its settings (the last ``dqn.lr_end_factor`` wins, as in ``-S``)."""
    ends = [float(value.split("=", 1)[1]) for value in sets if value.startswith("dqn.lr_end_factor=")]
    end = ends[-1] if ends else 1.0
    return "constant" if end == 1.0 else f"decays to {end:.3g} of it"


def agents_markdown(data: dict[str, Any]) -> str:
    lines = [
        "# The agents against the Markov SDP on the held-out record",
        "",
        "Measured with `.venv/bin/python -m bench.held_out agents --jobs 2` (rows added later with its `--cases` and "
        f"`--scenarios`; the last run on {data['machine']['date']}) "
        f"({data['machine']['cpu']}, {data['machine']['cores']} cores). Each row: the recipe `reservoir-delaware`'s "
        "settings (5 seeds, 150,000 frames each) with the case's, the source's and (for a name with a `+label` of "
        "`--sets`) the variant's settings, trained and evaluated as a user runs the stages, tracking off; "
        "`delaware-10+converged` trains until its agents converge, 450,000 frames at most. Each row's settings are "
        "its `sets` in the JSON: the recipe as it was when the row was measured (a rerun replaces the row). Until "
        "commit e09ce85 the recipe's learning rate was constant (the default DQN); since, it decays to a tenth over "
        "the run: the column **learning rate** reads it from each row's `sets`.",
        "",
        "- **test, final / best**: the final networks' and best snapshots' scores on the chain's 100 test scenarios "
        "(0 random, 1 the SDP optimum): min and median over seeds (goal: min >= 0.95, median >= 0.98);",
        "- **held-out / SDP**: the final networks' held-out score (mean of seeds) over the Markov SDP's, with its 95% "
        "moving-block bootstrap interval over water years (goal: mean >= 0.97, lower end >= 0.95); **seeds over "
        "SDP**: how many seeds' held-out scores exceed the SDP's;",
        "- **validation**: the final networks' last validation scores during training: on episodes of the training "
        "source (validation seeds), or, in a `+validation-years` case, on the record's windows of 1990-10 to 2004-09 "
        "(`record.validation`, kept out of the fit and the training episodes; 1 = the Markov SDP there);",
        "- **converged**: agents whose validation plateaued (`train.plateau_*`), with the frames of the plateau's "
        "best.",
        "",
        "| case | learns from | learning rate | validation final: median | test final: min / median "
        "| test best: min / median | held-out / SDP, final | held-out / SDP, best | seeds over SDP "
        "| Markov SDP held-out | converged (frames) | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in data["runs"].items():
        case, scenarios = key.split("/")
        final, best = row["test"]["final"], row["test"]["best"]
        over = row["over_sdp"]
        converged = [frames for frames in row["converged_at_frames"] if frames is not None]
        frames = ", ".join(f"{value // 1000}k" for value in converged) or "-"
        over_seeds = sum(score > row["sdp"] for score in row["held_out"]["final"])
        validation = row.get("validation")  # rows measured before it was kept have none
        validated = f"{statistics.median(validation['final']):.3f}" if validation else "-"
        lines.append(
            f"| {case} | {scenarios} | {learning_rate(row['sets'])} | {validated} "
            f"| {min(final):.3f} / {statistics.median(final):.3f} "
            f"| {min(best):.3f} / {statistics.median(best):.3f} "
            f"| {over['final']['ratio']:.3f} [{over['final']['low']:.3f}, {over['final']['high']:.3f}] "
            f"| {over['best']['ratio']:.3f} [{over['best']['low']:.3f}, {over['best']['high']:.3f}] "
            f"| {over_seeds} of {len(row['held_out']['final'])} | {row['sdp']:.3f} "
            f"| {len(converged)} of {len(row['converged_at_frames'])} ({frames}) | {row['process_s']:.0f} |"
        )
    lines += ["", "Held-out windows: " + "; ".join(
        f"{case} {windows[0]} to {windows[1]} (first starts)"
        for case, windows in {key.split("/")[0]: row["windows"] for key, row in data["runs"].items()}.items()
    ) + "."]  # fmt: skip
    return "\n".join(lines) + "\n"


def agents(cases: list[str], scenarios: list[str], jobs: int, extra: Sequence[str] = (), label: str = "") -> None:
    data = json.loads(AGENTS.read_text()) if AGENTS.exists() else {"runs": {}}
    data["machine"] = machine()
    pairs = [(case, source) for case in cases for source in scenarios]
    writing = threading.Lock()

    def one(pair: tuple[str, str]) -> None:
        print(f"{pair[0]} / {pair[1]} ...", flush=True)
        result = agents_run(*pair, extra)
        with writing:  # one run's results at a time
            data["runs"][f"{pair[0]}{label and '+' + label}/{pair[1]}"] = result
            write_results("held_out_agents", data)
            (RESULTS / "held_out_agents.md").write_text(agents_markdown(data))
        print(f"{pair[0]} / {pair[1]}: {json.dumps(result['over_sdp']['final'])}", flush=True)

    with ThreadPoolExecutor(jobs) as pool:  # each run is its own processes; one torch thread each
        list(pool.map(one, pairs))
    print((RESULTS / "held_out_agents.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    runs = commands.add_parser("agents", help="train and evaluate the agents per case and source of episodes")
    runs.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    runs.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated sources of episodes")
    runs.add_argument("--jobs", type=int, default=1, help="runs at a time (each trains on one core)")
    runs.add_argument("--sets", nargs="*", default=[], help="more KEY=VALUE settings for every run (with --label)")
    runs.add_argument("--label", default="", help="appended to each case's name in the table, for --sets")
    args = parser.parse_args()
    if args.command == "agents":
        if args.sets and not args.label:
            parser.error("--sets needs a --label to name its rows")
        agents(args.cases.split(","), args.scenarios.split(","), args.jobs, args.sets, args.label)
    else:
        baselines()


if __name__ == "__main__":
    main()
