"""Where a training's time goes: the whole ``reservoir-dqn train`` process split into its parts.

Usage (from the repository root; about 25 minutes on 2 cores with the defaults)::

    .venv/bin/python -m bench.breakdown [--repeats 3] [--cases reservoir cartpole acrobot] [--name breakdown]

Each case is the train stage run as a user runs it, in a fresh process in a scratch copy of
the parameters (tracking as params.yaml has it): the default reservoir (5 agents, 100,000
frames each), CartPole-v1's recipe over its whole 50,000 frames (no early stop) and
Acrobot-v1's recipe. Inside the process, the parts are timed by wrapping the functions that
do them (nothing else changes; a wrapper costs about a microsecond a call):

- *start-up and imports*: the process's wall time before the stage's ``main`` runs;
- *collection*: the exploring policy's forward pass (``collect.policy``) and the environment's
  steps with TorchRL's bookkeeping (``collect.env``: ``step_and_maybe_reset``);
- *replay*: writes of the collected transitions (``replay.write``) and samples (``replay.sample``);
- *update*: the loss's forward pass (``update.forward``), ``backward`` (``update.backward``),
  gradient clipping and the optimiser step (``update.optimiser``), the target and averaged
  weights (``update.targets``), and the rest of each update (``update.other``);
- *validation*, *checkpoints*, *logging* (the training curves' sinks: CSV, TensorBoard, MLflow);
- *loop, other*: the training loop's own bookkeeping (schedules, statistics, the progress bar);
- *set-up* (the session: environments, networks, buffer, the validation reference, a checkpoint's
  restore), *model files*, *tracking* (the store's connection, runs, artifacts);
- *stage, other*: the rest of the stage (parameters, the summary, the outputs' replacement).

Beside it, the update's achieved FLOP/s (multiply-adds x 2 of the loss's forward, its
backward at twice the forward and the optimiser, counted from the network's sizes) and what
this machine reaches on the same matrix sizes in a plain ``torch`` loop of stacked matrix
products, backward and fused Adam: the limit the update is measured against.
Writes ``bench/results/breakdown.{json,md}``; medians over ``--repeats`` processes per case.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import REPO, RESULTS, machine, write_results

CASES: dict[str, list[str]] = {
    "reservoir": [],
    "cartpole": ["recipe:CartPole-v1", "train.stop_at_validation_return=null"],
    "acrobot": ["recipe:Acrobot-v1"],
}
PARTS = (
    "start-up, imports and exit",
    "collect.policy",
    "collect.env",
    "replay.write",
    "replay.sample",
    "update.forward",
    "update.backward",
    "update.optimiser",
    "update.targets",
    "update.other",
    "validation",
    "checkpoints",
    "logging",
    "loop, other",
    "set-up",
    "model files",
    "tracking",
    "stage, other",
)


class Clock:
    """Exclusive time per part: a part's time excludes the parts timed inside it."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._inner: list[float] = []

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            inner = self._inner.pop()
            elapsed = time.perf_counter() - start
            self.total[name] += elapsed - inner
            self.calls[name] += 1
            if self._inner:
                self._inner[-1] += elapsed

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.part(name):
                return function(*args, **kwargs)

        return timed


def _patch(clock: Clock) -> None:
    """Wrap the functions that do each part (see the module's docstring)."""
    import torch
    from torchrl.data import TensorDictReplayBuffer
    from torchrl.envs import EnvBase

    from reservoir_dqn.agent import dqn
    from reservoir_dqn.commands import train as stage
    from reservoir_dqn.tracking import Tracking
    from reservoir_dqn.training import checkpoints, collection, loop, session

    collect = collection.Rollout.collect

    def collect_timed(self: collection.Rollout) -> Any:
        policy = self.policy
        self.policy = clock.wrap("collect.policy", policy)  # type: ignore[assignment]
        try:
            with clock.part("collect.env"):  # what is not the policy: the steps, and stacking them
                return collect(self)
        finally:
            self.policy = policy

    make_agent = session.make_agent

    def make_agent_timed(*args: Any, **kwargs: Any) -> dqn.Agent:
        agent = make_agent(*args, **kwargs)
        agent.optimizer.step = clock.wrap("update.optimiser", agent.optimizer.step)  # type: ignore[method-assign]
        agent.target_updater.step = clock.wrap("update.targets", agent.target_updater.step)  # type: ignore[method-assign]
        agent.compute_loss = clock.wrap("update.forward", agent.compute_loss)
        return agent

    collection.Rollout.collect = collect_timed  # type: ignore[method-assign]
    EnvBase.step_and_maybe_reset = clock.wrap("collect.env", EnvBase.step_and_maybe_reset)  # type: ignore[method-assign]
    dqn.TransitionWriter.write = clock.wrap("replay.write", dqn.TransitionWriter.write)  # type: ignore[method-assign]
    TensorDictReplayBuffer.sample = clock.wrap("replay.sample", TensorDictReplayBuffer.sample)  # type: ignore[method-assign]
    dqn.update = clock.wrap("update.other", dqn.update)
    dqn.clip_grad_norm_per_agent = clock.wrap("update.optimiser", dqn.clip_grad_norm_per_agent)
    dqn.average_weights = clock.wrap("update.targets", dqn.average_weights)
    torch.Tensor.backward = clock.wrap("update.backward", torch.Tensor.backward)  # type: ignore[method-assign]
    session.make_agent = make_agent_timed
    loop._validate = clock.wrap("validation", loop._validate)
    loop._emit = clock.wrap("logging", loop._emit)
    checkpoints.Checkpointer.save = clock.wrap("checkpoints", checkpoints.Checkpointer.save)  # type: ignore[method-assign]
    stage.train = clock.wrap("loop, other", stage.train)
    stage.start = clock.wrap("set-up", stage.start)
    stage.save_model = clock.wrap("model files", stage.save_model)
    stage.connect_tracking = clock.wrap("tracking", stage.connect_tracking)
    for method in ("start_training", "training_sinks", "publish", "tensorboard_dir"):
        setattr(Tracking, method, clock.wrap("tracking", getattr(Tracking, method)))


def child(case: str, started: float, extra: list[str]) -> None:
    """Run the train stage of ``case`` in this process, its parts timed; print them as JSON (``started``: the
    parent's clock when it started this process)."""
    import torch

    from reservoir_dqn.agent import load_model
    from reservoir_dqn.commands import train  # the heavy imports: torch, TorchRL, tensordict, MLflow
    from reservoir_dqn.config import load_config

    imported = time.time()
    clock = Clock()
    _patch(clock)
    with clock.part("stage, other"):
        status = train.main(_overrides(case, extra))
    summary = json.loads(Path("metrics/train.json").read_text())
    config = load_config(Path("params.yaml"), _overrides(case, extra)[1::2])
    network = load_model(Path("models/agents/final.pt"))[1]
    spec = {"obs_dim": network.obs_dim, "num_actions": network.num_actions, "hidden_sizes": network.hidden_sizes,
            "batch": config.dqn.batch_size, "agents": network.agents, "double_dqn": config.dqn.double_dqn,
            "threads": torch.get_num_threads()}  # fmt: skip
    print(json.dumps({"status": status, "imports": imported - started, "parts": dict(clock.total),
                      "calls": dict(clock.calls), "updates": summary["updates"], "frames": summary["frames"],
                      "seeds": summary["seeds"], "spec": spec}))  # fmt: skip


def _overrides(case: str, extra: list[str]) -> list[str]:
    from reservoir_dqn.commands.recipe import overrides

    sets: list[str] = []
    for item in CASES[case]:
        sets += overrides(item.removeprefix("recipe:"), REPO / "recipes") if item.startswith("recipe:") else [item]
    return [argument for value in [*sets, *extra] for argument in ("--set", value)]


def measure(case: str, extra: list[str]) -> dict[str, Any]:
    """One fresh train process of ``case`` in a scratch project: its parts (seconds) and its wall time."""
    with tempfile.TemporaryDirectory(prefix="breakdown-") as scratch:
        project = Path(scratch)
        shutil.copy(REPO / "params.yaml", project / "params.yaml")
        (project / "data").symlink_to(REPO / "data")
        env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
        start = time.time()
        code = f"import bench.breakdown as b; b.child({case!r}, {start!r}, {extra!r})"
        done = subprocess.run([sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True)
        wall = time.time() - start
    if done.returncode != 0:
        raise SystemExit(f"{case}: the train process failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    parts = dict(result["parts"])
    parts["start-up, imports and exit"] = wall - sum(parts.values())  # the rest of the process's wall time
    return {"wall": wall, "parts": parts, "calls": result["calls"], "updates": result["updates"],
            "frames": result["frames"], "seeds": result["seeds"], "spec": result["spec"]}  # fmt: skip


def update_flops(sizes: tuple[int, ...], batch: int, agents: int, double_dqn: bool) -> float:
    """The floating-point operations of one update of every agent (2 per multiply-add): the loss's forward passes
    (online on the batch, target on the next states, and online on them with double DQN) and the backward, at
    twice the online forward."""
    multiply_adds = sum(a * b for a, b in itertools.pairwise(sizes))
    forwards = 2 + int(double_dqn)
    return float(2 * multiply_adds * batch * (forwards + 2) * agents)


def plain_torch_flops(sizes: tuple[int, ...], batch: int, agents: int, threads: int, seconds: float = 3.0) -> float:
    """FLOP/s of this machine on the update's matrix sizes in a plain torch loop: stacked matrix products
    (``baddbmm``) through the same layers, forward three times and backward once (:func:`update_flops`'s count
    without double DQN), fused Adam, ``threads`` torch threads."""
    import torch

    torch.set_num_threads(threads)
    weights = [torch.randn(agents, a, b, requires_grad=True) for a, b in itertools.pairwise(sizes)]
    biases = [torch.zeros(agents, 1, b, requires_grad=True) for b in sizes[1:]]
    optimiser = torch.optim.Adam([*weights, *biases], fused=True)
    inputs = torch.randn(agents, batch, sizes[0])

    def forward(x: torch.Tensor) -> torch.Tensor:
        for index, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
            x = torch.baddbmm(bias, x, weight)
            x = torch.relu(x) if index < len(weights) - 1 else x
        return x

    def step() -> None:
        with torch.no_grad():
            forward(inputs)  # the target network's pass
        optimiser.zero_grad(set_to_none=True)
        forward(inputs).square().mean().backward()  # type: ignore[no-untyped-call]
        optimiser.step()

    for _ in range(20):
        step()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        count += 1
    return update_flops(sizes, batch, agents, False) * count / (time.perf_counter() - start)


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="added to every case")
    parser.add_argument("--name", default="breakdown", help="writes bench/results/NAME.{json,md}")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    for case in args.cases:
        runs = [measure(case, args.set) for _ in range(args.repeats)]
        first = runs[0]
        spec = first["spec"]
        sizes = (spec["obs_dim"], *spec["hidden_sizes"], spec["num_actions"])
        flops = update_flops(sizes, spec["batch"], spec["agents"], spec["double_dqn"])
        update_seconds = [sum(v for k, v in run["parts"].items() if k.startswith("update.")) for run in runs]
        achieved = [flops * run["updates"] / seconds for run, seconds in zip(runs, update_seconds, strict=True)]
        results[case] = {
            "walls": [run["wall"] for run in runs],
            "parts": {part: [run["parts"].get(part, 0.0) for run in runs] for part in PARTS},
            "updates": first["updates"],
            "frames": first["frames"],
            "seeds": first["seeds"],
            "sizes": sizes,
            "batch": spec["batch"],
            "threads": spec["threads"],
            "update_flop": flops,
            "achieved_flops": achieved,
            "plain_flops": plain_torch_flops(sizes, spec["batch"], spec["agents"], spec["threads"]),
        }
    command = ".venv/bin/python -m bench.breakdown " + " ".join(sys.argv[1:] if argv is None else argv)
    data = {"machine": machine(), "repeats": args.repeats, "cases": results, "command": command.strip()}
    write_results(args.name, data)
    text = report(data)
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)


def report(data: dict[str, Any]) -> str:
    lines = [
        "# Where a training's time goes",
        "",
        f"Measured with `{data.get('command', '.venv/bin/python -m bench.breakdown')}` on "
        f"{data['machine']['date']} ({data['machine']['cores']} cores): whole `reservoir-dqn train` "
        "processes, each part's exclusive time, median over the processes (seconds, and share of the wall time). "
        "See `bench/breakdown.py` for what each part holds.",
        "",
    ]
    cases = data["cases"]
    lines += ["| part | " + " | ".join(cases) + " |", "|---|" + "---|" * len(cases)]
    walls = {case: _median(result["walls"]) for case, result in cases.items()}
    for part in PARTS:
        cells = []
        for case, result in cases.items():
            seconds = _median(result["parts"][part])
            cells.append(f"{seconds:.1f} ({seconds / walls[case]:.0%})")
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    whole = [f"**{walls[case]:.1f}** [{min(r['walls']):.1f}-{max(r['walls']):.1f}]" for case, r in cases.items()]
    lines.append("| **whole process** | " + " | ".join(whole) + " |")
    lines += [
        "",
        "| case | agents x frames | updates | layers | batch | threads | update GFLOP/s | plain torch GFLOP/s "
        "| share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case, result in cases.items():
        achieved = _median(result["achieved_flops"])
        plain = result["plain_flops"]
        lines.append(
            f"| {case} | {result['seeds']} x {result['frames']:,} | {result['updates']:,} | "
            f"{' x '.join(str(size) for size in result['sizes'])} | {result['batch']} | {result['threads']} | "
            f"{achieved / 1e9:.2f} | {plain / 1e9:.2f} | {achieved / plain:.0%} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
