"""A trained agent as it leaves the pipeline: plain tensors in, its action's value and the Q-values out.

What the export stage writes as ONNX (and registers), free of TorchRL's TensorDict plumbing
and of the training's stacked agents.
"""

from __future__ import annotations

import copy

import torch
from torchrl.modules import QValueActor

from reservoir_dqn.agent import q_module


class OperatorPolicy(torch.nn.Module):
    """One trained agent (or a solved policy's Q-table) as an operator runs it: raw observations in; its action's
    value and the Q-values out.

    ``action_values[a]`` is what action ``a`` means in the environment's own units (the
    reservoir's release target in hm3 per month; elsewhere the action's index), so the output
    needs no table to read. What :mod:`reservoir_dqn.commands.export` writes as ONNX and registers.
    """

    action_values: torch.Tensor

    def __init__(self, q_network: QValueActor, action_values: torch.Tensor) -> None:
        super().__init__()
        self.q_values = copy.deepcopy(q_module(q_network)).cpu().eval()
        self.register_buffer("action_values", action_values.detach().float().cpu())
        self.eval()

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        action_values: torch.Tensor = self.q_values(observation)
        return self.action_values[action_values.argmax(dim=-1)], action_values
