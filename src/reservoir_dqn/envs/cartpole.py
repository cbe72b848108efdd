"""CartPole-v1's profile: Gymnasium's environment, scored against its 500-step optimum.

The environment is Gymnasium's own (``gym.make_vec`` in synchronous mode, wrapped by
TorchRL's ``GymWrapper``): its physics are not copied here. A return of 500 (the episode
limit, one reward per step) is the optimum, so the score is ``(R - R_random) / (500 -
R_random)``; an episode that reaches Gymnasium's ``reward_threshold`` (475) is *solved*.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import TimeLimit
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import Compose, EnvBase, GymWrapper, RewardSum, StepCounter

from reservoir_dqn.config import EnvConfig
from reservoir_dqn.envs.baselines import RandomPolicy
from reservoir_dqn.envs.profile import RETURN, SCORE, EnvProfile, Episodes, Metric

SOLVED = Metric("solved", "share of episodes that reach 475 (Gymnasium's threshold)")
# The observation brought to about [-1, 1]: cart position and pole angle by their termination
# bounds (2.4 m, 12 degrees = 0.2095 rad), the two velocities by 2 (their range under
# control). Unscaled, the angle reaches only +-0.2 beside a position of +-2.4 and the network
# is slow to see it; scaled, DQN learns to stop the cart drifting off the track.
CARTPOLE_SCALE = (1 / 2.4, 1 / 2.0, 1 / 0.2095, 1 / 2.0)


class CartPoleProfile(EnvProfile):
    name = "CartPole-v1"
    headline = (SCORE, RETURN, SOLVED)
    optimum_label = "a return of 500"

    def make(self, config: EnvConfig, slot_seeds: Sequence[int]) -> EnvBase:
        # A synchronous gymnasium vector env steps all copies in one process: on a 2-core
        # machine this is several times faster per frame than one TorchRL env per copy or
        # subprocess workers. With autoreset disabled TorchRL resets finished copies itself.
        vector_env = SyncVectorEnv(
            [partial(gym.make, self.name, disable_env_checker=True) for _ in slot_seeds],
            autoreset_mode=AutoresetMode.DISABLED,
        )
        for copy, seed in zip(vector_env.envs, slot_seeds, strict=True):
            copy.reset(seed=int(seed))  # seeds the copy's own generator, as a single env seeded so would be
        env = GymWrapper(vector_env, categorical_action_encoding=True)
        return env.append_transform(Compose(StepCounter(), RewardSum()))

    def episode_limit(self, config: EnvConfig) -> int:
        limit = gym.spec(self.name).max_episode_steps
        assert limit is not None
        return int(limit)

    def observation_scale(self, config: EnvConfig) -> tuple[float, ...]:
        return CARTPOLE_SCALE

    def baselines(self, config: EnvConfig, num_actions: int, seed: int) -> dict[str, TensorDictModuleBase]:
        return {"random": RandomPolicy(num_actions, seed)}

    def optimum_return(self, config: EnvConfig, baseline_returns: Mapping[str, float]) -> float:
        return float(self.episode_limit(config))  # one reward per step, every step balanced

    def policy_metrics(self, config: EnvConfig, episodes: Episodes) -> dict[str, float]:
        threshold = gym.spec(self.name).reward_threshold
        assert threshold is not None
        return {"solved": float((episodes.returns >= threshold).double().mean())}

    def trajectory_rows(self, config: EnvConfig, policy: str, episodes: Episodes, count: int) -> list[dict[str, Any]]:
        steps, nxt = episodes.steps, episodes.steps["next"]
        names = ("cart_position", "cart_velocity", "pole_angle", "pole_velocity")
        rows = []
        for index in range(min(count, len(episodes))):
            for step in range(int(episodes.lengths[index])):
                observation = steps["observation"][index, step]
                row: dict[str, Any] = {"policy": policy, "episode": index, "step": step}
                row |= {name: float(value) for name, value in zip(names, observation, strict=True)}
                row["action"] = int(steps["action"][index, step])
                row["reward"] = float(nxt["reward"][index, step])
                rows.append(row)
        return rows

    def get_state(self, env: EnvBase) -> dict[str, Any]:
        return {"copies": [_copy_state(copy) for copy in _vector_env(env).envs]}

    def set_state(self, env: EnvBase, state: Mapping[str, Any]) -> None:
        copies = _vector_env(env).envs
        saved = state["copies"]
        if len(saved) != len(copies):
            raise ValueError(f"the state holds {len(saved)} CartPole copies, the environment {len(copies)}")
        for copy, copy_state in zip(copies, saved, strict=True):
            _restore_copy(copy, copy_state)


def _vector_env(env: EnvBase) -> SyncVectorEnv:
    vector_env = env.base_env._env
    assert isinstance(vector_env, SyncVectorEnv)
    return vector_env


def _time_limit(copy: gym.Env[Any, Any]) -> TimeLimit[Any, Any]:
    layer: Any = copy
    while not isinstance(layer, TimeLimit):
        layer = layer.env
    return layer


def _copy_state(copy: gym.Env[Any, Any]) -> dict[str, Any]:
    """One CartPole's state: its physics, its step counters and its generator."""
    cartpole: Any = copy.unwrapped
    return {
        "physics": None if cartpole.state is None else torch.as_tensor(np.asarray(cartpole.state, dtype=np.float64)),
        "steps_beyond_terminated": cartpole.steps_beyond_terminated,
        "elapsed_steps": _time_limit(copy)._elapsed_steps,
        "generator": cartpole.np_random.bit_generator.state,
    }


def _restore_copy(copy: gym.Env[Any, Any], state: Mapping[str, Any]) -> None:
    cartpole: Any = copy.unwrapped
    physics = state["physics"]
    cartpole.state = None if physics is None else np.asarray(physics, dtype=np.float64)
    cartpole.steps_beyond_terminated = state["steps_beyond_terminated"]
    _time_limit(copy)._elapsed_steps = state["elapsed_steps"]
    cartpole.np_random.bit_generator.state = dict(state["generator"])
