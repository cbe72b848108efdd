"""The benchmark suite: seeds, learning, CartPole, the pipeline, tuning, the CI gate, throughput, tracking.

Usage (from the repository root; ``make bench`` runs all of it, about 40 minutes on 2 cores)::

    .venv/bin/python -m bench.run                         # every section
    .venv/bin/python -m bench.run --sections seeds,cartpole --repeats 3

Writes ``bench/results/benchmark.json`` (machine-readable, with the machine it ran on),
``bench/results/benchmark.md`` (the tables) and ``bench/results/seeds.png``; the ``gate``
section also writes the measured per-seed results the statistics tests draw from
(``tests/data/reservoir_seeds.json``). Every timing is a median over repeated runs with its
range; nothing here is a test.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import QUIET, REPO, RESULTS, machine, repeat, run_pipeline, spread, write_results
from bench.report import markdown
from reservoir_dqn.commands.recipe import overrides

CARTPOLE = overrides("CartPole-v1", REPO / "recipes")
SEED_COUNTS = (1, 2, 5, 10)
SEEDS_FRAMES = 30_000  # the per-frame cost is what scales with the seeds; a shorter run measures it
POOL = REPO / "tests" / "data" / "reservoir_seeds.json"


def seeds(repeats: int) -> dict[str, Any]:
    """Training 1, 2, 5 and 10 agents together: process and loop wall time, peak memory."""
    results: dict[str, Any] = {}
    for count in SEED_COUNTS:
        runs = [
            run_pipeline([*QUIET, f"train.seeds={count}", f"train.total_frames={SEEDS_FRAMES}"], evaluate=False)
            for _ in range(repeats)
        ]
        results[str(count)] = {
            "process_s": spread([run.wall_s for run in runs]),
            "loop_s": spread([run.train["train_time_s"] + run.train["validation_time_s"] for run in runs]),
            "peak_rss_mb": spread([run.peak_rss_mb for run in runs]),
        }
        print(f"  {count} seeds: {results[str(count)]}", flush=True)
    one = results["1"]["process_s"]["median"]
    results["ratio_to_one_seed"] = {
        str(count): results[str(count)]["process_s"]["median"] / one for count in SEED_COUNTS
    }
    _plot_seeds(results)
    return results


def _plot_seeds(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = list(SEED_COUNTS)
    figure, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for key, label in (("process_s", "whole train process"), ("loop_s", "training loop")):
        medians = [results[str(c)][key]["median"] for c in counts]
        low = [results[str(c)][key]["min"] for c in counts]
        high = [results[str(c)][key]["max"] for c in counts]
        ax.errorbar(
            counts,
            medians,
            yerr=[np.subtract(medians, low), np.subtract(high, medians)],
            marker="o",
            capsize=3,
            label=label,
        )
    ax.plot(counts, [results["1"]["process_s"]["median"] * c for c in counts], "k:", label="one process per seed")
    ax.set(
        xlabel="seeds trained together",
        ylabel="seconds",
        xticks=counts,
        title=f"Reservoir, {SEEDS_FRAMES:,} frames per seed (median, min-max)",
    )
    ax.set_ylim(0, results[str(counts[-1])]["process_s"]["max"] * 1.15)
    ax.legend()
    ax.grid(alpha=0.3)
    figure.savefig(RESULTS / "seeds.png", dpi=110)
    plt.close(figure)


def _agents(run: Any) -> list[dict[str, Any]]:
    """Per agent: final and best test score, and the fraction of the optimum's return."""
    evaluation = run.eval
    optimum = evaluation["score_reference"]["optimum_return"]
    rows = []
    for index in range(evaluation["seeds"]):
        final = {name: evaluation["dqn"]["final"][name]["per_seed"][index] for name in ("score", "return")}
        best = {name: evaluation["dqn"]["best"][name]["per_seed"][index] for name in ("score", "return")}
        agent = run.train["agents"][index]
        rows.append(
            {
                "agent": index,
                "final_score": final["score"],
                "best_score": best["score"],
                "final_fraction": final["return"] / optimum,
                "best_fraction": best["return"] / optimum,
                "final_return": final["return"],
                "best_return": best["return"],
                "best_validation_frames": agent["best_validation_frames"],
                "stopped_at_frames": agent["stopped_at_frames"],
                "stopped_after_seconds": agent["stopped_after_seconds"],
            }
        )
    return rows


def reservoir(repeats: int) -> dict[str, Any]:
    """The default pipeline (100,000 frames x 5 seeds) for master seeds 0 .. repeats-1: final and best per agent."""
    results: dict[str, Any] = {"runs": []}
    for master in range(repeats):
        run = run_pipeline([*QUIET, f"seed={master}"])
        agents = _agents(run)
        results["runs"].append(
            {
                "seed": master,
                "agents": agents,
                "process_s": run.wall_s,
                "loop_s": run.train["train_time_s"] + run.train["validation_time_s"],
                "eval": {name: run.eval["dqn"]["final"][name] for name in ("score", "return", "reliability")},
                "baselines": run.eval["baselines"],
            }
        )
        print(f"  seed {master}: " + ", ".join(f"{a['final_fraction']:.4f}" for a in agents), flush=True)
    finals = [a["final_fraction"] for r in results["runs"] for a in r["agents"]]
    results["final_fraction"] = spread(finals)
    results["final_at_least_0.95"] = sum(value >= 0.95 for value in finals)
    results["agents"] = len(finals)
    if len(results["runs"]) > 1:  # a change that only moves the seeds: the gate must not call it a regression
        results["master_seed_change"] = _seed_change_verdicts(results["runs"][0], results["runs"][1])
    return results


def _seed_change_verdicts(baseline: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    from reservoir_dqn.config import load_config
    from reservoir_dqn.evaluation.statistics import compare

    settings = load_config(REPO / "params.yaml").compare
    name = settings.metric
    result = compare(
        baseline["eval"][name]["per_seed"], change["eval"][name]["per_seed"], settings.tolerance, settings.significance
    )
    verdicts = {name: {"difference": result.difference, "p": result.p, "verdict": result.verdict}}
    return {"baseline_seed": baseline["seed"], "change_seed": change["seed"], "verdicts": verdicts}


def cartpole(repeats: int) -> dict[str, Any]:
    """The CartPole recipe, 5 seeds: when each agent's validation reached 475, its final test mean; process overhead."""
    runs = [run_pipeline([*QUIET, *CARTPOLE]) for _ in range(repeats)]  # the same seeds: timing repeats
    agents = _agents(runs[0])
    for agent in agents:
        agent["final_test_mean"] = agent["final_return"]
    process = [run.wall_s for run in runs]
    loop = [run.train["train_time_s"] for run in runs]
    # All 50,000 frames (no early stop): the process against its training loop.
    full = [run_pipeline([*QUIET, *CARTPOLE[:2], CARTPOLE[3]], evaluate=False) for _ in range(repeats)]
    return {
        "full_50k": {
            "process_s": spread([run.wall_s for run in full]),
            "loop_s": spread([run.train["train_time_s"] for run in full]),
            "validation_s": spread([run.train["validation_time_s"] for run in full]),
            "process_over_loop": spread([run.wall_s / run.train["train_time_s"] for run in full]),
        },
        "agents": agents,
        "solved_agents": sum(agent["final_test_mean"] >= 475 for agent in agents),
        "frames_per_agent": runs[0].train["frames"],
        "process_s": spread(process),
        "loop_s": spread(loop),
        "validation_s": spread([run.train["validation_time_s"] for run in runs]),
        "process_over_loop": spread([p / lo for p, lo in zip(process, loop, strict=True)]),
    }


def repro(repeats: int) -> dict[str, Any]:
    """The default `dvc repro` (train, evaluate, plot; 5 seeds) in a fresh git copy of the project."""
    from tests.conftest import copy_repo

    durations = []
    for _ in range(repeats):
        folder = Path(tempfile.mkdtemp(prefix="reservoir-dqn-repro-")) / "repo"
        root = copy_repo(folder)
        (root / ".venv").symlink_to(REPO / ".venv")
        env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(root / "src")}
        for command in (
            ["git", "init", "-q"],
            ["git", "add", "-A"],
            ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"],
        ):
            subprocess.run(command, cwd=root, check=True, env=env)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "dvc", "repro", "--force"], cwd=root, env=env, check=True, capture_output=True
        )
        durations.append(time.perf_counter() - started)
        shutil.rmtree(folder.parent, ignore_errors=True)
        print(f"  dvc repro: {durations[-1]:.1f} s", flush=True)
    return {"wall_s": spread(durations)}


TUNE_OVERRIDES = ["train.total_frames=10000", "train.seeds=2", "train.eval_interval_frames=2000"]


def tune(repeats: int) -> dict[str, Any]:
    """A 12-trial study run by 1 and by 2 workers sharing its SQLite storage (small trials)."""
    results: dict[str, Any] = {}
    for workers in (1, 2):
        durations = []
        for _ in range(repeats):
            folder = Path(tempfile.mkdtemp(prefix="reservoir-dqn-tune-"))
            shutil.copy(REPO / "params.yaml", folder / "params.yaml")
            sets = [a for o in (*QUIET, "tune.trials=12") for a in ("--set", o)]
            sets += ["--set", "tune.overrides=" + json.dumps(TUNE_OVERRIDES)]
            started = time.perf_counter()
            processes = [
                subprocess.Popen(
                    [sys.executable, "-m", "reservoir_dqn.commands.cli", "tune", *sets],
                    cwd=folder,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for _ in range(workers)
            ]
            codes = [process.wait() for process in processes]
            durations.append(time.perf_counter() - started)
            assert codes == [0] * workers, codes
            shutil.rmtree(folder, ignore_errors=True)
            print(f"  {workers} worker(s): {durations[-1]:.1f} s", flush=True)
        results[str(workers)] = {"wall_s": spread(durations)}
    results["trial_overrides"] = TUNE_OVERRIDES
    return results


def gate(repeats: int) -> dict[str, Any]:
    """False alarms of the CI gate: 5-vs-5-seed no-change pairs drawn from one 20-seed default run.

    The 20 per-seed scores are also written to ``tests/data/reservoir_seeds.json``, the real
    seeds ``python -m bench.gate`` calibrates the gate and measures coverage on. At an exact
    no-change the tolerance alone rules out most alarms, so the largest drop of any pair is
    reported beside the rate; the gate's calibration near the tolerance is ``bench.gate``'s.
    """
    from reservoir_dqn.config import load_config
    from reservoir_dqn.evaluation.statistics import compare

    run = run_pipeline([*QUIET, "train.seeds=20"])
    pool = {name: run.eval["dqn"]["final"][name]["per_seed"] for name in ("score", "return")}
    POOL.parent.mkdir(parents=True, exist_ok=True)
    POOL.write_text(json.dumps({"command": "python -m bench.run --sections gate", "per_seed": pool}, indent=2) + "\n")
    settings = load_config(REPO / "params.yaml").compare
    values = np.asarray(pool[settings.metric])
    rng = np.random.default_rng(0)
    pairs = 2000
    alarms, largest_drop = 0, 0.0
    for _ in range(pairs):
        order = rng.permutation(20)
        result = compare(values[order[:5]], values[order[5:10]], settings.tolerance, settings.significance)
        alarms += result.verdict == "regression"
        largest_drop = max(largest_drop, -result.difference)
    return {
        "pool": {name: {"values": values, **spread(values)} for name, values in pool.items()},
        "pairs": pairs,
        "false_alarm_rate": {settings.metric: alarms / pairs},
        "largest_drop": {settings.metric: largest_drop},
        "tolerance": settings.tolerance,
    }


def throughput(repeats: int) -> dict[str, Any]:
    """Reservoir env steps/s by batch size; collection frames/s and optimiser updates/s for 1 and 5 agents."""
    import torch

    from reservoir_dqn.agent import NetworkSpec, make_agent, update
    from reservoir_dqn.agent.dqn import TransitionWriter
    from reservoir_dqn.config import load_config
    from reservoir_dqn.envs import profile
    from reservoir_dqn.training.collection import Rollout
    from reservoir_dqn.training.replay import make_replay_buffer

    torch.set_num_threads(1)
    config = load_config(REPO / "params.yaml")
    env_profile = profile(config.env)
    env_steps = {}
    for batch in (1, 50, 1000):
        env = env_profile.make(config.env, list(range(batch)))
        steps = max(200, 100_000 // batch)
        actions = torch.randint(11, (steps, batch))

        def measure(env: Any = env, steps: int = steps, actions: torch.Tensor = actions, batch: int = batch) -> float:
            tensordict = env.reset()
            started = time.perf_counter()
            for step in range(steps):
                tensordict["action"] = actions[step]
                _, tensordict = env.step_and_maybe_reset(tensordict)
            return steps * batch / (time.perf_counter() - started)

        env_steps[str(batch)] = repeat(measure, repeats)
        print(f"  env steps/s at batch {batch}: {env_steps[str(batch)]['median']:,.0f}", flush=True)
    updates = {}
    for agents in (1, 5):
        spec = NetworkSpec(4, 11, tuple(config.dqn.hidden_sizes), "reservoir", None, agents)
        agent = make_agent(config.dqn, spec, seeds=list(range(agents)))
        env = env_profile.make(config.env, list(range(agents * config.env.num_envs)))
        rollout = Rollout(env, agent.policy, 10, env_profile)
        buffer = make_replay_buffer(config.dqn, agents)
        writer = TransitionWriter(buffer, agents, 1, config.dqn.gamma)
        collect = lambda rollout=rollout, writer=writer: writer.write(rollout.collect())  # noqa: E731
        for _ in range(30):
            collect()

        def measure_updates(agent: Any = agent, buffer: Any = buffer) -> float:
            started = time.perf_counter()
            for _ in range(300):
                update(agent, buffer.sample())
            return 300 / (time.perf_counter() - started)

        def measure_collection(collect: Callable[[], Any] = collect, frames: int = agents * 100) -> float:
            started = time.perf_counter()
            for _ in range(50):
                collect()
            return 50 * frames / (time.perf_counter() - started)

        updates[str(agents)] = repeat(measure_updates, repeats)
        updates[f"collection_{agents}"] = repeat(measure_collection, repeats)
        print(
            f"  {agents} agent(s): updates/s {updates[str(agents)]['median']:,.0f}, collection frames/s "
            f"{updates[f'collection_{agents}']['median']:,.0f}",
            flush=True,
        )
    return {"env_steps_per_s": env_steps, "updates_per_s": updates}


def tracking(repeats: int) -> dict[str, Any]:
    """The default training (5 seeds, 30,000 frames) with MLflow (embedded store) and TensorBoard on, against off."""
    from mlflow import MlflowClient

    store = Path(tempfile.mkdtemp(prefix="reservoir-dqn-bench-store-"))
    uri = f"sqlite:///{store / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # creates the tables, as in a project after its first run
    on = ["tracking.enabled=true", "tracking.tensorboard=true", f"tracking.uri={uri}"]
    results: dict[str, Any] = {}
    try:
        for label, overrides in (("off", QUIET), ("on", on)):
            runs = [run_pipeline([*overrides, "train.total_frames=30000"], evaluate=False) for _ in range(repeats)]
            results[label] = {
                "loop_s": spread([r.train["train_time_s"] for r in runs]),
                "process_s": spread([r.wall_s for r in runs]),
            }
            print(f"  tracking {label}: {results[label]}", flush=True)
    finally:
        shutil.rmtree(store, ignore_errors=True)
    results["loop_overhead"] = results["on"]["loop_s"]["median"] / results["off"]["loop_s"]["median"] - 1
    results["process_overhead"] = results["on"]["process_s"]["median"] / results["off"]["process_s"]["median"] - 1
    return results


SECTIONS: dict[str, tuple[Callable[[int], dict[str, Any]], int]] = {
    "throughput": (throughput, 5),
    "seeds": (seeds, 3),
    "reservoir": (reservoir, 2),
    "cartpole": (cartpole, 3),
    "repro": (repro, 2),
    "tune": (tune, 2),
    "gate": (gate, 1),
    "tracking": (tracking, 3),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated: " + ", ".join(SECTIONS))
    parser.add_argument("--repeats", type=int, help="runs per measurement (default: per section)")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    previous = RESULTS / "benchmark.json"
    if previous.exists():  # keep sections measured earlier; re-measure only those asked for
        results = {key: value for key, value in json.loads(previous.read_text()).items() if key in SECTIONS}
    for name in args.sections.split(","):
        print(f"[{name}]", flush=True)
        section, default = SECTIONS[name]
        results[name] = {"machine": machine(), **section(args.repeats or default)}
        write_results("benchmark", results)
        (RESULTS / "benchmark.md").write_text(markdown(results))
    print((RESULTS / "benchmark.md").read_text())


if __name__ == "__main__":
    main()
