"""A tiny environment with a known optimum, in the spirit of Stable-Baselines3's identity environments.

Each step shows one of ``K`` symbols (one-hot) and pays 1 for the action with the same index,
0 otherwise; an episode is ``LENGTH`` steps. The optimum is ``LENGTH``, a random policy
earns ``LENGTH / K``. Registered as the profile ``identity`` by the tests that use it, with
:func:`reservoir_dqn.envs.register`: its settings are a section of its own, ``env.identity``
(:class:`IdentitySettings`), and nothing in ``reservoir_dqn.config`` knows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import Compose, EnvBase, RewardSum, StepCounter

from reservoir_dqn.config import EnvConfig
from reservoir_dqn.config.sections import Section
from reservoir_dqn.envs.baselines import RandomPolicy
from reservoir_dqn.envs.profile import RETURN, SCORE, EnvProfile, Episodes

SYMBOLS = 4
LENGTH = 20


class IdentitySettings(Section):
    """``env.identity``: the task's size."""

    symbols: int = Field(ge=2, description="Symbols K (and actions).")
    length: int = Field(ge=1, description="Steps per episode.")


# What tests write to params.yaml to train on it.
IDENTITY = {"env.name": "identity", "env.section": "identity", "env.identity": {"symbols": SYMBOLS, "length": LENGTH}}


class IdentityEnv(EnvBase):
    def __init__(self, slot_seeds: Sequence[int], symbols: int = SYMBOLS, length: int = LENGTH) -> None:
        super().__init__(batch_size=torch.Size([len(slot_seeds)]))
        self.symbols, self.length = symbols, length
        self.generators = [np.random.default_rng(seed) for seed in slot_seeds]
        self.symbol = torch.zeros(len(slot_seeds), dtype=torch.long)
        self.t = torch.zeros(len(slot_seeds), dtype=torch.long)
        shape = self.batch_size
        self.observation_spec = Composite(observation=Bounded(0.0, 1.0, shape=(*shape, symbols)), shape=shape)
        self.action_spec = Categorical(symbols, shape=shape)
        self.reward_spec = Unbounded(shape=(*shape, 1))
        self.full_done_spec = Composite(
            done=Categorical(2, shape=(*shape, 1), dtype=torch.bool),
            terminated=Categorical(2, shape=(*shape, 1), dtype=torch.bool),
            truncated=Categorical(2, shape=(*shape, 1), dtype=torch.bool),
            shape=shape,
        )

    def _draw(self, slots: torch.Tensor) -> None:
        for slot in slots.tolist():
            self.symbol[slot] = int(self.generators[slot].integers(self.symbols))

    def _observe(self) -> torch.Tensor:
        return torch.nn.functional.one_hot(self.symbol, self.symbols).float()

    def _reset(self, tensordict: TensorDictBase | None, **kwargs: object) -> TensorDictBase:
        mask = None if tensordict is None else tensordict.get("_reset", None)
        slots = torch.arange(len(self.t)) if mask is None else mask.reshape(-1).nonzero().squeeze(-1)
        self.t[slots] = 0
        self._draw(slots)
        flags = torch.zeros(*self.batch_size, 1, dtype=torch.bool)
        return TensorDict(
            {"observation": self._observe(), "done": flags, "terminated": flags.clone(), "truncated": flags.clone()},
            batch_size=self.batch_size,
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        reward = (tensordict["action"].reshape(-1) == self.symbol).float().unsqueeze(-1)
        self.t = self.t + 1
        self._draw(torch.arange(len(self.t)))
        ended = (self.t >= self.length).unsqueeze(-1)
        return TensorDict(
            {
                "observation": self._observe(),
                "reward": reward,
                "done": ended,
                "terminated": ended.clone(),
                "truncated": torch.zeros_like(ended),
            },
            batch_size=self.batch_size,
        )

    def _set_seed(self, seed: int | None) -> None:
        pass


class IdentityProfile(EnvProfile):
    name = "identity"
    section = "identity"
    settings_model = IdentitySettings
    headline = (SCORE, RETURN)
    optimum_label = "a return of env.identity.length"

    def make(self, config: EnvConfig, slot_seeds: Sequence[int]) -> EnvBase:
        settings = config.settings(IdentitySettings)
        env = IdentityEnv(slot_seeds, settings.symbols, settings.length)
        return env.append_transform(Compose(StepCounter(), RewardSum()))

    def episode_limit(self, config: EnvConfig) -> int:
        return config.settings(IdentitySettings).length

    def baselines(self, config: EnvConfig, num_actions: int, seed: int) -> dict[str, TensorDictModuleBase]:
        return {"random": RandomPolicy(num_actions, seed)}

    def optimum_return(self, config: EnvConfig, baseline_returns: Mapping[str, float]) -> float:
        return float(config.settings(IdentitySettings).length)

    def policy_metrics(self, config: EnvConfig, episodes: Episodes) -> dict[str, float]:
        return {}

    def trajectory_rows(self, config: EnvConfig, policy: str, episodes: Episodes, count: int) -> list[dict[str, Any]]:
        return []

    def get_state(self, env: EnvBase) -> dict[str, Any]:
        base = env.base_env
        assert isinstance(base, IdentityEnv)
        return {
            "symbol": base.symbol.clone(),
            "t": base.t.clone(),
            "rngs": [g.bit_generator.state for g in base.generators],
        }

    def set_state(self, env: EnvBase, state: Mapping[str, Any]) -> bool:
        base = env.base_env
        assert isinstance(base, IdentityEnv)
        base.symbol, base.t = state["symbol"].clone(), state["t"].clone()
        for generator, saved in zip(base.generators, state["rngs"], strict=True):
            generator.bit_generator.state = saved
        return True
