"""Seeded evaluation episodes: run a policy on N environments, one episode each.

Episode ``i`` of an evaluation seeded with ``s`` runs sub-environment ``i`` seeded with
``s + i``, so every policy evaluated with the same seed faces the same scenarios.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from reservoir_dqn.config import EnvConfig
from reservoir_dqn.envs import RESERVOIR, SUCCESS_COUNTS, episode_limit, episode_success, make_env
from reservoir_dqn.envs.reservoir import INFO_KEYS


@dataclass(frozen=True)
class Episodes:
    """The first episode of each evaluation environment.

    :ivar steps: the rollout, shape ``[episodes, T]``, with a boolean ``valid`` entry that is
        true for steps of the first episode (later steps belong to episodes that started
        after it and are ignored).
    :ivar returns: undiscounted return of each episode, shape ``[episodes]``.
    :ivar lengths: number of steps of each episode, shape ``[episodes]``.
    """

    steps: TensorDictBase
    returns: torch.Tensor
    lengths: torch.Tensor


def run_episodes(config: EnvConfig, policy: TensorDictModuleBase, episodes: int, seed: int) -> Episodes:
    """Run ``policy`` greedily (exploration off) for one episode in each of ``episodes`` environments.

    :param config: the environment section.
    :param policy: a TensorDict module writing ``action`` from ``observation``.
    :param episodes: number of episodes (= environments stepped together).
    :param seed: seed of episode 0; episode ``i`` uses ``seed + i``.
    """
    env = make_env(config, episodes)
    try:
        env.set_seed(seed)
        with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
            steps = env.rollout(episode_limit(config), policy, break_when_any_done=False)
    finally:
        env.close()
    done = steps["next", "done"].squeeze(-1)
    if not bool(done.any(dim=1).all()):
        raise RuntimeError("an evaluation episode did not end within the episode limit")
    # A step is valid until (and including) the first done flag of its environment.
    valid = (done.long().cumsum(dim=1) - done.long()) == 0
    steps.set("valid", valid)
    last = done.float().argmax(dim=1)
    rows = torch.arange(episodes)
    returns = steps["next", "episode_reward"].squeeze(-1)[rows, last]
    lengths = steps["next", "step_count"].squeeze(-1)[rows, last]
    return Episodes(steps=steps, returns=returns, lengths=lengths)


def summarize_returns(returns: torch.Tensor, lengths: torch.Tensor, success: torch.Tensor) -> dict[str, float]:
    """Mean, std, min and max return, mean length and success rate of a set of episodes."""
    values = returns.double()
    return {
        "return_mean": float(values.mean()),
        "return_std": float(values.std(unbiased=False)) if len(values) > 1 else 0.0,
        "return_min": float(values.min()),
        "return_max": float(values.max()),
        "length_mean": float(lengths.double().mean()),
        "success_rate": float(success.double().mean()) if len(success) else math.nan,
    }


def success(config: EnvConfig, episodes: Episodes) -> torch.Tensor:
    """Which evaluation episodes succeeded (see :func:`reservoir_dqn.envs.episode_success`)."""
    return episode_success(config, episodes.returns, episodes.lengths, episode_totals(config, episodes))


def episode_totals(config: EnvConfig, episodes: Episodes) -> dict[str, torch.Tensor]:
    """Per-episode sums of the reservoir's physical quantities and reward components (empty for others)."""
    if config.name != RESERVOIR:
        return {}
    valid = episodes.steps["valid"].double()
    nxt = episodes.steps["next"]
    flows = [key for key in INFO_KEYS if key not in ("storage", *SUCCESS_COUNTS)]
    totals = {key: (nxt[key].double() * valid).sum(dim=1) for key in flows}
    storage = nxt["storage"].double()
    totals["storage_mean"] = (storage * valid).sum(dim=1) / valid.sum(dim=1)
    totals["storage_min"] = storage.masked_fill(~episodes.steps["valid"], float("inf")).min(dim=1).values
    totals["storage_max"] = storage.masked_fill(~episodes.steps["valid"], float("-inf")).max(dim=1).values
    # Running counts: their value at the episode's last step is the episode's total.
    last = episodes.lengths.long() - 1
    rows = torch.arange(len(last))
    totals |= {key: nxt[key][rows, last].double() for key in SUCCESS_COUNTS}
    return totals
