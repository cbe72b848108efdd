"""The exact account of a greedy policy against the SDP optimum: what it loses, where and when.

The reservoir is a finite MDP whose optimal action values ``Q*`` the SDP computes
(:mod:`.sdp`). For any deterministic policy ``pi`` over the SDP's state (time step ``t``,
storage ``s``, class ``j`` of last month's inflow), the performance-difference identity
(Kakade and Langford, 2002, "Approximately optimal approximate reinforcement learning"), in
its finite-horizon, undiscounted form, reads

``V*_0 - V^pi_0 = sum_t sum_(s, j) d^pi_t(s, j) [V*_t(s, j) - Q*_t(s, j, pi_t(s, j))]``

where ``d^pi_t(s, j)`` is the probability that ``pi`` is in state ``(s, j)`` at time step
``t``, from the initial storage with the class of the month before the first drawn as the
environment draws it. Both sides are computed exactly and independently:

- ``V^pi_0`` by backward evaluation of ``pi`` (the SDP's recursion with ``pi``'s action in
  place of the best one): the policy's exact expected return, with no Monte Carlo noise;
- ``d^pi`` by propagating the state distribution forward through the MDP's transitions under
  ``pi``; weighted by each state's one-step loss ``V* - Q*(pi)``, it says where the gap to the
  optimum comes from: by month, by storage, and the few states that cost the most.

Their agreement to float64 rounding checks both. A greedy agent is such a policy: its
network is evaluated once on the observation of every state
(:meth:`~reservoir_dqn.envs.reservoir.model.ReservoirModel.observation`), and the action it
takes there is the action it takes whenever it is there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.records import MONTHS
from reservoir_dqn.envs.reservoir.sdp import SDPSolution, month_outcomes


@dataclass(frozen=True)
class Account:
    """One policy's exact expected return and where it falls short of the optimum.

    :ivar policy: ``[H, S, J]`` the policy's action (release-level index) in every state.
    :ivar visits: ``[H, S, J]`` the probability that the policy is in each state at each time step.
    :ivar loss: ``[H, S, J]`` what one step of the policy costs there: ``V*_t - Q*_t(pi_t)``, reward units.
    :ivar optimum_return: the SDP's expected return ``V*_0``.
    :ivar policy_return: the policy's exact expected return ``V^pi_0``.
    """

    policy: torch.Tensor
    visits: torch.Tensor
    loss: torch.Tensor
    optimum_return: float
    policy_return: float

    @property
    def gap(self) -> float:
        """The expected return the policy loses to the optimum: ``V*_0 - V^pi_0``."""
        return self.optimum_return - self.policy_return

    @property
    def expected_loss(self) -> torch.Tensor:
        """``[H, S, J]`` each state's share of the gap: its visit probability times its one-step loss."""
        return self.visits * self.loss

    @property
    def decomposition_error(self) -> float:
        """How far the identity's right-hand side (the forward account) is from the gap (backward evaluation)."""
        return abs(float(self.expected_loss.sum()) - self.gap)

    def by_month(self, model: ReservoirModel) -> torch.Tensor:
        """``[12]`` the gap by calendar month (January first)."""
        per_step = self.expected_loss.sum(dim=(1, 2))
        months = model.month(torch.arange(per_step.shape[0]))
        return torch.zeros(MONTHS, dtype=torch.float64).index_add_(0, months, per_step)

    def by_storage(self) -> torch.Tensor:
        """``[S]`` the gap by storage at the start of the month (units)."""
        return self.expected_loss.sum(dim=(0, 2))

    def costliest(self, count: int) -> list[tuple[int, int, int, float]]:
        """The ``count`` states that cost the most: ``(time step, storage, class, expected loss)``, largest first."""
        flat = self.expected_loss.flatten()
        top = torch.topk(flat, min(count, flat.numel()))
        _, storages, columns = self.expected_loss.shape
        return [
            (index // (storages * columns), index // columns % storages, index % columns, float(value))
            for index, value in zip(top.indices.tolist(), top.values, strict=True)
        ]


def grid_observations(model: ReservoirModel) -> torch.Tensor:
    """``[H * S * J, observation]`` the observation of every state of the SDP's grid, time step first, class last."""
    horizon, storages, columns = model.config.horizon_months, model.num_storages, _columns(model)
    time_step, storage, inflow_class = torch.meshgrid(
        torch.arange(horizon), torch.arange(storages), torch.arange(columns), indexing="ij"
    )
    return model.observation(storage.double(), time_step, inflow_class).reshape(-1, model.observation_size)


def greedy_tables(model: ReservoirModel, q_values: Callable[[torch.Tensor], torch.Tensor], agents: int) -> torch.Tensor:
    """``[agents, H, S, J]`` each agent's greedy action in every state of the SDP's grid.

    :param q_values: the stacked agents' network: ``[agents * N, observation]`` (agent-major) to ``[agents * N, A]``.
    """
    with torch.no_grad():
        values = q_values(grid_observations(model).repeat(agents, 1))
    shape = (agents, model.config.horizon_months, model.num_storages, _columns(model), -1)
    return values.reshape(shape).argmax(dim=-1)


def account(model: ReservoirModel, solution: SDPSolution, policy: torch.Tensor) -> Account:
    """The exact account of the deterministic policy ``policy`` (``[H, S, J]`` action indices)."""
    rewards, next_storage = month_outcomes(model)
    optimal = solution.values[:-1]
    chosen = solution.q_values.gather(-1, policy.unsqueeze(-1)).squeeze(-1)
    values = evaluate(model, policy, rewards, next_storage, solution.values[-1])
    initial = solution.initial_classes
    return Account(
        policy=policy,
        visits=_state_distribution(model, policy, next_storage, initial),
        loss=optimal - chosen,
        optimum_return=solution.expected_return,
        policy_return=float((values[0, solution.initial_storage] * initial).sum()),
    )


def _columns(model: ReservoirModel) -> int:
    """The class columns of the state: ``K`` with a persistent inflow, else 1 (the class does not matter)."""
    return model.chain.classes if model.chain.persistent else 1


def _next_classes(model: ReservoirModel, month: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Month ``month``'s inflow class given last month's: ``[J, K]`` probabilities, ``[K]`` the next state's column."""
    chain = model.chain
    if chain.persistent:
        return chain.transitions[(month - 1) % MONTHS], torch.arange(chain.classes)
    # Independent classes are drawn uniformly, and every one leads to the single column.
    return torch.full((1, chain.classes), 1.0 / chain.classes, dtype=torch.float64), torch.zeros(
        chain.classes, dtype=torch.long
    )


def evaluate(
    model: ReservoirModel, policy: torch.Tensor, rewards: torch.Tensor, next_storage: torch.Tensor, end: torch.Tensor
) -> torch.Tensor:
    """``[H + 1, S, J]`` the policy's expected return-to-go: ``V_t(s, j) = sum_k P[j, k] [r + V_{t+1}(s', k)]``,
    from ``V_H = end`` (the SDP's: the end value, or 0)."""
    horizon, storages, columns = policy.shape
    rows = torch.arange(storages).view(storages, 1)
    values = torch.zeros(horizon + 1, storages, columns, dtype=torch.float64)
    values[horizon] = end
    for t in reversed(range(horizon)):
        month = int(model.month(torch.tensor(t)))
        probabilities, column = _next_classes(model, month)
        reward = rewards[month][rows, policy[t]]  # [S, J, K]
        future = values[t + 1][next_storage[month][rows, policy[t]], column]
        values[t] = ((reward + future) * probabilities).sum(dim=-1)
    return values


def _state_distribution(
    model: ReservoirModel, policy: torch.Tensor, next_storage: torch.Tensor, initial: torch.Tensor
) -> torch.Tensor:
    """``[H, S, J]`` the probability of each state at each time step under the policy, propagated forward."""
    horizon, storages, columns = policy.shape
    rows = torch.arange(storages).view(storages, 1)
    visits = torch.zeros(horizon, storages, columns, dtype=torch.float64)
    visits[0, model.config.initial_storage] = initial
    for t in range(horizon - 1):
        month = int(model.month(torch.tensor(t)))
        probabilities, column = _next_classes(model, month)
        mass = visits[t].unsqueeze(-1) * probabilities  # [S, J, K]
        target = next_storage[month][rows, policy[t]] * columns + column  # [S, J, K] flat index of (s', k)
        visits[t + 1].view(-1).index_add_(0, target.reshape(-1), mass.reshape(-1))
    return visits
