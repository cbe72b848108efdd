"""The benchmark suite: sample efficiency, speed, throughput, scaling and tracking overhead.

Usage (from the repository root; ``make bench`` runs all of it, about 50 minutes on 2 cores)::

    .venv/bin/python -m bench.run                      # every section
    .venv/bin/python -m bench.run --sections throughput,reservoir --repeats 3

Writes ``bench/results/benchmark.json`` (machine-readable, with the machine it ran on),
``bench/results/benchmark.md`` (the tables) and ``bench/results/scaling.png``. Every figure
is a median over repeated runs with its range; nothing here is a test.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import RESULTS, machine, repeat, run_pipeline, spread, write_results

QUIET = ["tracking.enabled=false", "tracking.tensorboard=false"]
CARTPOLE = ["env.name=CartPole-v1", "train.total_frames=50000", *QUIET]
SOLVED = 475.0


def cartpole(repeats: int) -> dict[str, Any]:
    """Default CartPole settings, seeds 0..repeats-1: frames to a solved greedy policy, final score, speed."""
    seeds = []
    for seed in range(repeats):
        result = run_pipeline([*CARTPOLE, f"seed={seed}"])
        evaluations = [
            (int(row["frames"]), float(row["eval/return_mean"])) for row in result.log if row["eval/return_mean"]
        ]
        first = next((frames for frames, value in evaluations if value >= SOLVED), None)
        assert result.eval is not None
        seeds.append(
            {
                "seed": seed,
                "frames_to_solved": first,  # first periodic greedy evaluation (validation seeds) with mean >= 475
                "final_greedy_mean": result.eval["dqn"]["return_mean"],  # 100 test episodes, model written
                "train_time_s": result.train["train_time_s"],  # collection + updates, evaluation excluded
                "fps": result.train["fps"],
            }
        )
        print(f"  cartpole seed {seed}: {seeds[-1]}", flush=True)
    solved = [s for s in seeds if s["final_greedy_mean"] >= SOLVED]
    reached = [s["frames_to_solved"] for s in seeds if s["frames_to_solved"] is not None]
    return {
        "seeds": seeds,
        "solved_seeds": len(solved),
        "frames_to_solved": spread(reached) if reached else None,
        "final_greedy_mean": spread([s["final_greedy_mean"] for s in seeds]),
        "train_time_s": spread([s["train_time_s"] for s in seeds]),
        "fps": spread([s["fps"] for s in seeds]),
    }


def reservoir(repeats: int) -> dict[str, Any]:
    """Default reservoir settings, seeds 0..repeats-1: fraction of the SDP optimum and speed."""
    seeds = []
    for seed in range(repeats):
        result = run_pipeline([*QUIET, f"seed={seed}"])
        assert result.eval is not None
        seeds.append(
            {
                "seed": seed,
                "fraction_of_optimum": result.eval["fraction_of_optimum"],
                "dqn_return": result.eval["dqn"]["return_mean"],
                "sdp_return": result.eval["sdp"]["return_mean"],
                "sop_return": result.eval["sop"]["return_mean"],
                "train_time_s": result.train["train_time_s"],
                "fps": result.train["fps"],
                "frames": result.train["frames"],
            }
        )
        print(f"  reservoir seed {seed}: {seeds[-1]}", flush=True)
    return {
        "seeds": seeds,
        "fraction_of_optimum": spread([s["fraction_of_optimum"] for s in seeds]),
        "train_time_s": spread([s["train_time_s"] for s in seeds]),
        "fps": spread([s["fps"] for s in seeds]),
    }


def throughput(repeats: int) -> dict[str, Any]:
    """Raw batched env steps/s, collector frames/s with the policy in the loop, optimiser updates/s."""
    import torch
    from torchrl.collectors import Collector

    from reservoir_dqn.agent import make_agent, update
    from reservoir_dqn.config import load_config
    from reservoir_dqn.envs import make_env
    from reservoir_dqn.envs.reservoir import DiscreteReservoirEnv
    from reservoir_dqn.replay import TRANSITION_KEYS, make_replay_buffer
    from reservoir_dqn.training import network_spec

    torch.set_num_threads(1)
    config = load_config(Path("params.yaml"), ["env.name=reservoir"])
    env_steps = {}
    for batch in (1, 16, 256, 1024):
        env = DiscreteReservoirEnv(config.env.reservoir, batch)
        env.set_seed(0)
        steps = max(200, 200_000 // batch)
        actions = torch.randint(env.model.num_actions, (steps, batch))

        def measure(
            env: DiscreteReservoirEnv = env, steps: int = steps, actions: torch.Tensor = actions, batch: int = batch
        ) -> float:
            tensordict = env.reset()
            started = time.perf_counter()
            for step in range(steps):
                tensordict["action"] = actions[step]
                _, tensordict = env.step_and_maybe_reset(tensordict)
            return steps * batch / (time.perf_counter() - started)

        env_steps[str(batch)] = repeat(measure, repeats)
        print(f"  env steps/s at batch {batch}: {env_steps[str(batch)]['median']:,.0f}", flush=True)

    collectors = {}
    for name in ("reservoir", "CartPole-v1"):
        cfg = load_config(Path("params.yaml"), [f"env.name={name}"])
        env = make_env(cfg.env, cfg.env.num_envs)
        agent = make_agent(cfg.dqn, network_spec(env, cfg.env, cfg.dqn.hidden_sizes))
        collector = Collector(
            env,
            agent.policy,
            frames_per_batch=cfg.train.frames_per_batch,
            total_frames=-1,
            auto_register_policy_transforms=False,
        )
        batches = iter(collector)
        next(batches)

        def measure_collector(batches: Any = batches, per_batch: int = cfg.train.frames_per_batch) -> float:
            count = max(20_000 // per_batch, 10)
            started = time.perf_counter()
            for _ in range(count):
                next(batches)
            return count * per_batch / (time.perf_counter() - started)

        collectors[name] = repeat(measure_collector, repeats)
        collector.shutdown()
        print(f"  collector frames/s ({name}, {cfg.env.num_envs} envs): {collectors[name]['median']:,.0f}")

    updates = {}
    for compiled in (False, True):
        cfg = load_config(Path("params.yaml"), ["env.name=reservoir"])
        env = make_env(cfg.env, 4)
        spec = network_spec(env, cfg.env, cfg.dqn.hidden_sizes)
        agent = make_agent(cfg.dqn, spec, compile_loss=compiled)
        buffer = make_replay_buffer(cfg.dqn)
        buffer.extend(env.rollout(600, break_when_any_done=False).reshape(-1).select(*TRANSITION_KEYS))
        started = time.perf_counter()
        update(agent, buffer.sample())  # compiles, when asked
        warmup = time.perf_counter() - started

        def measure_updates(agent: Any = agent, buffer: Any = buffer) -> float:
            started = time.perf_counter()
            for _ in range(300):
                update(agent, buffer.sample())
            return 300 / (time.perf_counter() - started)

        key = "compiled" if compiled else "eager"
        updates[key] = {**repeat(measure_updates, repeats), "first_update_s": warmup}
        print(f"  updates/s ({key}, batch {cfg.dqn.batch_size}, sampling included): {updates[key]['median']:,.0f}")
    return {"env_steps_per_s": env_steps, "collector_frames_per_s": collectors, "updates_per_s": updates}


def scaling(repeats: int) -> dict[str, Any]:
    """Reservoir training time and peak memory against total frames and against replay buffer size."""
    by_frames = {}
    for frames in (25_000, 50_000, 100_000, 200_000):
        runs = [run_pipeline([*QUIET, f"train.total_frames={frames}"], evaluate=False) for _ in range(repeats)]
        by_frames[str(frames)] = {
            "train_time_s": spread([r.train["train_time_s"] for r in runs]),
            "peak_rss_mb": spread([r.peak_rss_mb for r in runs]),
        }
        print(f"  {frames} frames: {by_frames[str(frames)]}", flush=True)
    by_buffer = {}
    for size, on_disk in ((10_000, False), (100_000, False), (1_000_000, True)):
        overrides = [
            *QUIET,
            "train.total_frames=100000",
            f"dqn.buffer_size={size}",
            f"dqn.buffer_on_disk={str(on_disk).lower()}",
        ]
        runs = [run_pipeline(overrides, evaluate=False) for _ in range(repeats)]
        by_buffer[str(size)] = {
            "storage": "memmap on disk" if on_disk else "memory",
            "train_time_s": spread([r.train["train_time_s"] for r in runs]),
            "peak_rss_mb": spread([r.peak_rss_mb for r in runs]),
        }
        print(f"  buffer {size}: {by_buffer[str(size)]}", flush=True)
    _plot_scaling(by_frames, by_buffer)
    return {"by_total_frames": by_frames, "by_buffer_size": by_buffer}


def _plot_scaling(by_frames: dict[str, Any], by_buffer: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    frames = sorted(int(k) for k in by_frames)  # JSON keeps them as sorted strings
    ax = axes[0]
    ax.plot(frames, [by_frames[str(f)]["train_time_s"]["median"] for f in frames], "o-", label="train time (s)")
    ax2 = ax.twinx()
    ax2.plot(frames, [by_frames[str(f)]["peak_rss_mb"]["median"] for f in frames], "s--", color="tab:red")
    ax.set(title="Reservoir: total frames", xlabel="frames", ylabel="training time (s)")
    ax2.set_ylabel("peak RSS (MiB)", color="tab:red")
    ax2.set_ylim(0, 1.15 * max(by_frames[str(f)]["peak_rss_mb"]["max"] for f in frames))  # from 0: flat is flat
    sizes = sorted(by_buffer, key=int)
    ax = axes[1]
    ax.bar(sizes, [by_buffer[s]["peak_rss_mb"]["median"] for s in sizes], color="tab:red", alpha=0.6)
    for index, size in enumerate(sizes):
        ax.annotate(
            f"{by_buffer[size]['train_time_s']['median']:.0f} s\n{by_buffer[size]['storage']}",
            (index, by_buffer[size]["peak_rss_mb"]["median"]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    top = max(by_buffer[s]["peak_rss_mb"]["median"] for s in sizes)
    ax.set(title="Replay buffer size (100k frames)", xlabel="buffer size", ylabel="peak RSS (MiB)")
    ax.set_ylim(0, 1.25 * top)
    RESULTS.mkdir(parents=True, exist_ok=True)
    figure.savefig(RESULTS / "scaling.png", dpi=110)
    plt.close(figure)


def tracking_overhead(repeats: int) -> dict[str, Any]:
    """Reservoir training with MLflow (embedded store) and TensorBoard on, against both off.

    The runs share one embedded store created beforehand, as in a project after its first
    run (creating the store's tables, once per project, takes about a second more).
    """
    from mlflow import MlflowClient

    store = Path(tempfile.mkdtemp(prefix="reservoir-dqn-bench-store-"))
    uri = f"sqlite:///{store / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # creates the tables
    on = ["tracking.enabled=true", "tracking.tensorboard=true", f"tracking.uri={uri}"]
    results: dict[str, Any] = {}
    try:
        for label, overrides in (("off", QUIET), ("on", on)):
            runs = [run_pipeline(list(overrides), evaluate=False) for _ in range(repeats)]
            results[label] = {
                "train_time_s": spread([r.train["train_time_s"] for r in runs]),
                "stage_wall_s": spread([r.wall_s for r in runs]),
            }
            print(f"  tracking {label}: {results[label]}", flush=True)
    finally:
        shutil.rmtree(store, ignore_errors=True)
    off, tracked = results["off"], results["on"]
    results["loop_overhead"] = tracked["train_time_s"]["median"] / off["train_time_s"]["median"] - 1
    results["stage_overhead"] = tracked["stage_wall_s"]["median"] / off["stage_wall_s"]["median"] - 1
    return results


SECTIONS: dict[str, Callable[[int], dict[str, Any]]] = {
    "throughput": throughput,
    "cartpole": cartpole,
    "reservoir": reservoir,
    "tracking": tracking_overhead,
    "scaling": scaling,
}
DEFAULT_REPEATS = {"throughput": 5, "cartpole": 5, "reservoir": 3, "tracking": 3, "scaling": 3}


def markdown(results: dict[str, Any]) -> str:
    """The tables a person reads (and the closing note quotes)."""

    def cell(stats: dict[str, float] | None, digits: int = 1) -> str:
        if not stats:
            return "-"
        return f"{stats['median']:,.{digits}f} ({stats['min']:,.{digits}f}-{stats['max']:,.{digits}f}, n={stats['n']})"

    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"{m['cores']} cores, {m['torch_threads']} torch thread(s) in training, torch {m['torch']}, "
        f"torchrl {m['torchrl']}, {m['date']}. Median (min-max, n runs).",
        "",
    ]
    if "cartpole" in results:
        c = results["cartpole"]
        lines += [
            "## CartPole-v1, default settings, 50,000 frames",
            "",
            "| seed | frames to greedy 100-episode mean >= 475 | final greedy mean (100 test episodes) | "
            "training s | frames/s |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {s['seed']} | {s['frames_to_solved'] or 'not reached'} | {s['final_greedy_mean']:.1f} | "
            f"{s['train_time_s']:.1f} | {s['fps']:,.0f} |"
            for s in c["seeds"]
        ]
        lines += [
            "",
            f"Solved (final >= 475): {c['solved_seeds']} of {len(c['seeds'])} seeds. Training time "
            f"{cell(c['train_time_s'])} s; frames/s {cell(c['fps'], 0)}.",
            "",
        ]
    if "reservoir" in results:
        r = results["reservoir"]
        lines += [
            "## Reservoir, default settings",
            "",
            "| seed | fraction of SDP optimum | DQN | SDP | SOP | training s | frames/s |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {s['seed']} | {s['fraction_of_optimum']:.4f} | {s['dqn_return']:.1f} | {s['sdp_return']:.1f} | "
            f"{s['sop_return']:.1f} | {s['train_time_s']:.1f} | {s['fps']:,.0f} |"
            for s in r["seeds"]
        ]
        lines += [
            "",
            f"Fraction of optimum {cell(r['fraction_of_optimum'], 4)}; training {cell(r['train_time_s'])} s.",
            "",
        ]
    if "throughput" in results:
        t = results["throughput"]
        lines += ["## Throughput", "", "| measurement | median (min-max, n) |", "|---|---|"]
        lines += [f"| reservoir env steps/s, batch {b} | {cell(v, 0)} |" for b, v in t["env_steps_per_s"].items()]
        lines += [
            f"| collector frames/s with policy, {n} | {cell(v, 0)} |" for n, v in t["collector_frames_per_s"].items()
        ]
        lines += [
            f"| optimiser updates/s, {k} (first update {v['first_update_s']:.1f} s) | {cell(v, 0)} |"
            for k, v in t["updates_per_s"].items()
        ]
        lines.append("")
    if "tracking" in results:
        tr = results["tracking"]
        lines += [
            "## Tracking overhead (reservoir)",
            "",
            "| tracking | training loop s | whole stage s |",
            "|---|---|---|",
        ]
        lines += [f"| {k} | {cell(tr[k]['train_time_s'])} | {cell(tr[k]['stage_wall_s'])} |" for k in ("off", "on")]
        lines += [
            "",
            f"Overhead: {tr['loop_overhead']:+.1%} of the training loop, {tr['stage_overhead']:+.1%} of "
            "the whole stage (model logging and uploads included).",
            "",
        ]
    if "scaling" in results:
        s = results["scaling"]
        lines += ["## Scaling (reservoir)", "", "| total frames | training s | peak RSS MiB |", "|---|---|---|"]
        lines += [
            f"| {k} | {cell(v['train_time_s'])} | {cell(v['peak_rss_mb'], 0)} |"
            for k, v in sorted(s["by_total_frames"].items(), key=lambda item: int(item[0]))
        ]
        lines += ["", "| buffer size | storage | training s (100k frames) | peak RSS MiB |", "|---|---|---|---|"]
        lines += [
            f"| {k} | {v['storage']} | {cell(v['train_time_s'])} | {cell(v['peak_rss_mb'], 0)} |"
            for k, v in sorted(s["by_buffer_size"].items(), key=lambda item: int(item[0]))
        ]
        lines += ["", "![scaling](scaling.png)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated: " + ", ".join(SECTIONS))
    parser.add_argument("--repeats", type=int, help="runs per measurement (default: per section)")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine()}
    previous = RESULTS / "benchmark.json"
    if previous.exists():  # keep sections measured earlier; re-measure only those asked for
        import json

        results = {**json.loads(previous.read_text()), "machine": machine()}
    for name in args.sections.split(","):
        print(f"[{name}]", flush=True)
        results[name] = SECTIONS[name](args.repeats or DEFAULT_REPEATS[name])
        write_results("benchmark", results)
        (RESULTS / "benchmark.md").write_text(markdown(results))
    print((RESULTS / "benchmark.md").read_text())


if __name__ == "__main__":
    main()
