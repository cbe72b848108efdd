"""Any Gymnasium environment with a discrete action space and a box observation, by its id.

``env.name`` names a Gymnasium id (``Acrobot-v1``, ``MountainCar-v0``, or a third-party
package's, registered by importing ``env.gym.packages`` first), made with
``gymnasium.make(env.name, **env.gym.kwargs)``. The environment is Gymnasium's own: every
agent's copies are stepped together as one synchronous vector env (``SyncVectorEnv``, faster
here than subprocess workers: ``bench/results/vector_env.md``), wrapped by TorchRL's
``GymWrapper``.

The score. ``(R - R_random) / (R_ref - R_random)``, with ``R_ref`` the profile's declared
reference, else ``env.gym.reference_return``, else the id's ``reward_threshold``: a score of
1 is "solved" by Gymnasium's own standard (CartPole declares its optimum, 500). An episode
whose return reaches ``reward_threshold`` is *solved*; ``solved`` is their share.

Observation scaling. Each coordinate is divided by the larger magnitude of its bounds where
those are finite, so it lies in [-1, 1] (MountainCar's velocity, +-0.07, would otherwise be
invisible beside its position). An unbounded coordinate is left as it is: its bound says
nothing about the values seen, and a scale guessed from a random rollout would depend on
the seed. A profile can declare measured factors instead (CartPole's).

State. A classic-control environment's whole state is plain data: arrays, numbers and
generators on the unwrapped env and its wrappers (the time limit's step counter). Those are
saved, so a resumed training continues every episode in flight exactly. An environment that
holds anything else (a Box2D world, a simulator handle) cannot be captured: its checkpoint
says so, and a resume restarts its episodes at the next episode boundary (one line, and
``exact_resume: false`` in ``metrics/train.json``).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from pydantic import Field
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import Compose, EnvBase, GymWrapper, RewardSum, StepCounter

from reservoir_dqn.common.errors import first_line
from reservoir_dqn.config import ConfigError, EnvConfig
from reservoir_dqn.config.sections import Section, StringTuple
from reservoir_dqn.envs.baselines import RandomPolicy
from reservoir_dqn.envs.profile import RETURN, SCORE, EnvProfile, Episodes, Metric

# Attributes that are the environment's definition, not its state: never saved.
DEFINITION = frozenset({"env", "spec", "_cached_spec", "observation_space", "action_space", "metadata"})
PLAIN = (bool, int, float, str, type(None))


class GymConfig(Section):
    """``env.gym``: how a Gymnasium id (``env.name``) is made, and what scores 1."""

    kwargs: dict[str, Any] = Field(
        description="Keyword arguments of gymnasium.make(env.name, ...), e.g. max_episode_steps."
    )
    packages: StringTuple = Field(
        description="Modules imported before the environment is made, so that a third-party package registers "
        "its ids (as rl-zoo3's --gym-packages)."
    )
    reference_return: float | None = Field(
        description="The return that scores 1; empty: the profile's reference, else the id's reward_threshold."
    )


def gym_settings(config: EnvConfig) -> GymConfig:
    """``env.gym``, typed."""
    return config.settings(GymConfig, GymProfile.section)


@dataclass(frozen=True)
class _Spaces:
    """What one made copy says about the environment: its observation space and episode limit."""

    observation: gym.spaces.Box[Any]
    episode_limit: int


class GymProfile(EnvProfile):
    """A Gymnasium id as a profile; what a hand-tuned environment adds is declared, not coded.

    :param env_id: the Gymnasium id (``env.name``).
    :param reference: the return that scores 1 (``None``: ``env.gym.reference_return``, else
        the id's ``reward_threshold``).
    :param reference_label: what a score of 1 means, in words.
    :param scale: measured observation factors, instead of those of the space's bounds.
    :param observation_names: column names of the observation in the trajectory CSV.
    """

    section = "gym"
    settings_model = GymConfig

    def __init__(
        self,
        env_id: str,
        *,
        reference: float | None = None,
        reference_label: str | None = None,
        scale: tuple[float, ...] | None = None,
        observation_names: tuple[str, ...] | None = None,
    ) -> None:
        self.name = env_id
        self.reference, self.scale, self.observation_names = reference, scale, observation_names
        self._spaces: dict[str, _Spaces] = {}  # per env.gym settings: what one made copy said (asked often)
        self.threshold = self.solved_return = gym.spec(env_id).reward_threshold
        self.optimum_label = reference_label or (
            f"a return of {reference:g}" if reference is not None else f"{env_id}'s reference return"
        )
        self.headline: tuple[Metric, ...] = (SCORE, RETURN)
        if self.threshold is not None:
            label = f"share of episodes that reach {self.threshold:g} (Gymnasium's reward_threshold)"
            self.headline += (Metric("solved", label, 0.0, 1.0),)

    def check(self, config: EnvConfig) -> None:
        """Refuse, in one line, what DQN cannot learn here (the spec check when a stage starts)."""
        self._probe(config)

    def _probe(self, config: EnvConfig) -> _Spaces:
        """The spaces and episode limit of one copy made with ``config``, checked once per settings."""
        key = json.dumps(gym_settings(config).model_dump(mode="json"), sort_keys=True)
        if key in self._spaces:
            return self._spaces[key]
        where = f"env.name: {self.name}"
        try:
            probe = self._make_one(config)
        except (TypeError, ValueError, gym.error.Error) as error:  # what a wrong keyword or value raises
            raise ConfigError(
                f"env.gym.kwargs: gymnasium.make({self.name!r}, ...) fails: {first_line(error)}"
            ) from None
        try:
            action, observation = probe.action_space, probe.observation_space
            limit = probe.spec.max_episode_steps if probe.spec is not None else None
        finally:
            probe.close()
        if not isinstance(action, gym.spaces.Discrete):
            raise ConfigError(f"{where} has a {type(action).__name__} action space: DQN needs a Discrete one")
        if int(action.start) != 0:
            raise ConfigError(f"{where}'s actions start at {int(action.start)}: only Discrete(n) from 0 is supported")
        if not isinstance(observation, gym.spaces.Box) or len(observation.shape) != 1:
            shape = f" of shape {observation.shape}" if isinstance(observation, gym.spaces.Box) else ""
            raise ConfigError(
                f"{where} has a {type(observation).__name__} observation{shape}: only a flat Box is supported"
            )
        if self.observation_names is not None and len(self.observation_names) != observation.shape[0]:
            names = ", ".join(self.observation_names)
            raise ConfigError(f"{where} observes {observation.shape[0]} values, its profile names {names}")
        if limit is None:
            raise ConfigError(f"{where} has no episode limit: set env.gym.kwargs.max_episode_steps")
        self.optimum_return(config, {})  # a reference must exist
        self._spaces[key] = _Spaces(observation, int(limit))
        return self._spaces[key]

    def make(self, config: EnvConfig, slot_seeds: Sequence[int]) -> EnvBase:
        # With autoreset disabled, TorchRL resets the finished copies itself.
        vector_env = SyncVectorEnv(
            [partial(self._make_one, config) for _ in slot_seeds], autoreset_mode=AutoresetMode.DISABLED
        )
        for copy, seed in zip(vector_env.envs, slot_seeds, strict=True):
            copy.reset(seed=int(seed))  # seeds the copy's own generator, as a single env seeded so would be
        env = GymWrapper(vector_env, categorical_action_encoding=True)
        return env.append_transform(Compose(StepCounter(), RewardSum()))

    def _make_one(self, config: EnvConfig) -> gym.Env[Any, Any]:
        kwargs: dict[str, Any] = dict(gym_settings(config).kwargs)
        return gym.make(self.name, disable_env_checker=True, **kwargs)

    def episode_limit(self, config: EnvConfig) -> int:
        return self._probe(config).episode_limit

    def settings(self, config: EnvConfig) -> dict[str, Any]:
        kwargs = {f"env.gym.kwargs.{key}": value for key, value in sorted(gym_settings(config).kwargs.items())}
        return {"env.name": config.name, "env.gym.reference_return": self.optimum_return(config, {})} | kwargs

    def observation_scale(self, config: EnvConfig) -> tuple[float, ...] | None:
        if self.scale is not None:
            return self.scale
        space = self._probe(config).observation
        bound = np.maximum(np.abs(space.low), np.abs(space.high)).astype(np.float64)
        factors = tuple(float(1 / b) if np.isfinite(b) and b > 0 else 1.0 for b in bound)
        return None if all(factor == 1.0 for factor in factors) else factors

    def observation_bounds(self, config: EnvConfig, size: int) -> tuple[tuple[float, float], ...]:
        """The observation space's ``low`` and ``high`` (a Box's: infinite where it is unbounded)."""
        space = self._probe(config).observation
        return tuple((float(low), float(high)) for low, high in zip(space.low, space.high, strict=True))

    def baselines(self, config: EnvConfig, num_actions: int, seed: int) -> dict[str, TensorDictModuleBase]:
        return {"random": RandomPolicy(num_actions, seed)}

    def optimum_return(self, config: EnvConfig, baseline_returns: Mapping[str, float]) -> float:
        for reference in (self.reference, gym_settings(config).reference_return, self.threshold):
            if reference is not None:
                return float(reference)
        raise ConfigError(
            f"env.name: {self.name} declares no reward_threshold: "
            "set env.gym.reference_return (the return that scores 1)"
        )

    def policy_metrics(self, config: EnvConfig, episodes: Episodes) -> dict[str, float]:
        if self.threshold is None:
            return {}
        return {"solved": float((episodes.returns >= self.threshold).double().mean())}

    def trajectory_rows(self, config: EnvConfig, policy: str, episodes: Episodes, count: int) -> list[dict[str, Any]]:
        steps, nxt = episodes.steps, episodes.steps["next"]
        width = int(steps["observation"].shape[-1])
        names = self.observation_names or tuple(f"observation_{index}" for index in range(width))
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

    # ----------------------------------------------------------------------- state

    def get_state(self, env: EnvBase) -> dict[str, Any]:
        copies = [_copy_state(copy) for copy in _vector_env(env).envs]
        if any(state is None for state in copies):
            return {"exact": False}
        return {"exact": True, "copies": copies}

    def set_state(self, env: EnvBase, state: Mapping[str, Any]) -> bool:
        if not state["exact"]:
            return False
        copies = _vector_env(env).envs
        saved = state["copies"]
        if len(saved) != len(copies):
            raise ValueError(f"the state holds {len(saved)} {self.name} copies, the environment {len(copies)}")
        for copy, copy_state in zip(copies, saved, strict=True):
            _restore_copy(copy, copy_state)
        return True


def import_packages(config: EnvConfig) -> None:
    """Import ``env.gym.packages``, whose import registers their Gymnasium ids."""
    for package in gym_settings(config).packages:
        try:
            importlib.import_module(package)
        except ImportError as error:
            raise ConfigError(f"env.gym.packages: cannot import {package!r} ({error})") from None


def _vector_env(env: EnvBase) -> SyncVectorEnv:
    vector_env = env.base_env._env
    assert isinstance(vector_env, SyncVectorEnv)
    return vector_env


def _layers(copy: gym.Env[Any, Any]) -> Iterator[Any]:
    """The copy's wrappers, outermost first, then the unwrapped env."""
    layer: Any = copy
    while isinstance(layer, gym.Wrapper):
        yield layer
        layer = layer.env
    yield layer


def _encode(value: Any) -> Any:
    """``value`` as checkpoint data (JSON or a tensor), or ``None`` when it is not plain data."""
    if isinstance(value, PLAIN):
        return {"value": value}
    if isinstance(value, np.generic):
        return {"value": value.item()}
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return {"array": torch.as_tensor(value.copy())}
    if isinstance(value, np.random.Generator):
        return {"generator": value.bit_generator.state}
    if isinstance(value, (list, tuple)):
        items = [_encode(item) for item in value]
        return None if any(item is None for item in items) else {"items": items, "tuple": isinstance(value, tuple)}
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        entries = {key: _encode(item) for key, item in value.items()}
        return None if any(item is None for item in entries.values()) else {"dict": entries}
    return None


def _decode(data: Mapping[str, Any]) -> Any:
    if "value" in data:
        return data["value"]
    if "array" in data:
        return data["array"].numpy().copy()
    if "generator" in data:
        state = dict(data["generator"])
        bit_generator = getattr(np.random, state["bit_generator"])()
        bit_generator.state = state
        return np.random.Generator(bit_generator)
    if "items" in data:
        items = [_decode(item) for item in data["items"]]
        return tuple(items) if data["tuple"] else items
    return {key: _decode(item) for key, item in data["dict"].items()}


def _copy_state(copy: gym.Env[Any, Any]) -> list[dict[str, Any]] | None:
    """Every plain attribute of each layer (``None`` when one holds anything else: not capturable)."""
    layers = []
    for layer in _layers(copy):
        state = {}
        for name, value in vars(layer).items():
            if name in DEFINITION or isinstance(value, (gym.Space, gym.envs.registration.EnvSpec)):
                continue
            encoded = _encode(value)
            if encoded is None:
                return None
            state[name] = encoded
        layers.append(state)
    return layers


def _restore_copy(copy: gym.Env[Any, Any], state: Sequence[Mapping[str, Any]]) -> None:
    for layer, saved in zip(_layers(copy), state, strict=True):
        for name, data in saved.items():
            setattr(layer, name, _decode(data))
