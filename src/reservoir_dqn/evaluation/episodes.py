"""Seeded greedy episodes: every policy, and every agent, on the same scenarios.

Episode ``i`` of an evaluation seeded ``s`` runs in an environment copy seeded ``s + i``,
whichever policy or agent plays it, so all of them face the same inflows (or initial
states). N agents are evaluated together in one batched environment of ``N x episodes``
copies, laid out agent-major like everything else.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from tensordict.nn import TensorDictModuleBase

from reservoir_dqn.config import EnvConfig
from reservoir_dqn.envs import EnvProfile, Episodes
from reservoir_dqn.envs.rollouts import run_episodes
from reservoir_dqn.evaluation.scoring import EXACT_GAP, EXACT_RETURN, EXACT_Z, REGRET, REGRET_SE, Reference

if TYPE_CHECKING:
    from reservoir_dqn.envs.reservoir.account import Account


def run_agents(
    profile: EnvProfile, config: EnvConfig, q_network: TensorDictModuleBase, agents: int, episodes: int, seed: int
) -> list[Episodes]:
    """Each of the ``agents`` stacked networks plays ``episodes`` episodes seeded ``seed, seed + 1, ...``."""
    everyone = run_episodes(
        profile, config, q_network, [seed + index for _ in range(agents) for index in range(episodes)]
    )
    return [everyone.part(agent * episodes, (agent + 1) * episodes) for agent in range(agents)]


def describe(profile: EnvProfile, config: EnvConfig, episodes: Episodes) -> dict[str, float]:
    """Return statistics and the environment's own metrics of one policy's episodes."""
    returns = episodes.returns.double()
    return {
        "return": float(returns.mean()),
        "return_std": float(returns.std(unbiased=False)),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "length": float(episodes.lengths.double().mean()),
        **profile.policy_metrics(config, episodes),
    }


def paired_regret(episodes: Episodes, optimum: Episodes) -> dict[str, float]:
    """The optimum's return minus the policy's, scenario by scenario (same seeds), averaged, with its standard error.

    The scenarios' own spread (a dry decade against a wet one) is common to both returns and
    cancels in each difference, so the regret's error is a fraction of the returns'.
    """
    difference = optimum.returns.double() - episodes.returns.double()
    return {REGRET: float(difference.mean()), REGRET_SE: _standard_error(difference)}


def exact_metrics(account: Account, episodes: Episodes) -> dict[str, float]:
    """The exact expected return of an agent's greedy policy, its gap to the optimum, and how many standard
    errors of the Monte Carlo test mean (``episodes``) it is from that mean.

    The standard error is floored at a millionth of the mean's magnitude (the episodes' returns are
    float32 sums), so that episodes that all return the same give a finite ``exact_z``.
    """
    returns = episodes.returns.double()
    mean = float(returns.mean())
    error = max(_standard_error(returns), 1e-6 * max(1.0, abs(mean)))
    return {
        EXACT_RETURN: account.policy_return,
        EXACT_GAP: account.gap,
        EXACT_Z: (account.policy_return - mean) / error,
    }


def _standard_error(values: torch.Tensor) -> float:
    """The standard error of the mean of ``values`` (0 for a single value)."""
    return float(values.std() / math.sqrt(len(values))) if len(values) > 1 else 0.0


def reference(
    profile: EnvProfile, config: EnvConfig, num_actions: int, episodes: int, seed: int
) -> tuple[Reference, dict[str, Episodes]]:
    """Run the baselines on ``episodes`` scenarios seeded from ``seed``; the score's reference and their episodes."""
    played = {
        name: run_episodes(profile, config, policy, [seed + index for index in range(episodes)])
        for name, policy in profile.baselines(config, num_actions, seed).items()
    }
    means = {name: float(result.returns.double().mean()) for name, result in played.items()}
    return Reference(means["random"], profile.optimum_return(config, means)), played
