"""The exact account of a policy against the SDP optimum (envs/reservoir/account.py): identity, agreement, table."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from reservoir_dqn.agent import NetworkSpec, make_q_network, stacked_mlp
from reservoir_dqn.config import EnvConfig, load_config
from reservoir_dqn.envs import EnvProfile, profile
from reservoir_dqn.envs.reservoir.account import Account, account, greedy_tables
from reservoir_dqn.envs.reservoir.baselines import SDPPolicy, reservoir_optimum
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.rollouts import run_episodes
from reservoir_dqn.evaluation.episodes import exact_metrics, paired_regret, run_agents
from tests import delaware
from tests.conftest import REPO

# The illustrative reservoir over two years (independent inflows), and the Delaware recipe (a persistent chain).
SHORT = load_config(REPO / "params.yaml", ["env.reservoir.horizon_months=24"]).env
CASES = {"independent": (SHORT, profile(SHORT)), "persistent": (delaware.DELAWARE, delaware.PROFILE)}
# The same two with the storage left at the end worth its water value (env.reservoir.end_value).
CASES |= {
    f"{name}, water value at the end": (
        env.model_copy(update={"reservoir": env.reservoir.model_copy(update={"end_value": "water_value"})}),
        env_profile,
    )
    for name, (env, env_profile) in list(CASES.items())
}


def _noisy_optimum(env: EnvConfig, share: float, seed: int) -> torch.Tensor:
    """The SDP's policy with a ``share`` of its states' actions replaced by random ones."""
    solution = reservoir_optimum(env.reservoir)
    generator = torch.Generator().manual_seed(seed)
    changed = torch.rand(solution.policy.shape, generator=generator) < share
    random = torch.randint(int(solution.q_values.shape[-1]), solution.policy.shape, generator=generator)
    return torch.where(changed, random, solution.policy)


def _account(env: EnvConfig, table: torch.Tensor) -> Account:
    return account(ReservoirModel.from_config(env.reservoir), reservoir_optimum(env.reservoir), table)


@pytest.mark.parametrize("case", CASES)
def test_the_optimum_loses_nothing_anywhere(case: str) -> None:
    env, _ = CASES[case]
    optimum = reservoir_optimum(env.reservoir)
    result = _account(env, optimum.policy)
    assert result.policy_return == pytest.approx(optimum.expected_return, abs=1e-9)
    assert float(result.loss.abs().max()) < 1e-9


@pytest.mark.parametrize("case", CASES)
def test_the_losses_along_the_policys_own_states_sum_to_its_gap(case: str) -> None:
    """The performance-difference identity: the forward account equals the backward evaluation's gap."""
    env, _ = CASES[case]
    result = _account(env, _noisy_optimum(env, 0.2, seed=1))
    model = ReservoirModel.from_config(env.reservoir)
    assert result.gap > 1.0
    assert result.decomposition_error < 1e-6
    assert float(result.loss.min()) > -1e-9  # no action beats the optimum's Q*
    assert torch.allclose(result.visits.sum(dim=(1, 2)), torch.ones(env.reservoir.horizon_months, dtype=torch.float64))
    assert float(result.by_month(model).sum()) == pytest.approx(result.gap, abs=1e-6)
    assert float(result.by_storage().sum()) == pytest.approx(result.gap, abs=1e-6)
    costliest = result.costliest(3)
    assert [cost for *_, cost in costliest] == sorted((cost for *_, cost in costliest), reverse=True)
    t, s, j, cost = costliest[0]
    assert cost == pytest.approx(float(result.expected_loss[t, s, j]))


@pytest.mark.parametrize("case", CASES)
def test_the_exact_return_agrees_with_a_monte_carlo_of_the_policy_in_the_environment(case: str) -> None:
    env, env_profile = CASES[case]
    table = _noisy_optimum(env, 0.3, seed=2)
    result = _account(env, table)
    policy = SDPPolicy(dataclasses.replace(reservoir_optimum(env.reservoir), policy=table))
    returns = run_episodes(env_profile, env, policy, range(5000, 5600)).returns.double()
    error = float(returns.std()) / math.sqrt(len(returns))
    assert abs(float(returns.mean()) - result.policy_return) < 4 * error
    # ... and the exact gap is no Monte Carlo estimate: a policy measurably worse than the optimum has one.
    assert result.gap > 4 * error


@pytest.mark.parametrize("case", CASES)
def test_a_networks_greedy_table_is_what_it_does_in_the_environment(case: str) -> None:
    """The table is read on the observation of every state: each agent acts as its table says, and the exact
    return of the table agrees with the agent's test mean (the evaluate stage's check, exact_z)."""
    env, env_profile = CASES[case]
    model = ReservoirModel.from_config(env.reservoir)
    spec = NetworkSpec(model.observation_size, model.num_actions, (16,), env.name, agents=2)
    q_network = make_q_network(spec, seeds=[3, 4])
    tables = greedy_tables(model, stacked_mlp(q_network), agents=2)
    assert tables.shape == (
        2,
        env.reservoir.horizon_months,
        model.num_storages,
        model.chain.classes if case.startswith("persistent") else 1,
    )
    played = run_agents(env_profile, env, q_network, agents=2, episodes=150, seed=9000)
    optimum = reservoir_optimum(env.reservoir)
    for agent, episodes in enumerate(played):
        steps = episodes.steps
        valid = steps["valid"]
        column = steps["inflow_class"].clamp(max=tables.shape[-1] - 1)
        looked_up = tables[agent][steps["time_step"], steps["storage"].round().long(), column]
        assert torch.equal(looked_up[valid], steps["action"][valid])
        metrics = exact_metrics(account(model, optimum, tables[agent]), episodes)
        assert abs(metrics["exact_z"]) < 4
        assert metrics["exact_gap"] == pytest.approx(optimum.expected_return - metrics["exact_return"])


def test_the_paired_regret_removes_the_scenarios_spread() -> None:
    env, env_profile = CASES["independent"]
    solution = reservoir_optimum(env.reservoir)
    table = _noisy_optimum(env, 0.05, seed=5)
    seeds = range(7000, 7200)
    noisy = run_episodes(env_profile, env, SDPPolicy(dataclasses.replace(solution, policy=table)), seeds)
    best = run_episodes(env_profile, env, SDPPolicy(solution), seeds)
    regret = paired_regret(noisy, best)
    assert regret["regret"] == pytest.approx(float(best.returns.double().mean() - noisy.returns.double().mean()))
    unpaired = math.hypot(float(noisy.returns.double().std()), float(best.returns.double().std())) / math.sqrt(200)
    assert regret["regret_se"] < unpaired / 2
    assert paired_regret(best, best) == {"regret": 0.0, "regret_se": 0.0}


def test_an_environment_without_an_exact_optimum_has_no_account() -> None:
    cartpole = load_config(REPO / "params.yaml", ["env.name=CartPole-v1", "env.section=gym"]).env
    env_profile: EnvProfile = profile(cartpole)
    assert env_profile.optimum_baseline is None
    assert env_profile.exact_accounts(cartpole, lambda observation: observation, agents=1) is None
