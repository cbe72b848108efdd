"""Exploration: epsilon-greedy with each agent's own random stream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.data import Categorical
from torchrl.envs.utils import ExplorationType, exploration_type
from torchrl.modules import EGreedyModule


class PerAgentEGreedy(EGreedyModule):
    """Epsilon-greedy exploration whose noise each agent draws from its own generator.

    TorchRL's :class:`~torchrl.modules.EGreedyModule` draws from the global generator, so
    agent ``k``'s noise would change with the number of agents. Here the batch (agent-major,
    ``agents x envs``) is split by agent, and agent ``k`` draws its uniforms, then its random
    actions, from ``generators[k]``. Epsilon and its annealing are the parent's.
    """

    def __init__(self, spec: Categorical, agent_generators: Sequence[torch.Generator], **kwargs: Any) -> None:
        super().__init__(spec, **kwargs)
        self.generators = list(agent_generators)
        self.num_actions = int(spec.space.n)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if exploration_type() not in (ExplorationType.RANDOM, None):
            return tensordict
        action: torch.Tensor = tensordict.get(self.action_key)
        envs, remainder = divmod(action.shape[0], len(self.generators))
        if remainder:
            raise ValueError(f"a batch of {action.shape[0]} is not {len(self.generators)} agents' environments")
        uniforms, randoms = [], []
        for generator in self.generators:
            uniforms.append(torch.rand(envs, generator=generator))
            randoms.append(torch.randint(self.num_actions, (envs,), generator=generator))
        explore = torch.cat(uniforms).to(action.device) < self.eps
        random_actions = torch.cat(randoms).to(device=action.device, dtype=action.dtype)
        tensordict.set(self.action_key, torch.where(explore, random_actions, action))
        return tensordict
