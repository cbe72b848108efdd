"""A third-party Gymnasium package in miniature: importing it registers ``tests/Corridor-v0``.

The agent walks a corridor of ``length`` cells from the left end; each step costs 1 until it
reaches the right end. Its state is plain data (a position and the generator), unless
``opaque=True`` keeps the position inside an object, as a Box2D world would: such a state
cannot be saved, and a resume restarts the episodes. ``tests/DictCorridor-v0`` observes a
dict, which the pipeline refuses; ``tests/UnscoredCorridor-v0`` declares no
``reward_threshold``, ``tests/EndlessCorridor-v0`` no episode limit.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

LENGTH = 6


class _Body:
    """A position held by an object the checkpoint cannot serialise (a stand-in for a physics engine)."""

    def __init__(self) -> None:
        self.position = 0


class Corridor(gym.Env[np.ndarray, int]):
    def __init__(self, length: int = LENGTH, opaque: bool = False) -> None:
        self.length, self.opaque = length, opaque
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)  # 0 left, 1 right
        self.position = 0
        self.body = _Body() if opaque else None

    def _get(self) -> int:
        return self.body.position if self.body is not None else self.position

    def _set(self, value: int) -> None:
        if self.body is not None:
            self.body.position = value
        else:
            self.position = value

    def _observation(self) -> np.ndarray:
        noise = self.np_random.uniform(-0.01, 0.01)
        return np.array([2 * self._get() / self.length - 1, noise], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._set(int(self.np_random.integers(0, 2)))
        return self._observation(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._set(max(0, self._get() + (1 if int(action) == 1 else -1)))
        return self._observation(), -1.0, self._get() >= self.length, False, {}


class DictCorridor(Corridor):
    def __init__(self) -> None:
        super().__init__()
        self.observation_space = gym.spaces.Dict({"position": gym.spaces.Box(-1.0, 1.0, shape=(2,))})


gym.register("tests/Corridor-v0", entry_point=Corridor, max_episode_steps=30, reward_threshold=-8.0)
gym.register("tests/DictCorridor-v0", entry_point=DictCorridor, max_episode_steps=30)
gym.register("tests/UnscoredCorridor-v0", entry_point=Corridor, max_episode_steps=30)  # no reward_threshold
gym.register("tests/EndlessCorridor-v0", entry_point=Corridor, reward_threshold=-8.0)  # no episode limit
