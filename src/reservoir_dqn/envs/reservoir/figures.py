"""The reservoir's figures, in the units water engineers read: hm3, m3/s, calendar months.

- ``trajectory.png``: one test episode month by month: storage against capacity and the
  minimum operating level; release against the demand (shortfalls shaded) with the inflow;
  spill. Flows in hm3 per month, with m3/s on the right axis.
- ``release_targets.png``: how often each release target was chosen, on a true scale.
- ``reward_components.png``: the mean episode reward split into energy, shortfall, spill and
  violation terms, per policy;
- ``policy_map.png``, ``policy_disagreement.png`` and ``value_lost.png``: the shipped agent's
  rule against the optimum's and its exact account (:mod:`.policy_figures`);
- ``held_out_trajectory.png`` (a record-driven reservoir): the first held-out window of the
  actual record, re-operated by the shipped agent, the Markov SDP and perfect foresight, in the
  layout of ``trajectory.png`` with calendar years.
"""

from __future__ import annotations

import calendar

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from reservoir_dqn.envs.baselines import POLICY_STYLES
from reservoir_dqn.envs.reservoir.policy_figures import policy_figures
from reservoir_dqn.envs.reservoir.settings import ReservoirConfig
from reservoir_dqn.envs.reservoir.split import load_split
from reservoir_dqn.envs.reservoir.windows import HELD_OUT_PREFIX, window_starts

SECONDS_PER_MONTH = 365.25 / 12 * 86_400
COMPONENTS = {
    "reward_energy": ("energy", "tab:green"),
    "reward_deficit": ("supply shortfall", "tab:red"),
    "reward_spill": ("spill", "tab:blue"),
    "reward_violation": ("below minimum storage", "tab:purple"),
}


def reservoir_figures(
    config: ReservoirConfig, trajectories: pd.DataFrame, episodes: pd.DataFrame, states: pd.DataFrame
) -> dict[str, Figure]:
    held_out = trajectories["policy"].str.startswith(HELD_OUT_PREFIX)
    test = trajectories[~held_out]
    figures = {
        "trajectory.png": trajectory(config, test),
        "release_targets.png": release_targets(config, test),
        "reward_components.png": reward_components(episodes),
    }
    if held_out.any():
        replayed = trajectories[held_out].assign(policy=trajectories["policy"].str.removeprefix(HELD_OUT_PREFIX))
        figures["held_out_trajectory.png"] = trajectory(config, replayed, first_year=_first_year(config))
    return figures | policy_figures(config, states)


def _first_year(config: ReservoirConfig) -> int:
    """The calendar year of the first held-out window's first month (:mod:`.split`).

    (A record fitted whole has no held-out window, so no held-out rows either.)
    """
    record, split = load_split(config)
    assert split.held_out is not None
    return int(record.years[window_starts(record, split, "held_out", config.horizon_months, config.start_month)[0]])


def _to_m3s(hm3_per_month: ArrayLike) -> ArrayLike:
    return np.asarray(hm3_per_month) * (1e6 / SECONDS_PER_MONTH)


def _to_hm3(m3_per_second: ArrayLike) -> ArrayLike:
    return np.asarray(m3_per_second) / (1e6 / SECONDS_PER_MONTH)


def _per_second(ax: Axes) -> None:
    """A right-hand axis in m3/s for an axis of hm3 per month."""
    ax.secondary_yaxis("right", functions=(_to_m3s, _to_hm3)).set_ylabel("m³/s (monthly mean)")


def _month_axis(ax: Axes, months: np.ndarray, calendar_months: np.ndarray, first_year: int | None = None) -> None:
    """Ticks at the start of each water year (labelled 'Oct, year 1', or 'Oct 2005') and every quarter in between."""
    starts = months[calendar_months == calendar_months[0]]
    first = calendar.month_abbr[int(calendar_months[0]) + 1]
    years = [f"year {index + 1}" if first_year is None else str(first_year + index) for index in range(len(starts))]
    ax.set_xticks(starts, [f"{first}\n{year}" for year in years])
    ax.set_xticks(months[::3], minor=True)
    ax.set_xlim(months[0] - 0.5, months[-1] + 0.5)


def trajectory(config: ReservoirConfig, rows: pd.DataFrame, episode: int = 0, first_year: int | None = None) -> Figure:
    """Test episode ``episode`` month by month for each policy written to the trajectory file.

    :param first_year: the calendar year the episode starts in, when it is the actual record.
    """
    rows = rows[rows["episode"] == episode]
    policies = [name for name in POLICY_STYLES if name in set(rows["policy"])]
    figure, (storage, flows, spill) = plt.subplots(
        3, 1, figsize=(14, 9), sharex=True, height_ratios=(3, 3, 1.6), layout="constrained"
    )
    reference = rows[rows["policy"] == policies[0]]
    months = reference["step"].to_numpy()
    for name in policies:
        steps = rows[rows["policy"] == name]
        color, label = POLICY_STYLES[name].color, POLICY_STYLES[name].label
        storage.plot(steps["step"], steps["storage_hm3"], color=color, label=label)
        flows.step(steps["step"], steps["release_hm3"], where="mid", color=color, label=f"release, {label}")
    unit = config.unit_hm3
    storage.axhline(config.capacity * unit, color="black", linestyle="--", linewidth=1, label="capacity")
    storage.axhline(config.min_storage * unit, color="tab:red", linestyle=":", linewidth=1.2, label="minimum level")
    start = calendar.month_abbr[config.start_month + 1]
    where = f"Test episode {episode}" if first_year is None else f"The held-out record from {start} {first_year}"
    storage.set(title=f"{where}: storage at the end of each month", ylabel="storage (hm³)")
    storage.set_ylim(0, config.capacity * unit * 1.08)
    flows.fill_between(months, reference["inflow_hm3"], step="mid", color="lightsteelblue", alpha=0.6, label="inflow")
    flows.step(
        months, reference["demand_hm3"], where="mid", color="black", linestyle="--", linewidth=1.2, label="demand"
    )
    for name in policies:
        steps = rows[rows["policy"] == name]
        short = steps["release_hm3"] < steps["demand_hm3"] - 1e-9
        flows.scatter(
            steps["step"][short],
            steps["release_hm3"][short],
            marker="v",
            s=30,
            color=POLICY_STYLES[name].color,
            edgecolor="black",
            zorder=4,
        )
    flows.scatter([], [], marker="v", s=30, color="white", edgecolor="black", label="month with a shortfall")
    flows.set(title="Release against the demand, and the inflow", ylabel="hm³ per month")
    _per_second(flows)
    width = 0.8 / len(policies)
    for offset, name in enumerate(policies):
        steps = rows[rows["policy"] == name]
        position = steps["step"] + (offset - (len(policies) - 1) / 2) * width
        spill.bar(
            position, steps["spill_hm3"], width=width, color=POLICY_STYLES[name].color, label=POLICY_STYLES[name].label
        )
    spill.set(title="Spill over the crest", ylabel="hm³ per month")
    _per_second(spill)
    _month_axis(spill, months, reference["month"].to_numpy(), first_year)
    spill.set_xlabel("month of the episode (water years start in October)")
    for ax in (storage, flows, spill):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.07, 1.0))
    return figure


def release_targets(config: ReservoirConfig, rows: pd.DataFrame) -> Figure:
    """Share of months in which each release target was chosen, per policy, on the true release scale."""
    unit = config.unit_hm3
    levels = np.asarray(config.release_levels, dtype=float) * unit
    policies = [name for name in POLICY_STYLES if name in set(rows["policy"])]
    figure, ax = plt.subplots(figsize=(11, 4.5), layout="constrained")
    width = 0.8 * float(np.diff(levels).min()) / len(policies)
    for offset, name in enumerate(policies):
        chosen = rows[rows["policy"] == name]["action"].to_numpy()
        share = np.bincount(chosen, minlength=len(levels)) / max(len(chosen), 1)
        ax.bar(
            levels + (offset - (len(policies) - 1) / 2) * width,
            share,
            width=width,
            color=POLICY_STYLES[name].color,
            label=POLICY_STYLES[name].label,
        )
    ax.set_xticks(levels, [f"{level:g}" for level in levels])
    ax.set(
        title="Release targets chosen in the written test episodes",
        xlabel="release target (hm³ per month)",
        ylabel="share of months",
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars can stand anywhere
    ax.grid(alpha=0.3, axis="y")
    return figure


def reward_components(episodes: pd.DataFrame) -> Figure:
    """The mean test-episode reward of each policy, split into its weighted components."""
    policies = [name for name in POLICY_STYLES if name in set(episodes["policy"])]
    means = episodes.groupby("policy")[[*COMPONENTS, "return"]].mean().loc[policies]
    figure, ax = plt.subplots(figsize=(10, 5), layout="constrained")
    labels = [POLICY_STYLES[name].label.replace(" (shipped agent)", "\n(all agents)") for name in policies]
    positive, negative = np.zeros(len(policies)), np.zeros(len(policies))
    for component, (label, color) in COMPONENTS.items():
        values = means[component].to_numpy()
        ax.bar(labels, values, bottom=np.where(values >= 0, positive, negative), color=color, label=label)
        positive += np.clip(values, 0, None)
        negative += np.clip(values, None, 0)
    ax.scatter(labels, means["return"], color="black", zorder=3, label="return (their sum)")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.margins(y=0.08)
    ax.set(title="Reward components, mean per test episode", ylabel="reward per episode (GWh-equivalent)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3, axis="y")
    return figure
