"""Stage ``plot``: PNG figures of training and evaluation, for people rather than parsers.

Always ``training_curves.png`` (every agent's validation score, training return, TD loss
and greedy Q-values against frames, with the schedules) and ``evaluation_returns.png``
(per-episode test returns of every agent and baseline on the same scenarios); where the
environment has an optimal baseline, ``regret.png`` (each scenario's return lost to it, per
agent: the scenarios' spread, common to both, cancels). The
environment's profile adds its own (the reservoir: a month-by-month trajectory in hm3,
the release targets chosen and the reward components). Every legend lies outside the axes,
so that it covers no data whatever the curves do.

Every input is read before anything is drawn or written: a missing or unreadable one stops
the stage in one line naming it (exit status 4), and the previous figures stay as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")  # files only, no display: works on servers and in CI

import matplotlib.pyplot as plt
import matplotlib.ticker as ticker
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from reservoir_dqn.commands.plumbing import StageFailed, run_stage
from reservoir_dqn.commands.stage import open_stage
from reservoir_dqn.common.files import OutputSet, read_csv, read_json, write_atomic
from reservoir_dqn.common.metrics import MetricGroup
from reservoir_dqn.common.process import exit_process
from reservoir_dqn.config import ENV_PARAMS
from reservoir_dqn.config.sections import PathsConfig
from reservoir_dqn.envs import profile
from reservoir_dqn.envs.baselines import POLICY_STYLES
from reservoir_dqn.envs.profile import EPISODE, RETURN
from reservoir_dqn.evaluation.results import Evaluation
from reservoir_dqn.evaluation.scoring import REGRET
from reservoir_dqn.training.curves import LEARNING, PROGRESS, VALIDATION
from reservoir_dqn.training.summary import Training

PATHS = ("train_log", "train_metrics", "eval_metrics", "eval_episodes", "trajectories", "policy_states", "plots")
PARAMS = (*ENV_PARAMS, "tracking")  # the sections dvc.yaml lists for this stage
AGENT_COLORS = plt.get_cmap("tab10")
T = TypeVar("T")
REQUIRED_LOG_GROUPS = (PROGRESS,)  # the schedules, written from the first log point on


@dataclass(frozen=True)
class Curve:
    """A training curve as ``training_curves.png`` and ``dvc plots`` draw it: one field of a metric group.

    :param template: DVC's template (``.dvc/plots/``): ``seeds`` draws a thin line per agent and their mean,
        ``seeds_log`` the same on a log scale, ``simple`` one line (a group shared by all agents).
    """

    group: MetricGroup
    field: str
    title: str
    y_label: str
    template: str = "seeds"


# The curves, declared once: the figure's panels and dvc.yaml's plots (tests/test_metric_names.py checks it).
CURVES = (
    Curve(VALIDATION, "score", "Validation score (0 random, 1 optimum)", "greedy validation score"),
    Curve(EPISODE, "return", "Return of training episodes", "mean return of the episodes ended"),
    Curve(LEARNING, "td_loss", "TD loss", "mean TD loss of the updates (log scale)", "seeds_log"),
    Curve(LEARNING, "q_mean", "Greedy Q-value on collected states", "mean of max_a Q(s, a)"),
    Curve(PROGRESS, "epsilon", "Exploration rate", "epsilon", "simple"),
)
X_LABEL = "frames collected per agent"
TEST_RETURNS = "Test returns per policy"  # dvc.yaml's box plot of the evaluation's episodes
# Which stage writes each input, for the line that says one is missing.
WRITTEN_BY = {"train_log": "train", "train_metrics": "train"} | dict.fromkeys(
    ("eval_metrics", "eval_episodes", "trajectories", "policy_states"), "evaluate"
)


def dvc_plots() -> list[dict[str, dict[str, Any]]]:
    """``dvc.yaml``'s plot definitions, from :data:`CURVES` (``tests/test_metric_names.py`` checks they are equal)."""
    plots: list[dict[str, dict[str, Any]]] = [
        {
            curve.title: {
                "template": curve.template,
                "x": "frames",
                "x_label": X_LABEL,
                "y_label": curve.y_label,
                "y": {f"${{paths.train_log}}/{curve.group.file}": curve.field},
            }
        }
        for curve in CURVES
    ]
    returns = {"x": "policy", "x_label": "policy", "y_label": "test episode return"}
    plots.append(
        {TEST_RETURNS: {"template": "returns_by_policy", **returns, "y": {"${paths.eval_episodes}": RETURN.name}}}
    )
    return plots


def _curve(ax: Axes, frame: pd.DataFrame, field: str, shipped: int, label: str) -> None:
    """One line per agent (the shipped one bold) and their mean across agents."""
    for agent, rows in frame.groupby("seed"):
        bold = agent == shipped
        ax.plot(
            rows["frames"],
            rows[field],
            color=AGENT_COLORS(int(agent) % 10),
            linewidth=1.8 if bold else 0.8,
            alpha=1.0 if bold else 0.5,
            label=f"seed {agent}" + (" (shipped)" if bold else ""),
        )
    mean = frame.groupby("frames")[field].mean()
    ax.plot(mean.index, mean.values, color="black", linewidth=1.2, linestyle="--", label=f"mean of {label}")


def training_curves(log: dict[str, pd.DataFrame], trained: Training) -> Figure:
    """Validation score, training return, TD loss and Q-values per agent; epsilon and learning rate."""
    shipped = trained.shipped_agent
    figure, axes = plt.subplots(2, 3, figsize=(16, 8), sharex=True, layout="constrained")
    per_agent = [curve for curve in CURVES if curve.group.per_agent]
    for ax, curve in zip((axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1]), per_agent, strict=True):
        frame = log.get(curve.group.name)
        if frame is not None and len(frame):
            _curve(ax, frame, curve.field, shipped, "agents")
        ax.set(title=curve.title, ylabel=curve.y_label)
        if curve.template == "seeds_log":
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))  # plain numbers, not 4 x 10^-2
            ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    validation = log.get(VALIDATION.name)
    if validation is not None and len(validation):
        network = trained.shipped_network
        agent = trained.agents[shipped]
        at = agent.best_validation_frames if network == "best" else (agent.stopped_at_frames or trained.frames)
        axes[0, 0].axvline(at, color="black", linewidth=0.8, linestyle=":")
        axes[0, 0].annotate(
            f"shipped: seed {shipped}, {network}",
            (at, 0.02),
            xycoords=("data", "axes fraction"),
            rotation=90,
            ha="right",
            va="bottom",
            fontsize=8,
        )
    progress = log[PROGRESS.name]
    ax = axes[0, 2]
    ax.plot(progress["frames"], progress["epsilon"], color="tab:olive")
    ax.set(title="Exploration schedule", ylabel="exploration rate epsilon", ylim=(0, 1.02))
    if progress["lr"].nunique() == 1:  # a constant learning rate is a number, not a curve
        ax.set_title(f"Exploration schedule (learning rate {progress['lr'].iloc[0]:g}, constant)")
    else:
        twin = ax.twinx()
        twin.plot(progress["frames"], progress["lr"], color="tab:purple")
        twin.set_ylabel("learning rate", color="tab:purple")
    ax = axes[1, 2]
    ax.plot(progress["frames"], progress["frames_per_second"], color="tab:blue")
    ax.set(title="Speed", ylabel="frames per second (all agents)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel(X_LABEL)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:  # one row above the panels: beside a panel it would crowd that panel's title
        figure.legend(handles, labels, loc="outside upper center", ncols=len(handles), fontsize=8, frameon=False)
    return figure


def _box_plot(ax: Axes, groups: list[tuple[str, np.ndarray, Any]], number: str) -> None:
    """A box per group (label, values, colour), its values as jittered points and its mean as a diamond; each
    tick names the group and its mean, formatted as ``number``."""
    ax.boxplot([values for _, values, _ in groups], showfliers=False, widths=0.5)
    rng = np.random.default_rng(0)  # jitter only: the points themselves are the data
    for index, (_, values, color) in enumerate(groups, start=1):
        ax.scatter(index + rng.uniform(-0.15, 0.15, len(values)), values, s=6, alpha=0.4, color=color, zorder=3)
        ax.scatter([index], [values.mean()], marker="D", s=40, color="white", edgecolor="black", zorder=4)
    ax.scatter([], [], marker="D", s=40, color="white", edgecolor="black", label="mean")
    ax.set_xticks(range(1, len(groups) + 1), [f"{label}\nmean {values.mean():{number}}" for label, values, _ in groups])


def evaluation_returns(episodes: pd.DataFrame, evaluation: Evaluation) -> Figure:
    """Per-episode test returns of every agent and every baseline, on the same scenarios."""
    groups: list[tuple[str, np.ndarray, Any]] = []
    for agent, rows in episodes[episodes["policy"] == "dqn"].groupby("agent"):
        groups.append((f"dqn\nseed {agent}", rows["return"].to_numpy(), AGENT_COLORS(int(agent) % 10)))
    for name, rows in episodes[episodes["policy"] != "dqn"].groupby("policy", sort=False):
        style = POLICY_STYLES.get(str(name))
        groups.append((str(name), rows["return"].to_numpy(), style.color if style else "tab:gray"))
    figure, ax = plt.subplots(figsize=(1.3 * len(groups) + 3, 5), layout="constrained")
    _box_plot(ax, groups, ",.0f")
    main = evaluation.headline[0]
    summary = evaluation.metric(main)
    interval = "" if summary.ci_low is None else f" [{summary.ci_low:.3f}, {summary.ci_high:.3f}]"
    ax.set(
        title=f"Test returns, {evaluation.episodes} seeded episodes per policy and agent\n"
        f"{main} of the final networks: {summary.mean:.3f}{interval} (1 = {evaluation.optimum_label})",
        ylabel="episode return",
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return figure


def regret(episodes: pd.DataFrame, evaluation: Evaluation, optimum: str) -> Figure:
    """Each test scenario's regret, the optimum's return minus the policy's on that scenario, per agent and baseline."""
    best = episodes[episodes["policy"] == optimum].set_index("episode")["return"]
    groups: list[tuple[str, np.ndarray, Any]] = []
    for agent, rows in episodes[episodes["policy"] == "dqn"].groupby("agent"):
        lost = best.loc[rows["episode"]].to_numpy() - rows["return"].to_numpy()
        groups.append((f"dqn\nseed {agent}", lost, AGENT_COLORS(int(agent) % 10)))
    sop = episodes[episodes["policy"] == "sop"]
    figure, ax = plt.subplots(figsize=(max(1.3 * len(groups) + 3, 9), 5), layout="constrained")
    _box_plot(ax, groups, ",.1f")
    style = POLICY_STYLES.get(optimum)
    ax.axhline(0.0, color=style.color if style else "black", lw=1.2, label=f"{optimum} (0 by definition)")
    summary = evaluation.metric(REGRET)
    interval = "" if summary.ci_low is None else f" [{summary.ci_low:,.1f}, {summary.ci_high:,.1f}]"
    note = ""
    if len(sop):
        sop_regret = float(evaluation.baselines["sop"][REGRET])
        note = f"\nthe standard operating policy loses {sop_regret:,.0f} a scenario (not drawn)"
    ax.set(
        title=f"Return lost to {evaluation.optimum_label}, scenario by scenario ({evaluation.episodes} test "
        f"scenarios, the same for every policy)\nfinal networks: mean {summary.mean:,.1f}{interval} over "
        f"{evaluation.seeds} seeds{note}",
        ylabel=f"{optimum} return minus the agent's, per scenario",
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return figure


def read_training_log(folder: Path) -> dict[str, pd.DataFrame]:
    """Every metric group's CSV of the training log, by group name.

    :raises StageFailed: a group every training writes (:data:`REQUIRED_LOG_GROUPS`) is missing,
        or a file cannot be read.
    """
    for group in REQUIRED_LOG_GROUPS:
        _require(folder / group.file, WRITTEN_BY["train_log"])
    return {path.stem: _read(read_csv, path) for path in sorted(folder.glob("*.csv"))}


def _require(path: Path, stage: str) -> None:
    if not path.is_file():
        raise StageFailed(f"{path} is missing: run the {stage} stage first")


def _read(reader: Callable[[Path], T], path: Path) -> T:
    """``reader(path)``, failing in one line when the file cannot be parsed."""
    try:
        return reader(path)
    except ValueError as error:  # pandas' and json's parse errors
        raise StageFailed(f"{path} cannot be read ({str(error).splitlines()[0]})") from None


def _read_states(path: Path) -> pd.DataFrame:
    """The per-state table, empty (no columns) for an environment without an exact account."""
    try:
        return read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def read_inputs(
    paths: PathsConfig,
) -> tuple[dict[str, pd.DataFrame], Evaluation, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The training log, the evaluation, the test episodes, the trajectories and the shipped agent's states.

    :raises StageFailed: an input is missing or cannot be read; nothing has been written.
    """
    for name in ("eval_metrics", "eval_episodes", "trajectories", "policy_states"):
        _require(Path(getattr(paths, name)), WRITTEN_BY[name])
    log = read_training_log(Path(paths.train_log))
    evaluation = Evaluation.from_json(_read(read_json, Path(paths.eval_metrics)))
    episodes, trajectories = _read(read_csv, Path(paths.eval_episodes)), _read(read_csv, Path(paths.trajectories))
    return log, evaluation, episodes, trajectories, _read(_read_states, Path(paths.policy_states))


def save_figures(figures: dict[str, Figure], folder: Path) -> list[Path]:
    """Write each figure as a PNG into ``folder`` (replacing what was there) and close it."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):
        if stale.name not in figures:
            stale.unlink()
    written = []
    for name, figure in figures.items():
        path = folder / name
        write_atomic(path, partial(figure.savefig, dpi=110, format="png"))
        plt.close(figure)
        written.append(path)
    return written


def run(argv: Sequence[str] | None = None) -> None:
    stage = open_stage("plot", "Draw the training and evaluation figures as PNG files.", PATHS, PARAMS, argv)
    config, snapshot, tracking, trained = stage.config, stage.snapshot, stage.tracking, stage.trained
    paths = config.paths
    log, evaluation, episodes, trajectories, states = read_inputs(paths)  # before the run is joined or a file written
    env_profile = profile(config.env)
    tracking.attach(trained.run_ids)
    with tracking.finishing():
        figures = {
            "training_curves.png": training_curves(log, trained),
            "evaluation_returns.png": evaluation_returns(episodes, evaluation),
        }
        if env_profile.optimum_baseline is not None and REGRET in evaluation.agents["final"]:
            figures["regret.png"] = regret(episodes, evaluation, env_profile.optimum_baseline)
        figures |= env_profile.figures(config.env, trajectories, episodes, states)
        if evaluation.trade_offs is not None:
            figures["front.png"] = env_profile.trade_off_figure(config.env, evaluation.trade_offs.figure_input())
        plots = Path(paths.plots)
        with OutputSet([plots]) as outputs:
            written = save_figures(figures, outputs.path(plots))
            if (changed := snapshot.check_unchanged("plot", PARAMS)) is not None:
                raise StageFailed(changed)
        tracking.publish([(plots, "figures")])
    print(f"{len(written)} figures written to {paths.plots}/: " + ", ".join(path.name for path in written))


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)


if __name__ == "__main__":
    exit_process(main())
