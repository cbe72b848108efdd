"""Collection: step a batched environment with the exploring policy, batch after batch.

This is the loop at the heart of TorchRL's ``Collector`` (``policy`` then
``env.step_and_maybe_reset``, stacked over time), kept here because exact resume needs the
state it carries between batches, which the ``Collector`` keeps private: the *carrier*,
the environment's current output (observation, running ``step_count`` and
``episode_reward``), and the environment's own state. :meth:`Rollout.state_dict` holds
both, so a checkpoint resumes every episode in flight instead of cutting it. An environment
whose state cannot be captured (a Box2D world) restarts its episodes instead:
:attr:`Rollout.exact` says which happened.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from reservoir_dqn.envs import EnvProfile


class Rollout:
    """Collects ``steps`` steps of every environment per call, continuing where the last call stopped.

    :param env: a batched environment (its batch is every agent's environments, agent-major).
    :param policy: writes ``action`` (and whatever else it records) from the carrier.
    :param steps: time steps per batch; a batch holds ``env.batch_size x steps`` frames.
    :param profile: the environment's profile, which saves and restores its state.
    """

    def __init__(self, env: EnvBase, policy: TensorDictModuleBase, steps: int, profile: EnvProfile) -> None:
        self.env, self.policy, self.steps, self.profile = env, policy, steps, profile
        self.carrier = env.reset()
        self.exact = True  # False once a resume restarted the episodes in flight (their state was not saved)

    @torch.no_grad()
    def collect(self) -> TensorDictBase:
        """The next ``[envs, steps]`` frames, each with its ``next`` entry; finished episodes restart."""
        frames = []
        with set_exploration_type(ExplorationType.RANDOM):
            for _ in range(self.steps):
                step, self.carrier = self.env.step_and_maybe_reset(self.policy(self.carrier))
                frames.append(step)
        return torch.stack(frames, dim=-1)

    def state_dict(self) -> dict[str, Any]:
        return {"carrier": self.carrier.to_dict(), "env": self.profile.get_state(self.env)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.profile.set_state(self.env, state["env"]):
            self.carrier = TensorDict(state["carrier"], batch_size=self.env.batch_size)
        else:  # the environment's state was not saved: its episodes restart here, from a reset
            self.carrier = self.env.reset()
            self.exact = False

    def close(self) -> None:
        self.env.close()
