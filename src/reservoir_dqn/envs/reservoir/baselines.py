"""The reservoir's baseline policies: the standard operating policy (SOP) and the SDP optimum (and random).

Each is a TensorDict module that reads the environment's keys and writes ``action``, so the
evaluation runs it exactly like the trained agent.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

from reservoir_dqn.envs.baselines import RandomPolicy
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.sdp import SDPSolution, solve
from reservoir_dqn.envs.reservoir.settings import ReservoirConfig


class StandardOperatingPolicy(TensorDictModuleBase):
    """Release the month's demand; the environment cuts it to what is there and spills the excess.

    The target is the smallest release level that meets the demand (the default levels
    contain every monthly demand). When storage plus inflow falls short, the environment
    releases everything available; above capacity it spills. This is the textbook SOP.
    """

    def __init__(self, model: ReservoirModel) -> None:
        super().__init__()
        self.in_keys, self.out_keys = ["month"], ["action"]
        levels = model.release_levels
        meets = levels.unsqueeze(0) >= model.demand.unsqueeze(1)  # [12, A]
        first = meets.float().argmax(dim=1)  # first level that meets the demand
        self.register_buffer("action_by_month", torch.where(meets.any(dim=1), first, len(levels) - 1))

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return tensordict.set("action", self.action_by_month[tensordict.get("month")])


class SDPPolicy(TensorDictModuleBase):
    """The optimal policy: look up the SDP table at the current time step, storage and last inflow class."""

    def __init__(self, solution: SDPSolution) -> None:
        super().__init__()
        self.in_keys, self.out_keys = ["time_step", "storage", "inflow_class"], ["action"]
        self.register_buffer("table", solution.policy)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        time_step = tensordict.get("time_step").clamp(max=self.table.shape[0] - 1)
        storage = tensordict.get("storage").round().long()
        # An independent inflow's table has one class column: the class does not matter.
        inflow_class = tensordict.get("inflow_class").clamp(max=self.table.shape[2] - 1)
        return tensordict.set("action", self.table[time_step, storage, inflow_class])


@lru_cache(maxsize=8)
def reservoir_optimum(config: ReservoirConfig) -> SDPSolution:
    """The SDP solution of the reservoir described by ``config`` (solved once per process)."""
    return solve(ReservoirModel.from_config(config))


def reservoir_baselines(config: ReservoirConfig, seed: int) -> dict[str, TensorDictModuleBase]:
    """The SDP optimum, the SOP and a random policy (seeded with ``seed``) for the reservoir ``config``."""
    model = ReservoirModel.from_config(config)
    return {
        "sdp": SDPPolicy(reservoir_optimum(config)),
        "sop": StandardOperatingPolicy(model),
        "random": RandomPolicy(model.num_actions, seed),
    }
