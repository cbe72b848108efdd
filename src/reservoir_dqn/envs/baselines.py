"""The baseline every environment has, the random policy, and how each policy appears in figures.

A baseline is a TensorDict module that reads the environment's keys and writes ``action``,
so the evaluation runs it exactly like the trained agent. The reservoir's own baselines (the
standard operating policy and the SDP optimum) are :mod:`.reservoir.baselines`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase


@dataclass(frozen=True)
class Style:
    """How a policy appears in the figures and their legends."""

    label: str
    color: str


# Every policy's label and colour in the figures, declared once: the shipped agent and each baseline.
POLICY_STYLES = {
    "dqn": Style("DQN (shipped agent)", "tab:blue"),
    "sdp": Style("SDP optimum", "tab:green"),
    "sop": Style("standard operating policy", "tab:orange"),
    "random": Style("random policy", "tab:gray"),
    "foresight": Style("perfect foresight (the bound)", "tab:purple"),
}


class RandomPolicy(TensorDictModuleBase):
    """Uniformly random actions, from its own seeded generator."""

    def __init__(self, num_actions: int, seed: int) -> None:
        super().__init__()
        self.in_keys, self.out_keys = ["observation"], ["action"]
        self.num_actions = num_actions
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = torch.randint(self.num_actions, tensordict.batch_size, generator=self.generator)
        return tensordict.set("action", action)
