"""Gymnasium's synchronous against its asynchronous vector env: frames per second of random steps.

Usage (from the repository root; about a minute)::

    .venv/bin/python -m bench.vector_env

The pipeline steps every agent's copies together (5 agents x 10 copies = 50 by default). This
measures raw environment throughput for that batch, as the collector drives it (TorchRL's
``GymWrapper`` over the vector env, random actions), for both of Gymnasium's vector envs.
Medians of 3 repeats; writes ``bench/results/vector_env.{json,md}``.
"""

from __future__ import annotations

import statistics
import time
from functools import partial
from typing import Any

import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from torchrl.envs import GymWrapper

from bench.common import RESULTS, machine, write_results

IDS = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0")
COPIES = 50
STEPS = 400
REPEATS = 3


def frames_per_second(env_id: str, kind: type[SyncVectorEnv] | type[AsyncVectorEnv]) -> float:
    makers = [partial(gym.make, env_id, disable_env_checker=True) for _ in range(COPIES)]
    # Workers are forked: spawned ones would each import this process's libraries (about 300 MB apiece).
    extra: dict[str, Any] = {"context": "fork"} if kind is AsyncVectorEnv else {}
    vector_env = kind(makers, autoreset_mode=AutoresetMode.DISABLED, **extra)
    env = GymWrapper(vector_env, categorical_action_encoding=True)
    try:
        carrier = env.reset()
        started = time.perf_counter()
        for _ in range(STEPS):
            _, carrier = env.step_and_maybe_reset(env.rand_action(carrier))
        return COPIES * STEPS / (time.perf_counter() - started)
    finally:
        env.close()


def main() -> None:
    results: dict[str, Any] = {"machine": machine(), "copies": COPIES, "steps": STEPS, "ids": {}}
    for env_id in IDS:
        row = {}
        for name, kind in (("sync", SyncVectorEnv), ("async", AsyncVectorEnv)):
            runs = [frames_per_second(env_id, kind) for _ in range(REPEATS)]
            row[name] = {"median": statistics.median(runs), "min": min(runs), "max": max(runs)}
        results["ids"][env_id] = row
        print(env_id, {name: round(value["median"]) for name, value in row.items()}, flush=True)
    write_results("vector_env", results)
    lines = [
        "# Gymnasium vector envs: frames per second of random steps",
        "",
        f"{COPIES} copies (5 agents x 10), {STEPS} steps, median [range] of {REPEATS} runs; "
        f"{results['machine']['cores']} cores; `.venv/bin/python -m bench.vector_env`.",
        "",
        "| id | SyncVectorEnv | AsyncVectorEnv (a forked process per copy) | sync / async |",
        "|---|---|---|---|",
    ]
    for env_id, row in results["ids"].items():
        sync, asynchronous = row["sync"], row["async"]
        lines.append(
            f"| {env_id} | {sync['median']:,.0f} [{sync['min']:,.0f}-{sync['max']:,.0f}] "
            f"| {asynchronous['median']:,.0f} [{asynchronous['min']:,.0f}-{asynchronous['max']:,.0f}] "
            f"| {sync['median'] / asynchronous['median']:.1f}x |"
        )
    (RESULTS / "vector_env.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'vector_env.md'}")


if __name__ == "__main__":
    main()
