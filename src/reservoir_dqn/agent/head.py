"""What an output head of the stacked Q-networks is (:mod:`.network` builds one by its name in ``dqn.head``)."""

from __future__ import annotations

import torch

Layer = tuple[torch.nn.Parameter, torch.nn.Parameter, int]  # weight [agents, in, out], bias [agents, 1, out], fan-in


class StackedHead(torch.nn.Module):
    """``agents`` heads over the last hidden layer: ``[agents, k, width]`` -> ``[agents, k, actions]`` Q-values.

    Every parameter carries the agent dimension first, as the hidden layers' do.
    """

    def __init__(self, agents: int, width: int, actions: int) -> None:
        super().__init__()
        self.agents, self.width, self.actions = agents, width, actions

    def layers(self) -> list[Layer]:
        """Its linear layers, in the order each agent's generator initialises them."""
        raise NotImplementedError
