"""The environments' recipes, 5 seeds each: test returns, frames and time to the threshold, rl-zoo3 beside them.

Usage (from the repository root; about 8 minutes on 2 cores)::

    .venv/bin/python -m bench.recipes                       # Acrobot-v1 and MountainCar-v0
    .venv/bin/python -m bench.recipes --recipes Acrobot-v1

Each recipe (``recipes/<id>.yaml``) is trained and evaluated as a user runs the stages
(tracking off). Writes ``bench/results/recipes.{json,md}``. The rl-zoo3 column is the
published DQN figure of ``benchmark.md`` in DLR-RM/rl-baselines3-zoo (commit 02a1a90): one
run, evaluated over about 150,000 steps; context, not a like-for-like comparison.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.common import QUIET, REPO, RESULTS, machine, run_pipeline, write_results
from reservoir_dqn.commands.recipe import overrides

# rl-zoo3 benchmark.md (DLR-RM/rl-baselines3-zoo @ 02a1a9014660): DQN, mean_reward +- std_reward, n_timesteps.
ZOO = {
    "Acrobot-v1": {"mean": -76.639, "std": 11.752, "timesteps": 100_000},
    "MountainCar-v0": {"mean": -100.849, "std": 9.925, "timesteps": 120_000},
    "CartPole-v1": {"mean": 500.0, "std": 0.0, "timesteps": 50_000},
}
DEFAULT = ("Acrobot-v1", "MountainCar-v0")


def recipe(name: str) -> dict[str, Any]:
    """Train and evaluate one recipe; per seed, its final and best test returns and when validation first solved it."""
    run = run_pipeline([*QUIET, *overrides(name, REPO / "recipes")])
    train, evaluation = run.train, run.eval
    assert evaluation is not None
    threshold = train["solved_return"]
    final = evaluation["dqn"]["final"]["return"]
    best = evaluation["dqn"]["best"]["return"]
    return {
        "threshold": threshold,
        "frames_per_agent": train["frames"],
        "process_s": round(run.wall_s, 1),
        "train_s": train["train_time_s"],
        "validation_s": train["validation_time_s"],
        "frames_per_second": train["frames_per_second"],
        "final": {"per_seed": final["per_seed"], "mean": final["mean"], "ci": [final["ci_low"], final["ci_high"]]},
        "best": {"per_seed": best["per_seed"], "mean": best["mean"], "ci": [best["ci_low"], best["ci_high"]]},
        "final_solved_seeds": int(sum(value >= threshold for value in final["per_seed"])),
        "solved_at_frames": [agent["solved_at_frames"] for agent in train["agents"]],
        "solved_after_seconds": [agent["solved_after_seconds"] for agent in train["agents"]],
        "random_return": evaluation["score_reference"]["random_return"],
        "zoo": ZOO.get(name),
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Recipes: 5 seeds each",
        "",
        f"Measured on {results['machine']['cpu']} ({results['machine']['cores']} cores) with "
        "`.venv/bin/python -m bench.recipes` (a row per recipe, on the date it was last measured); one run of each "
        "recipe (5 agents), tracking off.",
        "Test returns over the evaluation stage's 100 episodes per agent; intervals are 95% Student-t over seeds.",
        "rl-zoo3: its published DQN figure (benchmark.md, one run; context, not like-for-like).",
        "",
        "| recipe | measured | frames per agent | final networks: mean [95% CI] | final, per seed | solved (final) "
        "| best snapshots: mean | validation first at threshold: frames (s) | train process s | rl-zoo3 DQN |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["recipes"].items():
        final, best, zoo = row["final"], row["best"], row["zoo"]
        solved = ", ".join(
            "never" if frames is None else f"{frames:,} ({seconds:.0f})"
            for frames, seconds in zip(row["solved_at_frames"], row["solved_after_seconds"], strict=True)
        )
        zoo_text = f"{zoo['mean']:.1f} +- {zoo['std']:.1f} ({zoo['timesteps']:,} steps)" if zoo else "-"
        lines.append(
            f"| {name} (threshold {row['threshold']:g}) | {row.get('date', '-')} | {row['frames_per_agent']:,} "
            f"| {final['mean']:.1f} [{final['ci'][0]:.1f}, {final['ci'][1]:.1f}] "
            f"| {', '.join(f'{value:.1f}' for value in final['per_seed'])} "
            f"| {row['final_solved_seeds']} of {len(final['per_seed'])} | {best['mean']:.1f} | {solved} "
            f"| {row['process_s']:.0f} | {zoo_text} |"
        )
    lines += [
        "",
        "Frames per second (all agents, training loop): "
        + ", ".join(f"{name} {row['frames_per_second']:,.0f}" for name, row in results["recipes"].items())
        + ". Seconds to the threshold count training and validation time.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(DEFAULT), help="comma-separated recipe names")
    args = parser.parse_args()
    path = RESULTS / "recipes.json"
    earlier: dict[str, Any] = {}  # rows of recipes not re-run stay, with the date they were measured
    if path.exists():
        previous = json.loads(path.read_text())
        earlier = {name: {"date": previous["machine"]["date"], **row} for name, row in previous["recipes"].items()}
    results: dict[str, Any] = {"machine": machine(), "recipes": dict(earlier)}
    for name in args.recipes.split(","):
        print(f"{name} ...", flush=True)
        results["recipes"][name] = {"date": time.strftime("%Y-%m-%d %H:%M"), **recipe(name)}
        print(json.dumps(results["recipes"][name]), flush=True)
    write_results("recipes", results)
    (RESULTS / "recipes.md").write_text(markdown(results))
    print(f"wrote {RESULTS / 'recipes.md'}")


if __name__ == "__main__":
    main()
