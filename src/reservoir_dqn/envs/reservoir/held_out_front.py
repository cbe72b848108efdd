"""The trade-off on the held-out record: where the agents and the SDP land against what those years allowed.

On the fitted chain the front is exact (:mod:`.front`). On real years the bound is foresight:
for each weight ``lam`` (the same scalarisation, :func:`.front.weighted`: spill and violation
keep their configured penalties), the deterministic DP that knows every held-out window's
inflows (:func:`.sdp.foresight`) maximises each window's scalarised return, so no policy,
knowing or not, earns more of that scalarised return on those windows. Its energy and deficit
are where that best lies; a point that another weight's point beats on both (at ``lam = 0``
energy carries no weight, so its ties fall anywhere) is kept in the JSON and left off the
drawn curve. Beside it, the Markov SDP
solved at each ``lam`` and replayed on the same windows (the model's front, lived on real
years), the standard operating policy, and each agent, every figure the mean over the windows
in GWh and hm3 a year, and each point's scalarised return per window at its weight (the
configured reward's terms, energy and deficit weighted as the front weighs them).

The weights are a grid, not optimistic linear support: between two grid points the foresight
curve is drawn as the segment between them, which the true front may bulge above.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict.nn import TensorDictModuleBase

from reservoir_dqn.envs.reservoir.baselines import SDPPolicy, StandardOperatingPolicy
from reservoir_dqn.envs.reservoir.front import weighted
from reservoir_dqn.envs.reservoir.replay import ForesightPolicy, RecordReplay
from reservoir_dqn.envs.reservoir.sdp import foresight, solve

GRID = 21  # weights lam = 0, 0.05, ..., 1


def yearly(
    replay: RecordReplay, policy: TensorDictModuleBase, copies: int = 1, lam: float = 0.5
) -> list[dict[str, float]]:
    """Each of ``copies`` stacked policies' energy, deficit and spill on the held-out windows, means over the windows
    a year's worth, and its scalarised return at ``lam`` per window (reward units, :func:`.front.utility`'s)."""
    episodes = replay.episodes(policy, copies=copies)
    columns = replay.profile.episode_columns(replay.config, episodes)
    years, count = replay.horizon / 12, len(replay.windows)

    def mean(key: str) -> torch.Tensor:
        return columns[key].double().view(copies, count).mean(dim=1)

    utility = (
        2.0 * lam * mean("reward_energy")
        + 2.0 * (1.0 - lam) * mean("reward_deficit")
        + mean("reward_spill")
        + mean("reward_violation")
    )
    return [
        {
            "energy_gwh_per_year": float(energy) / years,
            "deficit_hm3_per_year": float(deficit) / years,
            "spill_hm3_per_year": float(spill) / years,
            "utility_per_window": float(value),
        }
        for energy, deficit, spill, value in zip(
            mean("energy_gwh"), mean("deficit_hm3"), mean("spill_hm3"), utility, strict=True
        )
    ]


def held_out_front(replay: RecordReplay, agents: dict[str, tuple[TensorDictModuleBase, int]]) -> dict[str, Any]:
    """The foresight front and the Markov SDP's points at :data:`GRID` weights on ``replay``'s held-out windows,
    the configured SDP, SOP and every agent of each ``name -> (stacked network, agents)``."""
    model = replay.model
    windows = replay.windows
    foresight_points, sdp_points = [], []
    for step in range(GRID):
        lam = step / (GRID - 1)
        scalarised = weighted(model, lam)
        table = foresight(scalarised, windows.inflows, windows.classes[:, -1]).policy
        foresight_points.append({"lam": lam, **yearly(replay, ForesightPolicy(table), lam=lam)[0]})
        sdp_points.append({"lam": lam, **yearly(replay, SDPPolicy(solve(scalarised)), lam=lam)[0]})
    return {
        "windows": list(replay.starts),
        "objectives": "energy (GWh a year, more is better) against supply deficit (hm3 a year, less is better), "
        "means over the held-out windows",
        "foresight": foresight_points,
        "sdp": sdp_points,
        "sop": yearly(replay, StandardOperatingPolicy(model))[0],
        "agents": {name: yearly(replay, network, copies) for name, (network, copies) in agents.items()},
    }
