"""The dueling head (Wang et al., 2016): a state value and action advantages, per agent, over the last hidden layer.

``Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a')``: the mean keeps V and A identifiable (the
paper's equation 9). One module and one name (``dqn.head: dueling``) are the whole variant:
:mod:`.network` builds it, and the loss, the target and averaged weights, the model file and
the export see only the Q-values.
"""

from __future__ import annotations

import torch

from reservoir_dqn.agent.head import Layer, StackedHead, register_head


class StackedDuelingHead(StackedHead):
    """``agents`` dueling heads: ``[agents, k, width]`` -> ``[agents, k, actions]``."""

    def __init__(self, agents: int, width: int, actions: int) -> None:
        super().__init__(agents, width, actions)
        self.value_weight = torch.nn.Parameter(torch.empty(agents, width, 1))
        self.value_bias = torch.nn.Parameter(torch.empty(agents, 1, 1))
        self.advantage_weight = torch.nn.Parameter(torch.empty(agents, width, actions))
        self.advantage_bias = torch.nn.Parameter(torch.empty(agents, 1, actions))

    def layers(self) -> list[Layer]:
        """The value and the advantage layer, in the order each agent's generator initialises them."""
        return [
            (self.value_weight, self.value_bias, self.width),
            (self.advantage_weight, self.advantage_bias, self.width),
        ]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        value = torch.baddbmm(self.value_bias, hidden, self.value_weight)
        advantage = torch.baddbmm(self.advantage_bias, hidden, self.advantage_weight)
        return value + advantage - advantage.mean(dim=-1, keepdim=True)


register_head("dueling", StackedDuelingHead)
