"""Speed beside Stable-Baselines3: each recipe's 5-seed train process against SB3's DQN, one seed, same frames.

Usage (from the repository root; about 40 minutes on 2 cores with 3 pairs)::

    .venv/bin/python -m bench.sb3                                   # CartPole-v1, Acrobot-v1, MountainCar-v0
    .venv/bin/python -m bench.sb3 --recipes CartPole-v1 --pairs 3
    .venv/bin/python -m bench.sb3 --recipes Acrobot-v1 --sets 'dqn.hidden_sizes=[64,64]' --label 64x64

Ours: ``reservoir-dqn train`` with the recipe (``recipes/<id>.yaml``), tracking off, all 5
agents in one process, as :mod:`bench.recipes` runs it. SB3's: ``stable_baselines3.DQN``
with rl-zoo3's settings for the id (``hyperparams/dqn.yml`` of DLR-RM/rl-baselines3-zoo @
019107eb, in :data:`ZOO`), one agent, ``learn()`` for the recipe's frames per agent, in a
process of its own (``python -m bench.sb3 --sb3 ID FRAMES``), torch's default thread count.
rl-zoo3's exploration lasts ``exploration_fraction`` of *its* ``n_timesteps``; the fraction is
rescaled so that it lasts as many steps over the recipe's frames. The two processes alternate,
pair by pair, so that drift of the machine's speed falls on both; each figure is the median
over the pairs, with the ratio ours / SB3 taken pair by pair. ``--sets`` adds settings to our
runs (a variant of the recipe, its row named ``<recipe>+<label>``). Writes
``bench/results/sb3.{json,md}``. SB3 is a benchmark-only dependency (pinned in
requirements.lock).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import QUIET, REPO, RESULTS, machine, run_pipeline, spread, write_results
from reservoir_dqn.commands.recipe import overrides
from reservoir_dqn.config import load_config

# rl-zoo3 hyperparams/dqn.yml (DLR-RM/rl-baselines3-zoo @ 019107eb14187e85dd4cc72076390376662609b4).
CARTPOLE: dict[str, Any] = {
    "n_timesteps": 200_000,
    "learning_rate": 2.5e-4,
    "batch_size": 512,
    "buffer_size": 100_000,
    "learning_starts": 0,
    "gamma": 0.99,
    "target_update_interval": 5000,
    "train_freq": 16,
    "gradient_steps": 4,
    "exploration_fraction": 0.06,
    "exploration_final_eps": 0.11,
}
ZOO: dict[str, dict[str, Any]] = {
    "CartPole-v1": CARTPOLE,
    "Acrobot-v1": {**CARTPOLE, "n_timesteps": 150_000},  # the zoo tunes Acrobot as CartPole, for longer
    "MountainCar-v0": {
        "n_timesteps": 120_000,
        "learning_rate": 4e-3,
        "batch_size": 128,
        "buffer_size": 10_000,
        "learning_starts": 1000,
        "gamma": 0.98,
        "target_update_interval": 5000,
        "train_freq": 16,
        "gradient_steps": 8,
        "exploration_fraction": 0.2,
        "exploration_final_eps": 0.07,
        "policy_kwargs": {"net_arch": [256, 256]},
    },
}
EPISODES = 50  # greedy episodes that value SB3's final agent, as many as our validation's (train.eval_episodes)
EVAL_SEED = 1000  # their seeds: EVAL_SEED, EVAL_SEED + 1, ...
# Rows: the recipes, and CartPole's recipe without its early stop (every agent trains all 50,000 frames, as SB3 does).
FULL_BUDGET = " (no early stop)"
DEFAULT = ("CartPole-v1", f"CartPole-v1{FULL_BUDGET}", "Acrobot-v1", "MountainCar-v0")


def sb3_settings(env_id: str, frames: int) -> dict[str, Any]:
    """rl-zoo3's DQN settings for ``env_id``, its exploration lasting as many steps over ``frames`` as over its own."""
    settings = dict(ZOO[env_id])
    zoo_steps = settings.pop("n_timesteps")
    settings["exploration_fraction"] = min(1.0, settings["exploration_fraction"] * zoo_steps / frames)
    return settings


def train_sb3(env_id: str, frames: int, seed: int, model_path: str) -> None:
    """One SB3 DQN agent on ``env_id`` for ``frames`` steps, saved to ``model_path`` (the ``--sb3`` process)."""
    import gymnasium
    import torch
    from stable_baselines3 import DQN

    model = DQN("MlpPolicy", gymnasium.make(env_id), seed=seed, verbose=0, **sb3_settings(env_id, frames))
    model.learn(total_timesteps=frames)
    model.save(model_path)
    print(f"torch threads {torch.get_num_threads()}")


def greedy_return_sb3(env_id: str, model_path: str, episodes: int = EPISODES) -> None:
    """Print the mean return of a saved SB3 agent's greedy policy over ``episodes`` seeded episodes (``--sb3-eval``).

    Run after the timed process, so the timing holds training only, as ours holds its periodic validation.
    """
    import gymnasium
    from stable_baselines3 import DQN

    model, env = DQN.load(model_path), gymnasium.make(env_id)
    returns = []
    for episode in range(episodes):
        observation, _ = env.reset(seed=EVAL_SEED + episode)
        total, finished = 0.0, False
        while not finished:
            action, _ = model.predict(observation, deterministic=True)
            observation, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            finished = terminated or truncated
        returns.append(total)
    print(json.dumps({"greedy_return": sum(returns) / len(returns)}))


def sb3_process(env_id: str, frames: int, seed: int) -> tuple[float, float]:
    """Wall seconds of one ``--sb3`` process, start to exit, and its agent's final greedy return."""
    with tempfile.TemporaryDirectory(prefix="sb3-") as scratch:
        model_path = str(Path(scratch) / "model.zip")
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "bench.sb3", "--sb3", env_id, str(frames), str(seed), model_path],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - started
        evaluated = subprocess.run(
            [sys.executable, "-m", "bench.sb3", "--sb3-eval", env_id, model_path],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        )
    return wall, float(json.loads(evaluated.stdout.strip().splitlines()[-1])["greedy_return"])


def compare(row: str, pairs: int, extra: list[str] | None = None) -> dict[str, Any]:
    """``pairs`` alternating runs of our recipe (5 agents, with ``extra`` settings) and SB3 (1 agent) on the recipe's
    frames per agent."""
    env_id = row.removesuffix(FULL_BUDGET)
    recipe = overrides(env_id, REPO / "recipes") + (["train.stop_at_validation_return="] if row != env_id else [])
    recipe += extra or []
    frames = load_config(REPO / "params.yaml", recipe).train.total_frames  # the recipe's budget per agent
    ours, theirs, collected, our_returns, their_returns = [], [], [], [], []
    for pair in range(pairs):
        run = run_pipeline([*QUIET, *recipe, f"seed={pair}"], evaluate=False)
        collected.append(int(run.train["frames"]))  # fewer where the recipe stops early
        ours.append(run.wall_s)
        our_returns += [round(agent["final_validation_return"], 1) for agent in run.train["agents"]]
        wall, greedy = sb3_process(env_id, frames, seed=pair)
        theirs.append(wall)
        their_returns.append(round(greedy, 1))
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "frames_per_agent": frames,
        "ours_frames_collected": collected,
        "agents": 5,
        "ours_s": spread(ours),
        "sb3_s": spread(theirs),
        "ratio": spread([a / b for a, b in zip(ours, theirs, strict=True)]),
        "ours_runs_s": [round(value, 1) for value in ours],
        "ours_final_greedy_returns": our_returns,  # every agent of every run: its final network's validation return
        "sb3_final_greedy_returns": their_returns,  # each run's agent, over EPISODES seeded episodes
        "sb3_runs_s": [round(value, 1) for value in theirs],
        "sb3_settings": sb3_settings(env_id, frames),
        "ours_sets": extra or [],
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Speed beside Stable-Baselines3: our 5 agents against SB3's one",
        "",
        f"Measured on {results['machine']['cpu']} ({results['machine']['cores']} cores), on the dates of the rows, "
        f"with `.venv/bin/python -m bench.sb3 --pairs {results['pairs']}`: "
        "whole train processes, alternating ours and SB3's, medians [min-max] over the pairs; "
        "the ratio is taken pair by pair. Ours: the recipe, 5 agents, tracking off, 1 torch thread "
        f"(`train.torch_threads`); SB3 {results['sb3_version']}: `DQN` with rl-zoo3's settings, 1 agent, "
        "torch's default threads (2 here).",
        "",
        "| recipe | measured | frames per agent | ours: 5 agents (s) | SB3: 1 agent (s) | ours / SB3 "
        "| per run: ours; SB3 (s) | final greedy return: ours, every agent; SB3, every run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for env_id, row in results["recipes"].items():
        ours, theirs, ratio = row["ours_s"], row["sb3_s"], row["ratio"]
        lines.append(
            f"| {env_id} | {row['date']} | {row['frames_per_agent']:,} "
            f"| {ours['median']:.1f} [{ours['min']:.1f}-{ours['max']:.1f}] "
            f"| {theirs['median']:.1f} [{theirs['min']:.1f}-{theirs['max']:.1f}] "
            f"| {ratio['median']:.2f} [{ratio['min']:.2f}-{ratio['max']:.2f}] "
            f"| {', '.join(map(str, row['ours_runs_s']))}; {', '.join(map(str, row['sb3_runs_s']))} "
            f"| {_returns(row)} |"
        )
    lines += [
        "",
        "Frames per agent: the recipe's budget, which SB3 runs in full; CartPole's recipe stops each agent once its "
        "validation return reaches 475 (ours collected "
        + ", ".join(
            f"{frames:,}" for frames in results["recipes"].get("CartPole-v1", {}).get("ours_frames_collected", [])
        )
        + " frames per agent in its runs). Final greedy return: ours, each agent's final network over its last "
        "validation (the recipe's `train.eval_episodes` on the validation seeds, `metrics/train.json`); SB3's, each "
        f"run's final agent over {EPISODES} episodes seeded from {EVAL_SEED}, evaluated after the timed process. Run "
        "k of either trains with seed k.",
    ]
    variants = {name: row["ours_sets"] for name, row in results["recipes"].items() if row.get("ours_sets")}
    if variants:
        lines += ["", "Variants (`--sets`, added to our runs of the recipe as it was then):"]
        lines += [f"- {name}: `{' '.join(sets)}`" for name, sets in variants.items()]
    return "\n".join(lines) + "\n"


def _order(name: str) -> tuple[int, str]:
    """Rows in :data:`DEFAULT`'s order, each recipe's variants after it."""
    base = name.split("+")[0]
    return (DEFAULT.index(base) if base in DEFAULT else len(DEFAULT), name)


def _returns(row: dict[str, Any]) -> str:
    """The final networks' greedy returns: ours, median [min-max] over every agent; SB3's, each run's."""
    ours, theirs = row.get("ours_final_greedy_returns"), row.get("sb3_final_greedy_returns")
    if not ours or not theirs:
        return "not measured"
    return f"{statistics.median(ours):.1f} [{min(ours):.1f}-{max(ours):.1f}] over {len(ours)}; " + ", ".join(
        f"{value:.1f}" for value in theirs
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=list(DEFAULT), choices=list(DEFAULT))
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--sets", nargs="*", default=[], metavar="KEY=VALUE", help="added to our runs (a variant)")
    parser.add_argument("--label", default="", help="the variant's name: its rows are <recipe>+<label>")
    parser.add_argument("--sb3", nargs=4, metavar=("ID", "FRAMES", "SEED", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--sb3-eval", nargs=2, metavar=("ID", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sb3:
        train_sb3(args.sb3[0], int(args.sb3[1]), int(args.sb3[2]), args.sb3[3])
        return
    if args.sb3_eval:
        greedy_return_sb3(*args.sb3_eval)
        return
    import stable_baselines3

    path = RESULTS / "sb3.json"
    earlier: dict[str, Any] = {}  # rows of recipes not re-run stay, with the date they were measured
    if path.exists():
        previous = json.loads(path.read_text())
        earlier = {name: {"date": previous["machine"]["date"], **row} for name, row in previous["recipes"].items()}
    suffix = f"+{args.label}" if args.label else ""
    measured = {env_id + suffix: compare(env_id, args.pairs, args.sets) for env_id in args.recipes}
    results = {
        "machine": machine(),
        "pairs": args.pairs,
        "sb3_version": stable_baselines3.__version__,
        "recipes": {name: measured.get(name) or earlier[name] for name in sorted({*earlier, *measured}, key=_order)},
    }
    write_results("sb3", results)
    (RESULTS / "sb3.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
