"""Stochastic dynamic programming: the provably optimal policy of the reservoir MDP.

Backward induction over the exact finite MDP of :class:`~reservoir_dqn.envs.reservoir.DiscreteReservoirEnv`:
state (time step ``t``, storage ``s``), the month following from ``t``; the expectation is
over the month's equiprobable inflow classes. With ``V_H = 0``,

``Q_t(s, a) = mean_k [ r(s, a, q_k, m_t) + V_{t+1}(s'(s, a, q_k)) ]``,  ``V_t(s) = max_a Q_t(s, a)``.

``V_0(initial_storage)`` is the largest expected ``horizon_months`` return any policy can
achieve. Everything is vectorised over storages, actions and inflow classes in float64;
the default problem solves in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reservoir_dqn.envs.reservoir_model import MONTHS, ReservoirModel


@dataclass(frozen=True)
class SDPSolution:
    """Optimal values and policy.

    :ivar values: ``[H + 1, S]`` optimal expected return-to-go from time step ``t`` and storage ``s``.
    :ivar policy: ``[H, S]`` optimal action (release-level index); ties go to the smaller release.
    :ivar q_values: ``[H, S, A]`` expected return of each action, then acting optimally.
    """

    values: torch.Tensor
    policy: torch.Tensor
    q_values: torch.Tensor
    initial_storage: int

    @property
    def expected_return(self) -> float:
        """Optimal expected return of an episode from the initial storage."""
        return float(self.values[0, self.initial_storage])


def solve(model: ReservoirModel) -> SDPSolution:
    """Backward induction over the reservoir MDP described by ``model``."""
    config = model.config
    horizon, storages, actions = config.horizon_months, model.num_storages, model.num_actions
    storage = torch.arange(storages, dtype=torch.float64).view(storages, 1, 1)
    action = torch.arange(actions).view(1, actions, 1)
    # One-month outcomes for every calendar month: [12, S, A, K] rewards and next storages.
    rewards, next_storage = [], []
    for month in range(MONTHS):
        inflow = model.inflow_values[month].view(1, 1, -1)
        outcome = model.transition(storage, inflow, action, torch.tensor(month))
        rewards.append(outcome.reward)
        next_storage.append(outcome.next_storage.long())
    month_rewards, month_next = torch.stack(rewards), torch.stack(next_storage)

    values = torch.zeros(horizon + 1, storages, dtype=torch.float64)
    q_values = torch.zeros(horizon, storages, actions, dtype=torch.float64)
    for t in reversed(range(horizon)):
        month = (t + config.start_month) % MONTHS
        # Equiprobable inflow classes: the expectation is the mean over the last axis.
        q_values[t] = (month_rewards[month] + values[t + 1][month_next[month]]).mean(dim=-1)
        values[t] = q_values[t].max(dim=-1).values
    # argmax returns the first maximum: among equally good releases, the smallest.
    policy = q_values.argmax(dim=-1)
    return SDPSolution(values=values, policy=policy, q_values=q_values, initial_storage=config.initial_storage)
