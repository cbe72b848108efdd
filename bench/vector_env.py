"""How fast the environments themselves step, with and without TorchRL, on one core and on two.

Usage (from the repository root; about two minutes)::

    .venv/bin/python -m bench.vector_env

The pipeline steps every agent's copies together (5 agents x 10 = 50 by default) as one
Gymnasium ``SyncVectorEnv`` behind TorchRL's ``GymWrapper``. This measures, for that batch of
random steps:

- ``gymnasium``: the ``SyncVectorEnv`` stepped directly with NumPy actions (finished copies reset
  through ``reset_mask``), no TorchRL: the environment's own cost, the floor of a one-process run;
- ``sync``: the same behind ``GymWrapper``, as the collector drives it (the pipeline's);
- ``async``: Gymnasium's ``AsyncVectorEnv``, a forked process per copy;
- ``parallel``: TorchRL's ``ParallelEnv`` of 2 forked workers, each a ``GymWrapper`` over a
  ``SyncVectorEnv`` of half the copies: what the second core could give the environment.

Torch runs the threads the pipeline trains with (``train.torch_threads``, one by default); the
kinds take turns within each repeat, so that the shared machine's drift falls on all of them.
Medians of 3 repeats. Random actions reset copies at other rates than a learning agent does (in 400 steps, no Acrobot
copy ends; CartPole's end every few dozen steps), so the rates are the environments' at random
play. Beside them, the seconds the recipes' 5 agents spend in the environment alone at the
``gymnasium``, ``sync`` and ``parallel`` rates, against SB3's whole single-agent run
(``bench/results/sb3.json``): how much of issue 44's gap the environment can explain. Writes
``bench/results/vector_env.{json,md}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from torchrl.envs import EnvBase, GymWrapper, ParallelEnv

from bench.common import RESULTS, machine, spread, write_results

IDS = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0")
AGENTS = 5
COPIES = 50
WORKERS = 2
STEPS = 400
REPEATS = 3
# Each id's whole-budget row of bench/results/sb3.md: SB3's single agent ran these frames.
SB3_ROWS = {
    "CartPole-v1": "CartPole-v1 (no early stop)",
    "Acrobot-v1": "Acrobot-v1",
    "MountainCar-v0": "MountainCar-v0",
}
KINDS = {
    "gymnasium": "SyncVectorEnv, no TorchRL",
    "sync": "GymWrapper(SyncVectorEnv) (the pipeline's)",
    "async": "GymWrapper(AsyncVectorEnv), a process per copy",
    "parallel": "ParallelEnv of {workers} workers, {share} copies each",
}


def _vector(env_id: str, copies: int, kind: type[SyncVectorEnv] | type[AsyncVectorEnv] = SyncVectorEnv) -> Any:
    makers = [partial(gym.make, env_id, disable_env_checker=True) for _ in range(copies)]
    # Workers are forked: spawned ones would each import this process's libraries (about 300 MB apiece).
    extra: dict[str, Any] = {"context": "fork"} if kind is AsyncVectorEnv else {}
    return kind(makers, autoreset_mode=AutoresetMode.DISABLED, **extra)


def _wrapped(env_id: str, copies: int, kind: type[SyncVectorEnv] | type[AsyncVectorEnv] = SyncVectorEnv) -> EnvBase:
    return GymWrapper(_vector(env_id, copies, kind), categorical_action_encoding=True)


def gymnasium_rate(env_id: str) -> float:
    """Frames per second of the vector env stepped directly: what the environment costs without TorchRL."""
    env = _vector(env_id, COPIES)
    actions = np.random.default_rng(0)
    try:
        env.reset(seed=0)
        started = time.perf_counter()
        for _ in range(STEPS):
            _, _, terminated, truncated, _ = env.step(actions.integers(env.single_action_space.n, size=COPIES))
            if (done := terminated | truncated).any():
                env.reset(options={"reset_mask": done})
        return COPIES * STEPS / (time.perf_counter() - started)
    finally:
        env.close()


def torchrl_rate(make: Callable[[], EnvBase]) -> float:
    """Frames per second of random steps through TorchRL, as the collector steps (``step_and_maybe_reset``)."""
    env = make()
    try:
        carrier = env.reset()
        started = time.perf_counter()
        for _ in range(STEPS):
            _, carrier = env.step_and_maybe_reset(env.rand_action(carrier))
        return COPIES * STEPS / (time.perf_counter() - started)
    finally:
        env.close()


def makers(env_id: str) -> dict[str, Callable[[], float]]:
    half = partial(_wrapped, env_id, COPIES // WORKERS)
    return {
        "gymnasium": partial(gymnasium_rate, env_id),
        "sync": partial(torchrl_rate, partial(_wrapped, env_id, COPIES)),
        "async": partial(torchrl_rate, partial(_wrapped, env_id, COPIES, AsyncVectorEnv)),
        "parallel": partial(torchrl_rate, partial(ParallelEnv, WORKERS, half, mp_start_method="fork")),
    }


def budgets() -> dict[str, dict[str, float]]:
    """Each id's frames per agent and SB3's whole single-agent seconds (medians), from ``bench.sb3``'s results."""
    recipes = json.loads((RESULTS / "sb3.json").read_text())["recipes"]
    return {
        env_id: {
            "frames_per_agent": recipes[row]["frames_per_agent"],
            "sb3_s": recipes[row]["sb3_s"]["median"],
            "sb3_date": recipes[row]["date"],
        }
        for env_id, row in SB3_ROWS.items()
    }


def report(results: dict[str, Any]) -> str:
    """The page: the rates, then the recipes' seconds in the environment beside SB3's whole run."""
    copies, workers, box = results["copies"], results["workers"], results["machine"]
    labels = [label.format(workers=workers, share=copies // workers) for label in KINDS.values()]
    lines = [
        "# The environments' own cost: frames per second of random steps",
        "",
        f"{copies} copies ({AGENTS} agents x {copies // AGENTS}), {results['steps']} steps, "
        f"median [range] of {results['repeats']} runs, {box['torch_threads']} torch thread"
        f"{'s' if box['torch_threads'] != 1 else ''}; {box['cores']} cores, "
        f"{box['date']}; `.venv/bin/python -m bench.vector_env`.",
        "",
        "| id | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(KINDS),
    ]
    for env_id, row in results["ids"].items():
        cells = [f"{row[kind]['median']:,.0f} [{row[kind]['min']:,.0f}-{row[kind]['max']:,.0f}]" for kind in KINDS]
        lines.append(f"| {env_id} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"What {AGENTS} agents' whole budget spends stepping the environment alone, at the medians above, against "
        "SB3's whole run of one agent (`bench/results/sb3.json`, its median, measured on the date given: the "
        "machine's speed moves from day to day, so read the last column as a scale, not a pair):",
        "",
        "| id | frames per agent | no TorchRL, one process (s) | the pipeline's wrapper (s) | "
        f"{workers} workers (s) | SB3's whole run (s), measured |",
        "|---|---|---|---|---|---|",
    ]
    for env_id, row in results["ids"].items():
        budget = results["budgets"][env_id]
        frames = AGENTS * budget["frames_per_agent"]
        seconds = [frames / row[kind]["median"] for kind in ("gymnasium", "sync", "parallel")]
        lines.append(
            f"| {env_id} | {budget['frames_per_agent']:,} | "
            + " | ".join(f"{value:.1f}" for value in seconds)
            + f" | {budget['sb3_s']:.1f}, {budget['sb3_date']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    results: dict[str, Any] = {
        "machine": machine(),
        "copies": COPIES,
        "steps": STEPS,
        "workers": WORKERS,
        "repeats": REPEATS,
        "budgets": budgets(),
        "ids": {},
    }
    torch.set_num_threads(results["machine"]["torch_threads"])  # training's (machine() reads it from params.yaml)
    for env_id in IDS:
        rates = makers(env_id)
        runs: dict[str, list[float]] = {kind: [] for kind in rates}
        for _ in range(REPEATS):
            for kind, rate in rates.items():
                runs[kind].append(rate())
        row = {kind: spread(values) for kind, values in runs.items()}
        results["ids"][env_id] = row
        print(env_id, {kind: round(value["median"]) for kind, value in row.items()}, flush=True)
    write_results("vector_env", results)
    (RESULTS / "vector_env.md").write_text(report(results))
    print(f"wrote {RESULTS / 'vector_env.md'}")


if __name__ == "__main__":
    main()
