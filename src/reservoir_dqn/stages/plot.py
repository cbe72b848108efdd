"""Stage ``plot``: PNG figures of training and evaluation, for people rather than parsers.

Always: ``training_curves.png`` (episode and evaluation return, loss, epsilon, Q-values
against frames) and ``evaluation_returns.png`` (per-episode returns of every policy side by
side). Reservoir runs add ``trajectory.png`` (storage against capacity and the minimum
level, inflow, release and spill through an evaluation episode), ``action_histogram.png``
and ``reward_components.png``.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display: works on servers and in CI

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from reservoir_dqn.config import ReservoirConfig
from reservoir_dqn.envs import RESERVOIR
from reservoir_dqn.files import read_json
from reservoir_dqn.stages import connect_tracking, run_stage, stage_config
from reservoir_dqn.tracking import read_csv_log

PATHS = ("train_log", "train_metrics", "eval_metrics", "eval_episodes", "trajectories", "plots")
POLICY_COLORS = {"dqn": "tab:blue", "sdp": "tab:green", "sop": "tab:orange", "random": "tab:gray"}
COMPONENTS = ("reward_energy", "reward_deficit", "reward_spill", "reward_violation")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _series(log: dict[str, list[float]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Frames and values of one training-log column, without the empty cells."""
    frames, values = np.asarray(log["frames"]), np.asarray(log.get(key, [np.nan] * len(log["frames"])))
    keep = ~np.isnan(values)
    return frames[keep], values[keep]


def training_curves(log: dict[str, list[float]]) -> Figure:
    """Episode return (training and greedy evaluation), loss, epsilon and Q-values against frames."""
    figure, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True, layout="constrained")
    ax = axes[0, 0]
    frames, returns = _series(log, "episode/return_mean")
    ax.plot(frames, returns, color="tab:blue", alpha=0.35, linewidth=0.8, label="training episodes")
    if len(returns) >= 10:
        window = max(len(returns) // 30, 5)
        smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
        ax.plot(frames[window - 1 :], smooth, color="tab:blue", label=f"training, {window}-point mean")
    ax.plot(*_series(log, "eval/return_mean"), "o-", color="tab:red", markersize=3, label="greedy evaluation")
    ax.set(title="Episode return", ylabel="return")
    ax.legend(loc="lower right", fontsize=8)
    ax = axes[0, 1]
    ax.plot(*_series(log, "train/loss"), color="tab:purple", linewidth=0.8)
    ax.set(title="TD loss (mean per batch of updates)", yscale="log")
    ax = axes[1, 0]
    ax.plot(*_series(log, "train/epsilon"), color="tab:olive")
    ax.set(title="Exploration rate epsilon", xlabel="frames collected", ylim=(0, 1.02))
    ax = axes[1, 1]
    ax.plot(*_series(log, "agent/q_mean"), label="mean of max_a Q", color="tab:cyan")
    ax.plot(*_series(log, "agent/q_max"), label="max of max_a Q", color="tab:blue", linestyle="--")
    ax.set(title="Greedy Q-values on collected states", xlabel="frames collected")
    ax.legend(fontsize=8)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    return figure


def evaluation_returns(episodes: list[dict[str, str]], metrics: dict[str, Any]) -> Figure:
    """Per-episode returns of every evaluated policy, side by side on the same scenarios."""
    policies = list(dict.fromkeys(row["policy"] for row in episodes))
    returns = [[float(row["return"]) for row in episodes if row["policy"] == name] for name in policies]
    figure, ax = plt.subplots(figsize=(2.2 * len(policies) + 3, 4.5), layout="constrained")
    ax.boxplot(returns, showfliers=False, widths=0.5)
    ax.set_xticks(range(1, len(policies) + 1), policies)
    rng = np.random.default_rng(0)  # jitter only: the points themselves are the data
    for index, (name, values) in enumerate(zip(policies, returns, strict=True), start=1):
        jitter = rng.uniform(-0.15, 0.15, len(values))
        ax.scatter(index + jitter, values, s=8, alpha=0.5, color=POLICY_COLORS.get(name, "tab:blue"), zorder=3)
        ax.annotate(
            f"{np.mean(values):.1f}",
            (index, np.max(values)),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=9,
        )
    title = f"Evaluation returns, {metrics['episodes']} seeded episodes per policy"
    if "fraction_of_optimum" in metrics:
        title += f"\nDQN reaches {metrics['fraction_of_optimum']:.3f} of the SDP optimum"
    ax.set(title=title, ylabel="episode return")
    ax.grid(alpha=0.3, axis="y")
    return figure


def trajectory(rows: list[dict[str, str]], reservoir: ReservoirConfig, episode: int = 0) -> Figure:
    """One evaluation episode month by month: storage, inflow, release and spill, per policy."""
    policies = [name for name in POLICY_COLORS if any(r["policy"] == name for r in rows)]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(13, 7), sharex=True, layout="constrained")
    for name in policies:
        steps = [r for r in rows if r["policy"] == name and int(r["episode"]) == episode]
        months = np.arange(1, len(steps) + 1)
        color = POLICY_COLORS[name]
        top.plot(months, [float(r["storage"]) for r in steps], color=color, label=f"storage, {name}")
        bottom.plot(months, [float(r["release"]) for r in steps], color=color, label=f"release, {name}")
        spill = np.array([float(r["spill"]) for r in steps])
        if spill.any():
            bottom.bar(months, spill, color=color, alpha=0.35, label=f"spill, {name}")
        inflow = [float(r["inflow"]) for r in steps]
    top.axhline(reservoir.capacity, color="black", linestyle="--", linewidth=1, label="capacity")
    top.axhline(reservoir.min_storage, color="tab:red", linestyle=":", linewidth=1, label="minimum storage")
    top.set(title=f"Evaluation episode {episode}: storage (units of {reservoir.unit_hm3:g} hm3)", ylabel="units")
    bottom.plot(months, inflow, color="black", alpha=0.6, linewidth=1, label="inflow (same for all)")
    bottom.set(title="Inflow, release and spill", xlabel="month of the episode", ylabel="units per month")
    for ax in (top, bottom):
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes, off the lines
        ax.grid(alpha=0.3)
    return figure


def action_histogram(rows: list[dict[str, str]], reservoir: ReservoirConfig) -> Figure:
    """How often each release level was chosen in the written evaluation episodes, per policy."""
    levels = list(reservoir.release_levels)
    policies = [name for name in POLICY_COLORS if any(r["policy"] == name for r in rows)]
    figure, ax = plt.subplots(figsize=(10, 4.5), layout="constrained")
    width = 0.8 / max(len(policies), 1)
    for offset, name in enumerate(policies):
        actions = [int(r["action"]) for r in rows if r["policy"] == name]
        counts = np.bincount(actions, minlength=len(levels)) / max(len(actions), 1)
        positions = np.arange(len(levels)) + (offset - (len(policies) - 1) / 2) * width
        ax.bar(positions, counts, width=width, color=POLICY_COLORS[name], label=name)
    ax.set_xticks(range(len(levels)), [str(level) for level in levels])
    ax.set(title="Release targets chosen", xlabel="release target (units per month)", ylabel="share of months")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return figure


def reward_components(metrics: dict[str, Any]) -> Figure:
    """Mean per-episode reward split into energy, deficit, spill and violation terms, per policy."""
    policies = [name for name in POLICY_COLORS if name in metrics]
    figure, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
    colors = {
        "reward_energy": "tab:green",
        "reward_deficit": "tab:red",
        "reward_spill": "tab:blue",
        "reward_violation": "tab:purple",
    }
    positive = np.zeros(len(policies))
    negative = np.zeros(len(policies))
    for component in COMPONENTS:
        values = np.array([metrics[name].get(f"{component}_mean", 0.0) for name in policies])
        bottom = np.where(values >= 0, positive, negative)
        ax.bar(policies, values, bottom=bottom, color=colors[component], label=component.removeprefix("reward_"))
        positive += np.clip(values, 0, None)
        negative += np.clip(values, None, 0)
    ax.scatter(
        policies, [metrics[name]["return_mean"] for name in policies], color="black", zorder=3, label="return (sum)"
    )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set(title="Reward components, mean per evaluation episode", ylabel="reward")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return figure


def make_figures(
    log_path: Path,
    metrics_path: Path,
    episodes_path: Path,
    trajectories_path: Path,
    env_name: str,
    reservoir: ReservoirConfig,
) -> dict[str, Figure]:
    """Every figure of the run, by file name."""
    metrics = read_json(metrics_path)
    figures = {
        "training_curves.png": training_curves(read_csv_log(log_path)),
        "evaluation_returns.png": evaluation_returns(_rows(episodes_path), metrics),
    }
    if env_name == RESERVOIR:
        rows = _rows(trajectories_path)
        figures["trajectory.png"] = trajectory(rows, reservoir)
        figures["action_histogram.png"] = action_histogram(rows, reservoir)
        figures["reward_components.png"] = reward_components(metrics)
    return figures


def save_figures(figures: dict[str, Figure], folder: Path) -> list[Path]:
    """Write each figure as a PNG into ``folder`` (replacing what was there) and close it."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):
        if stale.name not in figures:
            stale.unlink()
    written = []
    for name, figure in figures.items():
        path = folder / name
        temporary = path.with_name(f".{name}")
        figure.savefig(temporary, dpi=110, format="png")
        temporary.replace(path)
        plt.close(figure)
        written.append(path)
    return written


def run(argv: Sequence[str] | None = None) -> None:
    config = stage_config("plot", "Draw the training and evaluation figures as PNG files.", PATHS, argv)
    paths = config.paths
    tracking = connect_tracking(config, attach=True)
    figures = make_figures(
        Path(paths.train_log),
        Path(paths.eval_metrics),
        Path(paths.eval_episodes),
        Path(paths.trajectories),
        config.env.name,
        config.env.reservoir,
    )
    written = save_figures(figures, Path(paths.plots))
    tracking.publish([(Path(paths.plots), "figures")])
    print(f"{len(written)} figures written to {paths.plots}/: " + ", ".join(path.name for path in written))


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)


if __name__ == "__main__":
    sys.exit(main())
