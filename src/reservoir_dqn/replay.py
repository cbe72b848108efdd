"""The replay buffer: a TorchRL TensorDictReplayBuffer over a LazyTensorStorage."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.data import LazyTensorStorage, PrioritizedSampler, RandomSampler, TensorDictReplayBuffer
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.envs import MultiStepTransform

from reservoir_dqn.config import DQNConfig

# What one-step DQN needs from a collected frame; everything else the collector records
# (Q-values, trajectory ids, running episode return, ...) stays out of the buffer.
TRANSITION_KEYS = (
    "observation",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "done"),
    ("next", "terminated"),
)


def make_replay_buffer(config: DQNConfig, device: torch.device | str = "cpu") -> TensorDictReplayBuffer:
    """Uniform or prioritized replay of ``config.buffer_size`` transitions, sampled in ``config.batch_size``."""
    sampler: Sampler
    if config.prioritized:
        sampler = PrioritizedSampler(config.buffer_size, alpha=config.priority_alpha, beta=config.priority_beta)
    else:
        sampler = RandomSampler()
    return TensorDictReplayBuffer(
        storage=LazyTensorStorage(config.buffer_size, device=device),
        sampler=sampler,
        batch_size=config.batch_size,
        priority_key="td_error",
    )


class TransitionWriter:
    """Turns collected batches (envs x time) into stored transitions.

    With ``n_steps == 1`` a transition is one step. With more, TorchRL's
    :class:`~torchrl.envs.MultiStepTransform` replaces reward and next observation by the
    discounted ``n``-step return and the observation ``n`` steps ahead (fewer at an
    episode's end) and records ``steps_to_next_obs``, which ``DQNLoss`` uses to discount
    the bootstrap by ``gamma ** steps``. The transform holds the last ``n`` frames of each
    environment until their future is known; :meth:`start_segment` drops them when the
    environments are reset, so no transition spans a reset.
    """

    def __init__(self, buffer: TensorDictReplayBuffer, n_steps: int, gamma: float) -> None:
        self.buffer = buffer
        self.n_steps = n_steps
        self.gamma = gamma
        self.keys = (*TRANSITION_KEYS, "steps_to_next_obs") if n_steps > 1 else TRANSITION_KEYS
        self._multi_step: MultiStepTransform | None = None
        self.start_segment()

    def start_segment(self) -> None:
        """Forget frames held back for n-step returns (the environments were just reset)."""
        self._multi_step = MultiStepTransform(self.n_steps, self.gamma) if self.n_steps > 1 else None

    def write(self, batch: TensorDictBase) -> int:
        """Store the transitions a batch completes; return how many."""
        if self._multi_step is not None:
            batch = self._multi_step.inv(batch)
            if batch is None:
                return 0
        flat = batch.select(*self.keys).contiguous().reshape(-1)
        self.buffer.extend(flat)
        return int(flat.numel())
