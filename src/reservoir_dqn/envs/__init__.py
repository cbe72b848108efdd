"""Environment factory: every environment the pipeline trains on, built by name.

``make_env(config, num_envs)`` returns one batched TorchRL environment of batch size
``[num_envs]`` whose output carries ``observation``, a categorical ``action``,
``reward``, ``done``/``terminated``/``truncated`` and, from the transforms,
``step_count`` and ``episode_reward``. Sub-environment ``i`` of an env seeded with
``env.set_seed(s)`` behaves exactly like a single environment seeded with ``s + i``.
"""

from __future__ import annotations

from collections.abc import Mapping

import gymnasium as gym
import torch
from gymnasium.vector import AutoresetMode
from torchrl.envs import Compose, EnvBase, GymWrapper, RewardSum, StepCounter

from reservoir_dqn.config import EnvConfig
from reservoir_dqn.envs.reservoir import DiscreteReservoirEnv

CARTPOLE = "CartPole-v1"
RESERVOIR = "reservoir"
# A reservoir episode succeeds when no month ends below the minimum operating level and the
# demand is met in full in at least this share of its months.
SUPPLY_RELIABILITY = 0.9
# The reservoir's running per-episode counts that decide success (read when an episode ends).
SUCCESS_COUNTS = ("deficit_months", "violation_months")


def make_env(config: EnvConfig, num_envs: int) -> EnvBase:
    """Build the batched environment ``config.name`` with ``num_envs`` copies, on the CPU.

    :param config: the ``env`` section of the parameters.
    :param num_envs: how many environments to step together (the env's batch size).
    """
    if config.name == RESERVOIR:
        env: EnvBase = DiscreteReservoirEnv(config.reservoir, num_envs)
    elif config.name == CARTPOLE:
        env = _make_gym(config.name, num_envs)
    else:  # pragma: no cover - EnvConfig admits only the names above
        raise ValueError(f"unknown environment {config.name!r}")
    return env.append_transform(Compose(StepCounter(), RewardSum()))


def _make_gym(name: str, num_envs: int) -> EnvBase:
    # A synchronous gymnasium vector env steps all copies in one process: on a 2-core
    # machine this is several times faster per frame than one TorchRL env per copy or
    # subprocess workers. With autoreset disabled TorchRL resets finished copies itself.
    vector_env = gym.make_vec(
        name,
        num_envs=num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED},
    )
    return GymWrapper(vector_env, categorical_action_encoding=True)


# CartPole's observation brought to about [-1, 1]: cart position and pole angle by their
# termination bounds (2.4 m, 12 degrees = 0.2095 rad), the two velocities by 2 (their range
# under control). Unscaled, the angle reaches only +-0.2 beside a position of +-2.4 and the
# network is slow to see it; scaled, DQN learns to stop the cart drifting off the track.
CARTPOLE_SCALE = (1 / 2.4, 1 / 2.0, 1 / 0.2095, 1 / 2.0)


def observation_scale(config: EnvConfig) -> tuple[float, ...] | None:
    """Fixed factors the Q-network applies to raw observations (``None``: already in [-1, 1])."""
    return CARTPOLE_SCALE if config.name == CARTPOLE else None


def episode_limit(config: EnvConfig) -> int:
    """The most steps an episode of ``config.name`` can last (it is truncated there)."""
    if config.name == RESERVOIR:
        return config.reservoir.horizon_months
    limit = gym.spec(config.name).max_episode_steps
    assert limit is not None, f"{config.name} has no time limit"
    return int(limit)


def episode_success(
    config: EnvConfig, returns: torch.Tensor, lengths: torch.Tensor, totals: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Which episodes count as a success, defined once for training and evaluation.

    CartPole: the return reaches Gymnasium's ``reward_threshold`` (475). Reservoir: no month
    ends below the minimum storage and the demand is met in full in at least 90% of the
    months (``totals`` holds the per-episode ``deficit_months`` and ``violation_months``).
    """
    if config.name == RESERVOIR:
        supplied = 1.0 - totals["deficit_months"].double() / lengths.double()
        return (totals["violation_months"] == 0) & (supplied >= SUPPLY_RELIABILITY)
    threshold = gym.spec(config.name).reward_threshold
    assert threshold is not None, f"{config.name} has no reward threshold"
    return returns >= float(threshold)
