"""Agents trained for several weightings of energy against supply, scored against the exact front (issue 43).

Usage (from the repository root; about 8 minutes on 2 cores with the defaults)::

    .venv/bin/python -m bench.front_sweep [--lams 0.2 0.35 0.5 0.65 0.8] [--frames N --name NAME]

For each ``lam``, the train stage of the default params with the reward of the front's
scalarisation at ``lam`` (``weight_energy`` x ``2 lam``, ``weight_deficit`` x ``2 (1 - lam)``;
``lam = 0.5`` is the default reward), 5 agents, tracking off, in a scratch project: what a DVC
queue sweep over the two weights trains (``docs/how-to/trade-offs.md``). Then, on the default
reservoir's exact front (:mod:`reservoir_dqn.envs.reservoir.front`): each agent's exact point, its
utility loss at its own ``lam``, and, seed ``i``'s set being agent ``i`` of every ``lam``, the
set's expected and largest utility loss over ``lam`` uniform on [0, 1] and its hypervolume as a
share of the front's, with 95% t intervals over the seeds (``reservoir-dqn front --models``
computes the same). Writes ``bench/results/front_sweep.{json,md,png}`` (``--name``: another name, for
a sweep at another budget beside the default's: ``bench.morl_peer`` compares its peer with both).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import QUIET, REPO, RESULTS, machine, write_results
from reservoir_dqn.config import load_config
from reservoir_dqn.envs.reservoir.front import utility
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.profile import reservoir_settings
from reservoir_dqn.evaluation.statistics import Summary, summarize

DEFAULT_LAMS = (0.2, 0.35, 0.5, 0.65, 0.8)


def weights(lam: float) -> list[str]:
    reservoir = reservoir_settings(load_config(REPO / "params.yaml").env)
    return [
        f"env.reservoir.weight_energy={2 * lam * reservoir.weight_energy:.6g}",
        f"env.reservoir.weight_deficit={2 * (1 - lam) * reservoir.weight_deficit:.6g}",
    ]


def train(folder: Path, lam: float, extra: list[str]) -> float:
    """The train stage at ``lam`` in ``folder``; its wall seconds."""
    folder.mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", folder / "params.yaml")
    sets = [argument for value in [*QUIET, *weights(lam), *extra] for argument in ("--set", value)]
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "reservoir_dqn.commands.cli", "train", *sets],
        cwd=folder,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def markdown(results: dict[str, Any]) -> str:
    sets = results["sets"]

    def spread(name: str, digits: int = 1) -> str:
        return Summary.from_dict(sets[name]).text(digits)

    lines = [
        "# Agents for several weightings, against the exact front",
        "",
        f"Measured on {results['machine']['date']} with `.venv/bin/python -m bench.front_sweep{results['options']}` "
        "(2 cores): 5 agents "
        f"a weighting, {results['frames']:,} frames each, the front's scalarisation at each `lam` as "
        "the reward; the default reservoir's exact front: "
        f"{results['front']['vertices']} corners, certificate {results['front']['certificate_share']:.1e} of the "
        "configured optimum's utility. Points are the final networks' exact expectations; intervals are 95% t "
        "intervals over the 5 seeds.",
        "",
        "| lam | training (s) | energy, GWh a year | deficit, hm3 a year | spill, hm3 a year "
        "| utility loss at its own lam (share of the configured optimum's utility) |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["lams"]:
        lines.append(
            f"| {row['lam']} | {row['train_s']:.0f} | {row['energy']} | {row['deficit']} | {row['spill']} "
            f"| {row['own_loss_share']} |"
        )
    lines += [
        "",
        f"Seed i's set (agent i of each of the {sets['members']} weightings), against the front:",
        "",
        "| score | mean [95% CI] over the 5 seeds |",
        "|---|---|",
        f"| expected utility loss over lam uniform on [0, 1] (reward units) | {spread('expected_utility_loss')} |",
        f"| largest utility loss over lam (reward units) | {spread('maximum_utility_loss')} |",
        f"| hypervolume, share of the front's (energy against deficit) | {spread('hypervolume_ratio', 3)} |",
        "",
        f"For scale: the configured optimum's utility is {results['front']['configured_utility']:.0f} reward units.",
        "",
        f"![The sweep's agents on the exact front]({results['name']}.png)",
    ]
    return "\n".join(lines) + "\n"


def _interval_text(values: list[float], digits: int) -> str:
    """Mean [95% t interval], the interval stopped at 0: every figure here is a non-negative amount."""
    return summarize(values, low=0.0).text(digits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lams", type=float, nargs="+", default=list(DEFAULT_LAMS))
    parser.add_argument("--frames", type=int, help="frames per agent (default: params.yaml's; fewer for a quick look)")
    parser.add_argument("--name", default="front_sweep", help="the results' file name (default: %(default)s)")
    args = parser.parse_args()
    extra = [] if args.frames is None else [f"train.total_frames={args.frames}"]
    scratch = Path(tempfile.mkdtemp(prefix="front-sweep-"))
    try:
        folders = {lam: scratch / f"lam-{lam}" for lam in args.lams}
        seconds = {lam: train(folder, lam, extra) for lam, folder in folders.items()}
        models = [str(folder / "models/agents/final.pt") for folder in folders.values()]
        out, plot = scratch / "front.json", RESULTS / f"{args.name}.png"
        subprocess.run(
            [sys.executable, "-m", "reservoir_dqn.commands.cli", "front", "--params", str(REPO / "params.yaml"),
             "--models", *models, "--out", str(out), "--plot", str(plot)],
            cwd=scratch, check=True, capture_output=True,
        )  # fmt: skip
        front = json.loads(out.read_text())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    utility = front["configured_optimum"]["utility"]
    rows = []
    for lam, model in zip(args.lams, models, strict=True):
        agents = [agent for agent in front["agents"] if agent["model"] == model]
        own = _own_losses(lam, agents, front)
        rows.append({
            "lam": lam,
            "train_s": seconds[lam],
            "energy": _interval_text([a["energy_gwh_per_year"] for a in agents], 1),
            "deficit": _interval_text([a["deficit_hm3_per_year"] for a in agents], 2),
            "spill": _interval_text([a["spill_hm3_per_year"] for a in agents], 1),
            "own_loss_share": _interval_text([loss / utility for loss in own], 4),
            "agents": agents,
        })  # fmt: skip
    given = (
        ("lams", None if args.lams == list(DEFAULT_LAMS) else " ".join(f"{lam:g}" for lam in args.lams)),
        ("frames", args.frames),
        ("name", None if args.name == "front_sweep" else args.name),
    )
    options = "".join(f" --{option} {value}" for option, value in given if value is not None)  # the command, to repeat
    results = {
        "machine": machine(),
        "name": args.name,
        "options": options,
        "frames": args.frames or load_config(REPO / "params.yaml").train.total_frames,
        "front": {
            "vertices": len(front["vertices"]),
            "certificate_share": front["certificate_share"],
            "configured_utility": utility,
        },
        "lams": rows,
        "sets": front["sets"],
    }
    page = markdown(results)
    write_results(args.name, results)
    (RESULTS / f"{args.name}.md").write_text(page)
    print(page)


def _own_losses(lam: float, agents: list[dict[str, Any]], front: dict[str, Any]) -> list[float]:
    """Each agent's utility loss at ``lam``: the front's best there less the agent's, from the yearly figures."""
    model = ReservoirModel.from_config(reservoir_settings(load_config(REPO / "params.yaml").env))
    years, unit = model.config.horizon_months / 12, model.config.unit_hm3

    def at_lam(point: dict[str, Any]) -> float:
        flows = (point[f"{name}_hm3_per_year"] * years / unit for name in ("deficit", "spill", "violation"))
        return utility(model, (point["energy_gwh_per_year"] * years, *flows), lam)

    best = max(at_lam(vertex) for vertex in front["vertices"])
    return [best - at_lam(agent) for agent in agents]


if __name__ == "__main__":
    main()
