"""The agents' Q-networks three ways: our hand-stacked MLP, TorchRL's MultiAgentMLP, tensordict's from_modules + vmap.

Usage (from the repository root; about a minute on 2 cores)::

    .venv/bin/python -m bench.stacking

One update of the default agents as training does it, timed alone: 5 agents, 128x128 hidden,
batch 128 per agent, a forward pass, a squared loss, the backward pass and an Adam step, 1
torch thread (``train.torch_threads``). Also the greedy forward pass alone, as collection and
validation run it (no gradient, 50 observations per agent). Each way runs in a process of
its own, the three alternating, 5 rounds; each figure is the median over the rounds of a
round's mean over 300 steps. Writes ``bench/results/stacking.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.common import REPO, RESULTS, machine, spread, write_results

WAYS = ("stacked", "multiagent_mlp", "vmap")
AGENTS, OBS, ACTIONS, HIDDEN, BATCH, ACTING = 5, 4, 11, (128, 128), 128, 50
STEPS, WARMUP = 300, 30


def _build(way: str) -> tuple[Any, Callable[[Any], Any]]:
    """The agents' networks built ``way``, and a function from ``[agents, n, obs]`` to ``[agents, n, actions]``."""
    import torch

    if way == "stacked":
        from reservoir_dqn.agent.network import NetworkSpec, StackedMLP

        spec = NetworkSpec(OBS, ACTIONS, HIDDEN, "bench", agents=AGENTS)
        stacked = StackedMLP(spec)
        return stacked, lambda x: stacked(x.reshape(-1, OBS)).reshape(AGENTS, -1, ACTIONS)
    if way == "multiagent_mlp":
        from torchrl.modules import MultiAgentMLP

        network = MultiAgentMLP(
            OBS,
            ACTIONS,
            AGENTS,
            centralized=False,
            share_params=False,
            depth=len(HIDDEN),
            num_cells=list(HIDDEN),
            activation_class=torch.nn.ReLU,
        )
        return network, lambda x: network(x.transpose(0, 1)).transpose(0, 1)  # it takes [n, agents, obs]
    from tensordict import TensorDict

    mlps = [torch.nn.Sequential(torch.nn.Linear(OBS, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128),
                                torch.nn.ReLU(), torch.nn.Linear(128, ACTIONS)) for _ in range(AGENTS)]  # fmt: skip
    params = TensorDict.from_modules(*mlps, as_module=True)
    base = mlps[0].to("meta")

    def call(weights: TensorDict, x: torch.Tensor) -> torch.Tensor:
        with weights.to_module(base):
            return base(x)

    batched = torch.vmap(call, (0, 0))
    return params, lambda x: batched(params, x)


def measure(way: str) -> dict[str, float]:
    """Seconds per update step and per greedy forward pass of one way (the ``--way`` process)."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    module, forward = _build(way)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    x, target = torch.randn(AGENTS, BATCH, OBS), torch.randn(AGENTS, BATCH, ACTIONS)
    acting = torch.randn(AGENTS, ACTING, OBS)

    def update() -> None:
        loss = ((forward(x) - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def act() -> None:
        with torch.no_grad():
            forward(acting).argmax(-1)

    timings = {}
    for name, step in (("update_ms", update), ("act_ms", act)):
        for _ in range(WARMUP):
            step()
        started = time.perf_counter()
        for _ in range(STEPS):
            step()
        timings[name] = (time.perf_counter() - started) / STEPS * 1000
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.way:
        print(json.dumps(measure(args.way)))
        return
    rounds: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    for _ in range(args.rounds):
        for way in WAYS:
            out = subprocess.run(
                [sys.executable, "-m", "bench.stacking", "--way", way], cwd=REPO, capture_output=True, text=True,
                check=True,
            )  # fmt: skip
            rounds[way].append(json.loads(out.stdout.strip().splitlines()[-1]))
    results = {
        "machine": machine(),
        "rounds": args.rounds,
        "ways": {
            way: {key: spread([row[key] for row in rows]) for key in ("update_ms", "act_ms")}
            for way, rows in rounds.items()
        },
    }
    write_results("stacking", results)
    base = results["ways"]["stacked"]
    lines = [
        "# The agents' Q-networks: hand-stacked, TorchRL's MultiAgentMLP, from_modules + vmap",
        "",
        f"Measured on {results['machine']['cpu']} ({results['machine']['cores']} cores) with "
        f"`.venv/bin/python -m bench.stacking --rounds {args.rounds}`: {AGENTS} agents, hidden {HIDDEN}, "
        f"batch {BATCH} per agent, 1 torch thread; each way in its own process, alternating; milliseconds, "
        f"median [min-max] over the rounds of a round's mean over {STEPS} steps.",
        "",
        "| way | update (forward, loss, backward, Adam) | against stacked | greedy forward "
        f"({ACTING} observations per agent) | against stacked |",
        "|---|---|---|---|---|",
    ]
    for way, row in results["ways"].items():
        update, act = row["update_ms"], row["act_ms"]
        lines.append(
            f"| {way} | {update['median']:.3f} [{update['min']:.3f}-{update['max']:.3f}] "
            f"| {update['median'] / base['update_ms']['median']:.2f} "
            f"| {act['median']:.3f} [{act['min']:.3f}-{act['max']:.3f}] "
            f"| {act['median'] / base['act_ms']['median']:.2f} |"
        )
    (RESULTS / "stacking.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
