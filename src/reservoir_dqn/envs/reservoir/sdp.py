"""Stochastic dynamic programming: the provably optimal policy of the reservoir MDP.

Backward induction over the exact finite MDP of :class:`~reservoir_dqn.envs.reservoir.env.DiscreteReservoirEnv`:
state (time step ``t``, storage ``s``, class ``j`` of last month's inflow), the month ``m``
following from ``t``. With ``V_H = 0`` and ``P = transitions[m - 1]`` (:mod:`.inflows`),

``Q_t(s, j, a) = sum_k P[j, k] [ r(s, a, q_{m,k}, m) + V_{t+1}(s'(s, a, q_{m,k}), k) ]``,
``V_t(s, j) = max_a Q_t(s, j, a)``.

With independent inflows (``inflow_model: lognormal``) every row of ``P`` is ``1/K``, the
values do not depend on ``j``, and the state is (time step, storage): the solution keeps a
single class column and the expectation is the mean over the equiprobable classes.

:attr:`SDPSolution.expected_return`, the mean of ``V_0(initial_storage, j)`` over the class
the month before the first has, is the largest expected ``horizon_months`` return any
policy can achieve. Everything is vectorised over storages, classes and actions in float64;
the default problem solves in milliseconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.records import MONTHS


@dataclass(frozen=True)
class SDPSolution:
    """Optimal values and policy; ``J`` is ``K`` with a persistent inflow, else 1.

    :ivar values: ``[H + 1, S, J]`` optimal expected return-to-go from time step ``t``, storage
        ``s`` and last month's inflow class ``j``.
    :ivar policy: ``[H, S, J]`` optimal action (release-level index); ties go to the smaller release.
    :ivar q_values: ``[H, S, J, A]`` expected return of each action, then acting optimally.
    :ivar initial_classes: ``[J]`` the distribution of the class of the month before the first.
    """

    values: torch.Tensor
    policy: torch.Tensor
    q_values: torch.Tensor
    initial_storage: int
    initial_classes: torch.Tensor

    @property
    def expected_return(self) -> float:
        """Optimal expected return of an episode from the initial storage."""
        return float((self.values[0, self.initial_storage] * self.initial_classes).sum())


def month_fields(model: ReservoirModel, fields: Sequence[str]) -> dict[str, torch.Tensor]:
    """``[12, S, A, K]`` each of ``fields`` (:class:`~.model.Outcome`'s, or ``reward``) for one month from every
    storage, action and inflow class of every calendar month."""
    storage = torch.arange(model.num_storages, dtype=torch.float64).view(-1, 1, 1)
    action = torch.arange(model.num_actions).view(1, -1, 1)
    collected: dict[str, list[torch.Tensor]] = {field: [] for field in fields}
    for month in range(MONTHS):
        inflow = model.inflow_values[month].view(1, 1, -1)
        outcome = model.transition(storage, inflow, action, torch.tensor(month))
        for field in fields:
            collected[field].append(getattr(outcome, field))
    return {field: torch.stack(values) for field, values in collected.items()}


def month_outcomes(model: ReservoirModel) -> tuple[torch.Tensor, torch.Tensor]:
    """One month's outcome from every storage, action and inflow class of every calendar month:
    ``[12, S, A, K]`` rewards (float64) and next storages (indices)."""
    fields = month_fields(model, ("reward", "next_storage"))
    return fields["reward"], fields["next_storage"].long()


def solve(model: ReservoirModel) -> SDPSolution:
    """Backward induction over the reservoir MDP described by ``model`` (``V_H``: :func:`end_values`, or 0)."""
    config, chain = model.config, model.chain
    horizon, storages, actions = config.horizon_months, model.num_storages, model.num_actions
    columns = chain.classes if chain.persistent else 1
    month_rewards, month_next = month_outcomes(model)

    values = torch.zeros(horizon + 1, storages, columns, dtype=torch.float64)
    terminal = end_values(model)
    if terminal is not None:
        values[horizon] = terminal
    q_values = torch.zeros(horizon, storages, columns, actions, dtype=torch.float64)
    inflow_class = torch.arange(columns)
    for t in reversed(range(horizon)):
        month = (t + config.start_month) % MONTHS
        if chain.persistent:
            # Next class k's value at the next storage, then the expectation over k given this month's class j.
            total = month_rewards[month] + values[t + 1][month_next[month], inflow_class]  # [S, A, K]
            q_values[t] = torch.einsum("jk,sak->sja", chain.transitions[(month - 1) % MONTHS], total)
        else:
            # Equiprobable independent classes: the expectation is the mean over the last axis.
            q_values[t, :, 0] = (month_rewards[month] + values[t + 1, :, 0][month_next[month]]).mean(dim=-1)
        values[t] = q_values[t].max(dim=-1).values
    # argmax returns the first maximum: among equally good releases, the smallest.
    policy = q_values.argmax(dim=-1)
    return SDPSolution(values, policy, q_values, config.initial_storage, initial_classes(model))


def initial_classes(model: ReservoirModel) -> torch.Tensor:
    """``[J]`` the distribution of the inflow class of the month before the first (one column of 1 for
    independent inflows): what every exact expectation from the initial storage weighs its columns by."""
    chain, config = model.chain, model.config
    before = (config.start_month - 1) % MONTHS
    return chain.marginal[before] if chain.persistent else torch.ones(1, dtype=torch.float64)


@lru_cache(maxsize=8)
def end_values(model: ReservoirModel) -> torch.Tensor | None:
    """``[S, J]`` what the storage left at the end of an episode is worth (``end_value: water_value``), else ``None``.

    The water value of the next horizon: ``V_0(s, j) - V_0(s_0, j)``, the optimal expected return of a fresh
    horizon from storage ``s`` and last month's class ``j``, less that from the initial storage ``s_0``, as
    :func:`solve` computes it with nothing at the end. Leaving the reservoir as it was found is worth 0; each
    unit drawn below it costs what it would have earned next horizon. The agent's environment, the SDP,
    foresight and the random anchor all add it at their last month, so every score measures the same MDP.
    """
    if model.config.end_value == "none":
        return None
    plain = dataclasses.replace(model, config=model.config.model_copy(update={"end_value": "none"}))
    start = solve(plain).values[0]
    return start - start[model.config.initial_storage]


def end_value_of(model: ReservoirModel, storage: torch.Tensor, last_class: torch.Tensor) -> torch.Tensor:
    """The end value of ``storage`` (units) after a last month of inflow class ``last_class``, broadcast (0 when
    ``end_value`` is none)."""
    terminal = end_values(model)
    if terminal is None:
        return torch.zeros_like(storage + last_class, dtype=torch.float64)
    column = last_class if model.chain.persistent else torch.zeros_like(last_class)
    return terminal[storage.round().long(), column]


@dataclass(frozen=True)
class ForesightSolution:
    """Deterministic DP with perfect foresight of each window's inflows: the bound no operator can beat.

    :ivar values: ``[W, H + 1, S]`` the best return-to-go of window ``w`` from time step ``t`` and storage ``s``.
    :ivar policy: ``[W, H, S]`` the release-level index that achieves it (ties: the smaller release).
    """

    values: torch.Tensor
    policy: torch.Tensor
    initial_storage: int

    @property
    def returns(self) -> torch.Tensor:
        """``[W]`` each window's best return from the initial storage."""
        return self.values[:, 0, self.initial_storage]


def foresight(
    model: ReservoirModel, inflows: torch.Tensor, last_classes: torch.Tensor | None = None
) -> ForesightSolution:
    """Backward induction knowing every month's inflow: ``inflows`` is ``[W, H]`` in whole units.

    ``V_t(s) = max_a [ r(s, a, q_t, m_t) + V_{t+1}(s'(s, a, q_t)) ]`` per window, with ``V_H`` the end value of
    each window's last month's class ``last_classes`` (``[W]``; ``None``: ``V_H = 0``).
    """
    config = model.config
    windows, horizon = inflows.shape
    storages, actions = model.num_storages, model.num_actions
    storage = torch.arange(storages, dtype=torch.float64).view(1, storages, 1)
    action = torch.arange(actions).view(1, 1, actions)
    values = torch.zeros(windows, horizon + 1, storages, dtype=torch.float64)
    if last_classes is not None:
        values[:, horizon] = end_value_of(model, storage.view(1, storages), last_classes.view(windows, 1))
    policy = torch.zeros(windows, horizon, storages, dtype=torch.long)
    for t in reversed(range(horizon)):
        month = torch.tensor((t + config.start_month) % MONTHS)
        outcome = model.transition(storage, inflows[:, t].view(windows, 1, 1), action, month)  # [W, S, A]
        future = values[:, t + 1].gather(1, outcome.next_storage.long().view(windows, -1)).view(outcome.reward.shape)
        q_values = outcome.reward + future
        values[:, t], policy[:, t] = q_values.max(dim=-1)
    return ForesightSolution(values, policy, config.initial_storage)


def random_rewards(
    model: ReservoirModel, inflows: torch.Tensor, last_classes: torch.Tensor | None = None
) -> torch.Tensor:
    """``[W, H]`` each month's expected reward of the uniformly random policy replaying each window, exactly.

    With the inflows known, the only randomness is the policy's: the storage distribution is
    carried forward from the initial storage, every release equally likely, and each month's
    expected reward is its mean over that distribution and the releases. This is the random
    policy's expected return on the window (the re-operation's anchor of 0), where one seeded
    trajectory is a sample of it. ``last_classes``: as for :func:`foresight` (the end value joins the last month).
    """
    config = model.config
    windows, horizon = inflows.shape
    storages, actions = model.num_storages, model.num_actions
    storage = torch.arange(storages, dtype=torch.float64).view(1, storages, 1)
    action = torch.arange(actions).view(1, 1, actions)
    occupancy = torch.zeros(windows, storages, dtype=torch.float64)
    occupancy[:, config.initial_storage] = 1.0
    expected = torch.zeros(windows, horizon, dtype=torch.float64)
    for t in range(horizon):
        month = torch.tensor((t + config.start_month) % MONTHS)
        outcome = model.transition(storage, inflows[:, t].view(windows, 1, 1), action, month)  # [W, S, A]
        weight = occupancy.unsqueeze(-1).expand(windows, storages, actions) / actions
        expected[:, t] = (weight * outcome.reward).sum(dim=(1, 2))
        occupancy = torch.zeros_like(occupancy).scatter_add_(
            1, outcome.next_storage.long().view(windows, -1), weight.reshape(windows, -1)
        )
    if last_classes is not None:  # the end value of where the storage ends (last month's reward, as the env adds it)
        ends = end_value_of(model, storage.view(1, storages), last_classes.view(windows, 1))  # [W, S]
        expected[:, -1] += (occupancy * ends).sum(dim=1)
    return expected


def table_returns(
    model: ReservoirModel, policy: torch.Tensor, inflows: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """``[W]`` the return of the deterministic policy ``policy`` (``[H, S, J]`` action indices, as
    :attr:`SDPSolution.policy`) on each window of known ``inflows`` (``[W, H]`` units) and inflow ``classes``
    (``[W, H + 1]``, column 0 the month before), the end value included: no environment, exactly."""
    config = model.config
    windows, horizon = inflows.shape
    storage = torch.full((windows,), float(config.initial_storage), dtype=torch.float64)
    total = torch.zeros(windows, dtype=torch.float64)
    for t in range(horizon):
        column = classes[:, t] if model.chain.persistent else torch.zeros(windows, dtype=torch.long)
        action = policy[t, storage.long(), column]
        outcome = model.transition(
            storage, inflows[:, t].double(), action, torch.tensor((t + config.start_month) % MONTHS)
        )
        total += outcome.reward
        storage = outcome.next_storage
    return total + end_value_of(model, storage, classes[:, horizon])
