"""``front.png``: the exact front of energy against supply deficit, with the agents, SOP and the configured optimum.

Left, the whole front; right, the neighbourhood of the configured optimum, where the agents
trained on the configured reward land. Energy in GWh a year (up is better), deficit in hm3 a
year (left is better); each agent's point is its greedy policy's exact expectation, and their
mean carries a 95% t interval over seeds in each direction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import stats

X, Y = "deficit_hm3_per_year", "energy_gwh_per_year"


GROUP_COLOURS = ("tab:blue", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def front_figure(result: dict[str, Any], env_name: str) -> Figure:
    figure, axes = plt.subplots(1, 2, figsize=(12.5, 5.2), layout="constrained")
    groups: dict[str, list[dict[str, Any]]] = {}
    for agent in result["agents"]:
        groups.setdefault(agent["model"], []).append(agent)
    names = group_names(list(groups))
    for axis in axes:
        _draw(axis, result)
        for (model, agents), colour in zip(groups.items(), GROUP_COLOURS * 4, strict=False):
            _agents(axis, agents, colour, names[model])
    _zoom(axes[1], result)
    axes[0].set_title("the whole front")
    axes[1].set_title("around the configured reward's optimum")
    handles, labels = axes[1].get_legend_handles_labels()  # one legend below both, covering no data
    figure.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    share = result["certificate_share"]
    figure.suptitle(
        f"{env_name}: energy against water supply, the exact front ({len(result['vertices'])} vertices)\n"
        f"certified: no weighting of the two can gain more than {100 * share:.2g}% of the configured optimum's "
        "utility over it",
        fontsize=11,
    )
    return figure


def group_names(models: list[str]) -> dict[str, str]:
    """Each model file by what tells it from the others (``lam-0.2`` of ``.../lam-0.2/models/agents/final.pt``);
    one file by its folder."""
    parts = [Path(model).parts for model in models]
    if not parts:
        return {}
    if len(parts) == 1:
        return {models[0]: Path(models[0]).parent.name or models[0]}
    prefix = 0
    while all(len(p) > prefix and p[prefix] == parts[0][prefix] for p in parts):
        prefix += 1
    suffix = 0
    while all(len(p) > prefix + suffix and p[-1 - suffix] == parts[0][-1 - suffix] for p in parts):
        suffix += 1
    return {model: "/".join(p[prefix : len(p) - suffix]) or model for model, p in zip(models, parts, strict=True)}


def _draw(axis: Axes, result: dict[str, Any]) -> None:
    vertices = result["vertices"]
    axis.plot(
        [v[X] for v in vertices], [v[Y] for v in vertices], "-o", color="black", markersize=3, linewidth=1,
        label="exact front (between vertices: mixtures of the two policies)",
    )  # fmt: skip
    sop, best = result["sop"], result["configured_optimum"]
    axis.plot(sop[X], sop[Y], "s", color="tab:orange", markersize=8, label="standard operating policy")
    axis.plot(best[X], best[Y], "*", color="tab:green", markersize=14, label="SDP optimum of the configured reward")
    if (picked := result.get("picked")) is not None:
        axis.plot(
            picked[X], picked[Y], "P", color="tab:purple", markersize=11,
            label=f"picked: the optimum at lam {picked['lam']:g} (front --pick)",
        )  # fmt: skip
    axis.set_xlabel("supply deficit, hm3 a year (less is better)")
    axis.set_ylabel("hydropower, GWh a year (more is better)")
    axis.grid(alpha=0.3)


def _agents(axis: Axes, agents: list[dict[str, Any]], colour: str, name: str) -> None:
    """One model file's agents: each final network's point, and their mean with its 95% interval over seeds."""
    x, y = np.array([a[X] for a in agents]), np.array([a[Y] for a in agents])
    axis.plot(x, y, "o", color=colour, alpha=0.45, markersize=6)
    axis.errorbar(
        x.mean(), y.mean(), xerr=_half_width(x), yerr=_half_width(y), fmt="D", color=colour, capsize=4,
        markersize=6, label=f"{name}: {len(x)} agents' final networks, mean and 95% interval",
    )  # fmt: skip


def _half_width(values: np.ndarray) -> float:
    if len(values) < 2:
        return 0.0
    return float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def _zoom(axis: Axes, result: dict[str, Any]) -> None:
    """Frame the configured optimum and the agents, with a margin, and the front's vertices nearby."""
    points = [result["configured_optimum"], *result["agents"], *([result["picked"]] if "picked" in result else [])]
    x, y = np.array([p[X] for p in points]), np.array([p[Y] for p in points])
    span_x = max(float(np.ptp(x)), 0.02 * max(1.0, float(abs(x).max())), 0.5)
    span_y = max(float(np.ptp(y)), 0.002 * float(abs(y).max()), 0.5)
    axis.set_xlim(max(x.min() - 0.6 * span_x, -0.05 * span_x), x.max() + 0.6 * span_x)  # no deficit below 0
    axis.set_ylim(y.min() - 0.6 * span_y, y.max() + 0.6 * span_y)


def held_out_front_figure(result: dict[str, Any], env_name: str) -> Figure:
    """``held_out_front.png``: the foresight front of the held-out years, the Markov SDP at the same weights, SOP
    and each model file's agents (:mod:`.held_out_front`); right, the neighbourhood of the configured weight's
    foresight and SDP points and the agents. Points another weight's point beats on both axes are not drawn."""
    figure, axes = plt.subplots(1, 2, figsize=(12.5, 5.6), layout="constrained")
    bound, sdp = undominated(result["foresight"]), undominated(result["sdp"])
    configured = {name: min(result[name], key=lambda point: abs(point["lam"] - 0.5)) for name in ("foresight", "sdp")}
    names = group_names(list(result["agents"]))
    for axis in axes:
        axis.plot(
            [p[X] for p in bound], [p[Y] for p in bound], "-o", color="black", markersize=3, linewidth=1,
            label=f"foresight: knowing these years' inflows (its best at {len(result['foresight'])} weights)",
        )  # fmt: skip
        axis.plot(
            [p[X] for p in sdp], [p[Y] for p in sdp], "--^", color="tab:green", markersize=4, linewidth=1,
            label="Markov SDP at the same weights (the fitted model's front, on these years)",
        )  # fmt: skip
        for name, colour, label in (("foresight", "black", "foresight"), ("sdp", "tab:green", "Markov SDP")):
            point = configured[name]
            axis.plot(
                point[X], point[Y], "*", color=colour, markersize=14, label=f"{label}, the configured reward"
            )  # fmt: skip
        sop = result["sop"]
        axis.plot(sop[X], sop[Y], "s", color="tab:orange", markersize=8, label="standard operating policy")
        for (model, agents), colour in zip(result["agents"].items(), GROUP_COLOURS * 4, strict=False):
            _agents(axis, agents, colour, names[model])
        axis.set_xlabel("supply deficit, hm3 a year (less is better)")
        axis.set_ylabel("hydropower, GWh a year (more is better)")
        axis.grid(alpha=0.3)
    agents = [agent for group in result["agents"].values() for agent in group]
    _zoom(axes[1], {"configured_optimum": configured["sdp"], "agents": [configured["foresight"], *agents]})
    axes[0].set_title("every policy")
    axes[1].set_title("around the configured reward")
    handles, labels = axes[1].get_legend_handles_labels()  # one legend below both, covering no data
    figure.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    first, last = result["windows"][0], result["windows"][-1]
    figure.suptitle(
        f"{env_name}: energy against water supply on the held-out record\n"
        f"{len(result['windows'])} overlapping windows starting {first} to {last}, means over the windows",
        fontsize=11,
    )
    return figure


def undominated(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points no other point beats on both axes (more energy and less deficit, one strictly), by deficit."""
    kept = [
        point
        for point in points
        if not any(
            other[Y] >= point[Y] and other[X] <= point[X] and (other[Y] > point[Y] or other[X] < point[X])
            for other in points
        )
    ]
    return sorted(kept, key=lambda point: (point[X], point[Y]))
