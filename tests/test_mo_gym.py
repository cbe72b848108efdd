"""The multi-objective Gymnasium port (envs/reservoir/mo_gym.py), checked as MO-Gymnasium checks its own environments.

The first three tests are MO-Gymnasium's own (its ``tests/test_envs.py``: Gymnasium's checker, the
reward within ``reward_space``, pickling, the passive checker, two seeded rollouts alike); the rest
hold the port to the TorchRL environment and the exact front. MO-Gymnasium runs Gymnasium's checker
on the environment wrapped in its ``LinearReward``, which puts the same weight array in every
step's info; Gymnasium 1.4's checker refuses infos that share an object, so here the checker runs
on the environment itself (its vector reward draws Gymnasium's warning that a reward should be a
number) and ``LinearReward`` is held to the scalarisation separately.
"""

from __future__ import annotations

import pickle

import gymnasium
import mo_gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env, data_equivalence

from reservoir_dqn.config import ConfigError, load_config
from reservoir_dqn.envs.reservoir.env import DiscreteReservoirEnv
from reservoir_dqn.envs.reservoir.front import exact_front
from reservoir_dqn.envs.reservoir.mo_gym import ENV_ID, ReservoirMOEnv
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # seconds each: make test runs them, make test-fast leaves them out

PARAMS = str(REPO / "params.yaml")
SHORT = ["env.reservoir.horizon_months=12"]
STEPS = 50


def _make(overrides: list[str] = SHORT) -> gymnasium.Env:
    return mo_gymnasium.make(ENV_ID, params=PARAMS, overrides=overrides)


@pytest.mark.filterwarnings("ignore:.*reward:UserWarning")
def test_the_environment_passes_gymnasiums_checker_with_rewards_in_bounds_and_pickles() -> None:
    check_env(_make().unwrapped, skip_render_check=True)
    env = mo_gymnasium.wrappers.LinearReward(_make(), weight=np.array([0.5, 0.5]))
    unwrapped = env.unwrapped
    assert unwrapped.reward_dim == 2 and unwrapped.reward_space.shape == (2,)
    env.reset(seed=3)
    env.action_space.seed(3)
    for _ in range(STEPS):
        _, scalar, terminated, truncated, info = env.step(env.action_space.sample())
        assert unwrapped.reward_space.contains(info["vector_reward"])
        assert scalar == pytest.approx(info["reward"], rel=1e-5, abs=1e-4)  # (1/2, 1/2): the configured reward
        if terminated or truncated:
            env.reset()
    copy = pickle.loads(pickle.dumps(env))
    data_equivalence(env.reset(), copy.reset())
    action = env.action_space.sample()
    data_equivalence(env.step(action), copy.step(action))


@pytest.mark.filterwarnings("ignore:.*reward:UserWarning")
def test_the_passive_checker_takes_a_step() -> None:
    env = mo_gymnasium.make(ENV_ID, params=PARAMS, overrides=SHORT, disable_env_checker=False)
    env.reset()
    env.step(env.action_space.sample())
    env.close()


def test_two_environments_seeded_alike_roll_out_alike() -> None:
    first, second = mo_gymnasium.wrappers.LinearReward(_make()), mo_gymnasium.wrappers.LinearReward(_make())
    data_equivalence(first.reset(seed=0), second.reset(seed=0))
    first.action_space.seed(0)
    for _ in range(STEPS):
        action = first.action_space.sample()
        one, other = first.step(action), second.step(action)
        data_equivalence(one, other)
        assert first.observation_space.contains(one[0])
        if one[2] or one[3]:
            first.reset(seed=0)
            second.reset(seed=0)


def test_each_step_is_the_torchrl_environments_and_one_half_of_each_objective_is_its_reward() -> None:
    """Seeded alike, the port and the TorchRL environment the agents train on see the same inflows and states."""
    port = ReservoirMOEnv(PARAMS, SHORT)
    torchrl_env = DiscreteReservoirEnv(port.model.config, 1)
    torchrl_env.seed_slots([11])
    observation, _ = port.reset(seed=11)
    state = torchrl_env.reset()
    actions = torch.randint(port.model.num_actions, (12,), generator=torch.Generator().manual_seed(1))
    for action in actions.tolist():
        np.testing.assert_array_equal(observation, state["observation"][0].numpy())
        observation, vector, terminated, truncated, info = port.step(action)
        state = torchrl_env.step(state.set("action", torch.tensor([action])))["next"]
        assert info["storage"] == pytest.approx(float(state["storage"][0]))
        assert float(vector.mean()) == pytest.approx(float(state["reward"][0]), rel=1e-5, abs=1e-4)
    assert terminated and not truncated  # observe_time_left: the horizon ends the MDP


def test_its_pareto_front_is_the_exact_fronts_best_at_every_weighting() -> None:
    env = ReservoirMOEnv(PARAMS, SHORT)
    front, vertices = exact_front(env.model), env.pareto_front()
    assert len(vertices) == len(front.vertices)
    for lam in np.linspace(0.0, 1.0, 11):
        best = max(float(lam * vector[0] + (1 - lam) * vector[1]) for vector in vertices)
        assert best == pytest.approx(front.best(float(lam)), rel=1e-9, abs=1e-6)
    with pytest.raises(ValueError, match="gamma"):
        env.pareto_front(gamma=0.99)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (["env.reservoir.end_value=water_value"], "end_value"),
        (["env.reservoir.inflow_model=record", "env.reservoir.scenarios=record"], "scenarios"),
        (["env.name=CartPole-v1", "env.section=gym"], "env"),
    ],
)
def test_what_it_cannot_serve_is_refused_naming_the_setting(settings: list[str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        ReservoirMOEnv(PARAMS, [*SHORT, *settings])


def test_the_model_is_the_one_the_sdp_solves() -> None:
    env = ReservoirMOEnv(PARAMS, SHORT)
    assert env.model is ReservoirModel.from_config(env.model.config)


def test_morl_baselines_envelope_trains_on_it_and_each_weightings_policy_is_placed_exactly() -> None:
    """The peer of bench/morl_peer.py, on a tiny budget: morl-baselines (installed without the dependencies of its
    other algorithms) imports, trains on the port, and its greedy policy at each weighting is evaluated exactly."""
    from bench.morl_peer import DENSE, train_and_place

    seconds, points = train_and_place(seed=0, frames=300)
    horizon = load_config(REPO / "params.yaml").env.reservoir.horizon_months
    assert seconds > 0 and set(DENSE) <= set(points)
    for lam, point in points.items():
        assert point.weight == lam and point.policy.shape[0] == horizon
        assert point.totals[0] > 0  # energy: every policy of the port generates some
