"""The shipped agent's policy read as an operating rule, and its exact account against the SDP optimum.

Drawn from the per-state table the evaluate stage writes (``logs/policy_states.csv``:
:meth:`~reservoir_dqn.envs.reservoir.profile.ReservoirProfile.state_rows`), in hm3, hm3 per
month and calendar months:

- ``policy_map.png``: the release target in each (storage, month) state in the first, a
  middle and the last water year of the horizon, the agent's above the optimum's (the
  rule-curve view of reservoir operation); with a persistent inflow, at the middle class;
- ``policy_disagreement.png``: over the whole horizon, the agent's release target minus the
  optimum's, faded where the agent's own policy seldom or never goes (relative to the storage it
  is likeliest to be at in that month);
- ``value_lost.png``: where the gap to the optimum comes from, exactly (:mod:`.account`): by
  calendar month, by storage, and the states that cost the most.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure

from reservoir_dqn.envs.reservoir.settings import ReservoirConfig

MONTHS = 12


@dataclass(frozen=True)
class Names:
    """What the figures call the policy and the optimum it is measured against."""

    policy: str = "DQN (shipped agent)"  # a map's panel
    short: str = "DQN"  # a colour bar's label, the costliest states' lines
    subject: str = "the shipped agent"  # in the titles' sentences
    again: str = "the agent"  # the subject, named again
    optimum: str = "SDP optimum"


SHIPPED = Names()


def policy_figures(config: ReservoirConfig, states: pd.DataFrame, names: Names = SHIPPED) -> dict[str, Figure]:
    """The three figures of the per-state table ``states`` (none when it is empty)."""
    if states.empty:
        return {}
    return {
        "policy_map.png": policy_map(config, states, names),
        "policy_disagreement.png": disagreement(config, states, names),
        "value_lost.png": value_lost(config, states, names),
    }


def _at_typical_class(states: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The states of the middle inflow class (all of them with an independent inflow) and how to say so."""
    if states["inflow_class"].astype(str).eq("-").all():
        return states, ""
    classes = states["inflow_class"].astype(int)
    middle = int(classes.max()) // 2
    return states[classes == middle], f", last month's inflow in its middle class ({middle} of 0-{int(classes.max())})"


def _grid(rows: pd.DataFrame, value: str) -> np.ndarray:
    """``[storage, time step]`` of one column of the per-state rows."""
    return np.asarray(rows.pivot(index="storage_hm3", columns="time_step", values=value).to_numpy(), dtype=float)


def _storage_extent(config: ReservoirConfig, first: float, last: float) -> tuple[float, float, float, float]:
    half = config.unit_hm3 / 2
    return (first - 0.5, last + 0.5, -half, config.capacity * config.unit_hm3 + half)


def policy_map(config: ReservoirConfig, states: pd.DataFrame, names: Names = SHIPPED) -> Figure:
    """Release target by storage and month in three water years: the policy's above the optimum's."""
    rows, which = _at_typical_class(states)
    horizon = int(states["time_step"].max()) + 1
    years = horizon // MONTHS
    chosen = sorted({0, years // 2, years - 1}) if years else [0]
    norm = Normalize(0.0, float(max(states["release_hm3"].max(), states["sdp_release_hm3"].max())))
    size = (4.2 * len(chosen) + 1.5, 7.5)
    figure, axes = plt.subplots(2, len(chosen), figsize=size, layout="constrained", squeeze=False)
    image = None
    for column, year in enumerate(chosen):
        steps = rows[(rows["time_step"] >= year * MONTHS) & (rows["time_step"] < (year + 1) * MONTHS)]
        months = steps.drop_duplicates("time_step").sort_values("time_step")["month"].tolist()
        for line, (key, who) in enumerate((("release_hm3", names.policy), ("sdp_release_hm3", names.optimum))):
            ax = axes[line, column]
            image = ax.imshow(
                _grid(steps, key), origin="lower", aspect="auto", cmap="viridis", norm=norm,
                extent=_storage_extent(config, 0, len(months) - 1),
            )  # fmt: skip
            ax.set_xticks(range(len(months)), [name[0] for name in months])
            ax.set_title(f"{who}, water year {year + 1} of {years}", fontsize=10)
            ax.axhline(config.min_storage * config.unit_hm3, color="white", lw=0.8, ls="--")
            if column == 0:
                ax.set_ylabel("storage at the start of the month, hm³")
    assert image is not None
    figure.colorbar(image, ax=axes, label="release target, hm³/month", shrink=0.8)
    figure.suptitle(
        f"The operating rule: release target by storage and month{which}\n"
        f"months {months[0]} to {months[-1]}; dashed: minimum operating storage",
    )
    return figure


def disagreement(config: ReservoirConfig, states: pd.DataFrame, names: Names = SHIPPED) -> Figure:
    """The policy's release target minus the optimum's over the horizon, faded where the policy seldom goes."""
    frame = states.assign(
        difference=states["release_hm3"] - states["sdp_release_hm3"],
        weighted=(states["release_hm3"] - states["sdp_release_hm3"]) * states["visits"],
    )
    # With inflow classes: the visit-weighted difference over the classes (the middle class where never visited).
    grouped = frame.groupby(["storage_hm3", "time_step"], as_index=False).agg(
        visits=("visits", "sum"), weighted=("weighted", "sum")
    )
    typical, _ = _at_typical_class(frame)
    fallback = typical.set_index(["storage_hm3", "time_step"])["difference"]
    keys = pd.MultiIndex.from_frame(grouped[["storage_hm3", "time_step"]])
    visited = grouped["visits"].to_numpy() > 0
    difference = np.where(visited, grouped["weighted"] / np.where(visited, grouped["visits"], 1.0), fallback.loc[keys])
    grouped["difference"] = difference
    values, visits = _grid(grouped, "difference"), _grid(grouped, "visits")
    horizon = values.shape[1]
    # Opacity: 0.12 where the agent never goes, rising with the square root of how often it goes there,
    # relative to its likeliest storage in the same month (the first month has a single state).
    alpha = 0.12 + 0.88 * np.sqrt(visits / visits.max(axis=0, keepdims=True))
    limit = float(max(np.abs(values).max(), config.unit_hm3))
    figure, ax = plt.subplots(figsize=(13, 5.2), layout="constrained")
    image = ax.imshow(
        values, origin="lower", aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -limit, limit),
        alpha=alpha, extent=_storage_extent(config, 0, horizon - 1),
    )  # fmt: skip
    months = frame.drop_duplicates("time_step").sort_values("time_step")["month"].tolist()
    starts = [step for step in range(horizon) if months[step] == months[0]]
    ax.set_xticks(starts, [f"{months[0]}\nyear {index + 1}" for index in range(len(starts))])
    ax.axhline(config.min_storage * config.unit_hm3, color="black", lw=0.8, ls="--", label="minimum operating storage")
    figure.colorbar(image, ax=ax, label=f"{names.short} release target minus SDP's, hm³/month")
    agree = float((frame["difference"] == 0).mul(frame["visits"]).sum() / frame["visits"].sum())
    ax.set(
        xlabel="month of the horizon",
        ylabel="storage at the start of the month, hm³",
        title=f"Where {names.subject}'s rule departs from the optimum's (red: it releases more, blue: less)\n"
        f"faded where {names.again} seldom or never is that month; it picks the optimum's release in "
        f"{agree:.1%} of the months it operates (visit-weighted)",
    )
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.12), fontsize=8, frameon=False)
    return figure


def value_lost(config: ReservoirConfig, states: pd.DataFrame, names: Names = SHIPPED) -> Figure:
    """The exact gap to the optimum, by calendar month, by storage, and its costliest states."""
    frame = states.assign(expected=states["visits"] * states["value_lost"])
    gap = float(frame["expected"].sum())
    order = frame.drop_duplicates("time_step").sort_values("time_step")["month"].tolist()[:MONTHS]
    by_month = frame.groupby("month")["expected"].sum().reindex(order, fill_value=0.0)
    by_storage = frame.groupby("storage_hm3")["expected"].sum()
    figure, (months_ax, storage_ax, top_ax) = plt.subplots(
        1, 3, figsize=(15, 4.8), layout="constrained", gridspec_kw={"width_ratios": [1.1, 1.1, 0.9]}
    )
    months_ax.bar(range(len(by_month)), by_month.to_numpy(), color="tab:red")
    months_ax.set_xticks(range(len(by_month)), [name[:3] for name in by_month.index])
    months_ax.set(title="by calendar month (all years)", ylabel="expected return lost per episode")
    storage_ax.bar(by_storage.index, by_storage.to_numpy(), width=config.unit_hm3 * 0.9, color="tab:red")
    storage_ax.axvline(config.min_storage * config.unit_hm3, color="black", lw=0.8, ls="--")
    storage_ax.set(title="by storage at the start of the month (dashed: minimum)", xlabel="storage, hm³")
    for ax in (months_ax, storage_ax):
        ax.grid(alpha=0.3, axis="y")
    top = frame.nlargest(8, "expected")
    lines = [
        f"{row.month} of year {int(row.time_step) // MONTHS + 1}, {row.storage_hm3:,.0f} hm³"
        + ("" if str(row.inflow_class) == "-" else f", class {row.inflow_class}")
        + f": {row.expected:,.2f} ({names.short} {row.release_hm3:,.0f}, SDP {row.sdp_release_hm3:,.0f} hm³)"
        for row in top.itertuples()
    ]
    share = float(top["expected"].sum()) / gap if gap > 0 else 0.0
    top_ax.axis("off")
    top_ax.set_title(f"the {len(top)} costliest states ({share:.0%} of the gap)", fontsize=10)
    top_ax.text(0.0, 0.95, "\n".join(lines), va="top", fontsize=8.5, family="monospace", transform=top_ax.transAxes)
    figure.suptitle(
        f"Where {names.subject} loses value, exactly: {gap:,.2f} of expected return per episode "
        f"(the optimum's minus {names.again}'s)\neach state's share is the probability {names.again} is there times "
        "V* - Q*(its release) (the performance-difference identity)"
    )
    return figure
