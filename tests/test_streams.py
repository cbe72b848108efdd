"""Each agent's random draws are its own: the same whether it trains alone or beside others."""

from __future__ import annotations

import torch

from reservoir_dqn.config import Config
from reservoir_dqn.training.session import start


def _draws(config: Config, agents: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Agent 0's actions in its first collected batch (epsilon 1: all exploration) and its first replay rows."""
    session = start(config.model_copy(update={"train": config.train.model_copy(update={"seeds": agents})}), None)
    try:
        batch = session.rollout.collect()
        session.writer.write(batch)
        envs = config.env.num_envs
        actions = batch["action"].reshape(agents, envs, -1)[0]
        replayed = session.buffer.sample()["index"].reshape(agents, -1, 2)[0, :, 0]
        return actions, replayed
    finally:
        session.close()


def test_agent_zeros_exploration_and_replay_draws_are_the_same_with_1_or_3_agents(tiny_config: Config) -> None:
    assert float(tiny_config.dqn.eps_start) == 1.0
    alone_actions, alone_rows = _draws(tiny_config, 1)
    beside_actions, beside_rows = _draws(tiny_config, 3)
    assert torch.equal(alone_actions, beside_actions)
    assert torch.equal(alone_rows, beside_rows)
    assert len(torch.unique(alone_actions)) > 1  # the draws are random, not a constant that would match trivially
