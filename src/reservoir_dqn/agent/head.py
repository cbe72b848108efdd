"""What an output head of the stacked Q-networks is, and the registry of heads by the name ``dqn.head`` gives.

A head is declared once, where it is implemented: ``register_head("dueling", StackedDuelingHead)``
(:mod:`.dueling`); a user's own head registers the same way before params.yaml is loaded, and
``dqn.head`` accepts its name. :mod:`.network` builds the registered head of a spec.
"""

from __future__ import annotations

import torch

from reservoir_dqn.config.variants import Variants

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


# The heads by name: each one's module class (``None``: the plain head, the MLP's last linear layer).
HEADS: Variants[type[StackedHead] | None] = Variants("dqn.head")
PLAIN = "plain"


def register_head(name: str, head: type[StackedHead] | None, *, replace: bool = False) -> None:
    """Make ``name`` a value of ``dqn.head``: the stacked Q-networks end in ``head`` (``agents, width, actions``)."""
    HEADS.register(name, head, replace=replace)


register_head(PLAIN, None)  # Mnih et al., 2015: a linear layer, part of the MLP
