"""The replay buffer: a TorchRL TensorDictReplayBuffer over a LazyTensorStorage."""

from __future__ import annotations

import shutil
import tempfile
import weakref

import torch
from tensordict import TensorDictBase
from torchrl.data import (
    LazyMemmapStorage,
    LazyTensorStorage,
    PrioritizedSampler,
    RandomSampler,
    TensorDictReplayBuffer,
)
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.data.replay_buffers.storages import Storage
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
    """Uniform or prioritized replay of ``config.buffer_size`` transitions, sampled in ``config.batch_size``.

    The storage is a ``LazyTensorStorage`` in memory, or a ``LazyMemmapStorage`` on disk when
    ``config.buffer_on_disk`` (for buffers larger than the machine's memory).
    """
    sampler: Sampler
    if config.prioritized:
        sampler = PrioritizedSampler(config.buffer_size, alpha=config.priority_alpha, beta=config.priority_beta)
    else:
        sampler = RandomSampler()
    storage: Storage
    scratch = None
    if config.buffer_on_disk:
        scratch = tempfile.mkdtemp(prefix="reservoir-dqn-replay-")
        storage = LazyMemmapStorage(config.buffer_size, scratch_dir=scratch, device=device)
    else:
        storage = LazyTensorStorage(config.buffer_size, device=device)
    buffer = TensorDictReplayBuffer(
        storage=storage, sampler=sampler, batch_size=config.batch_size, priority_key="td_error"
    )
    if scratch is not None:  # the files go when the buffer does
        weakref.finalize(buffer, shutil.rmtree, scratch, ignore_errors=True)
    return buffer


class TransitionWriter:
    """Turns collected batches (envs x time) into stored transitions.

    With ``n_steps == 1`` a transition is one step. With more, TorchRL's
    :class:`~torchrl.envs.MultiStepTransform` replaces reward and next observation by the
    discounted ``n``-step return and the observation ``n`` steps ahead (fewer at an
    episode's end) and records ``steps_to_next_obs``, which ``DQNLoss`` uses to discount
    the bootstrap by ``gamma ** steps``. The end flags (``done``, ``terminated``,
    ``truncated``) follow the next observation: left as they are (TorchRL's default keeps
    them at step ``t``), a window that reaches a termination would bootstrap from the
    terminal observation. The transform holds the last ``n`` frames of each
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
        self._multi_step = None
        if self.n_steps > 1:
            # done_keys=[]: gather the end flags at t + steps like every other ("next", ...) entry.
            self._multi_step = MultiStepTransform(self.n_steps, self.gamma, done_keys=[])

    def write(self, batch: TensorDictBase) -> int:
        """Store the transitions a batch completes; return how many."""
        if self._multi_step is not None:
            batch = self._multi_step.inv(batch)
            if batch is None:
                return 0
        flat = batch.select(*self.keys).contiguous().reshape(-1)
        self.buffer.extend(flat)
        return int(flat.numel())
