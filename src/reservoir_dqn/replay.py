"""The replay buffer: a TorchRL TensorDictReplayBuffer over a LazyTensorStorage."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.data import LazyTensorStorage, PrioritizedSampler, RandomSampler, TensorDictReplayBuffer
from torchrl.data.replay_buffers.samplers import Sampler

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


def transitions(batch: TensorDictBase) -> TensorDictBase:
    """Flatten a collected batch (envs x time) into the transitions the buffer stores."""
    return batch.select(*TRANSITION_KEYS).reshape(-1)
