"""Replay: one TorchRL buffer that keeps every agent's transitions apart (the n-step writer is the algorithm's,
:class:`reservoir_dqn.agent.dqn.TransitionWriter`).

The storage is a ``LazyTensorStorage`` (or, for buffers beyond RAM, a ``LazyMemmapStorage``)
whose element is one transition of every agent, written together: row ``r``, column ``k``
is agent ``k``'s ``r``-th stored transition. The samplers draw each agent's rows from its
own column only, with indices drawn from that agent's own generator
(:mod:`reservoir_dqn.agent.streams`), so a sample never mixes agents, no two agents share which
transitions they replay, and an agent's indices do not depend on how many agents train.

Prioritized replay follows Schaul et al. (2016): a transition's priority is ``|delta|``
(TorchRL's ``DQNLoss`` writes ``delta ** 2`` as ``td_error``:
:func:`reservoir_dqn.agent.dqn.priorities` takes its root), the sampler raises it to
``alpha``, and the importance-sampling exponent ``beta`` anneals linearly from
``priority_beta`` to 1 over ``priority_beta_frames`` (:func:`anneal_beta`). A sample is
``agents * batch_size`` transitions, agent-major, as :func:`reservoir_dqn.agent.dqn.update` expects.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import torch
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, PrioritizedSampler, TensorDictReplayBuffer
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.data.replay_buffers.storages import Storage

from reservoir_dqn.agent.streams import REPLAY, generators
from reservoir_dqn.config import DQNConfig


class PerAgentSampler(Sampler):
    """Uniform replay per agent: ``batch_size / agents`` rows drawn from each agent's column with its own generator."""

    def __init__(self, agents: int, agent_generators: list[torch.Generator]) -> None:
        self.agents = agents
        self.generators = agent_generators

    def sample(self, storage: Storage, batch_size: int) -> tuple[tuple[torch.Tensor, torch.Tensor], dict[str, Any]]:
        per_agent = batch_size // self.agents
        rows = torch.cat([torch.randint(len(storage), (per_agent,), generator=g) for g in self.generators])
        return (rows, _agent_columns(self.agents, per_agent)), {}

    def _empty(self) -> None:
        pass

    def dumps(self, path: Path) -> None:
        pass

    def loads(self, path: Path) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


class PerAgentPrioritizedSampler(Sampler):
    """Prioritized replay per agent: one TorchRL :class:`PrioritizedSampler` (its own sum tree) per agent.

    Each agent's sampler draws from that agent's generator: ``Sampler._rng`` is the
    attribute TorchRL's ``ReplayBuffer.set_rng`` sets (not public on a bare sampler).
    """

    def __init__(
        self, agents: int, capacity: int, alpha: float, beta: float, agent_generators: list[torch.Generator]
    ) -> None:
        self.agents = agents
        self.generators = agent_generators
        self.samplers = [PrioritizedSampler(capacity, alpha=alpha, beta=beta) for _ in range(agents)]
        for sampler, generator in zip(self.samplers, agent_generators, strict=True):
            sampler._rng = generator

    def sample(self, storage: Storage, batch_size: int) -> tuple[tuple[torch.Tensor, torch.Tensor], dict[str, Any]]:
        per_agent = batch_size // self.agents
        drawn = [sampler.sample(storage, per_agent) for sampler in self.samplers]
        rows = torch.cat([torch.as_tensor(index) for index, _ in drawn])
        weights = torch.cat([torch.as_tensor(info["priority_weight"]) for _, info in drawn])
        return (rows, _agent_columns(self.agents, per_agent)), {"priority_weight": weights}

    def add(self, index: int) -> None:
        for sampler in self.samplers:
            sampler.add(index)

    def extend(self, index: torch.Tensor) -> None:
        for sampler in self.samplers:
            sampler.extend(index)

    def mark_update(self, index: torch.Tensor, *, storage: Storage | None = None) -> None:
        """New rows were written: every agent's tree gives them the highest priority so far."""
        for sampler in self.samplers:
            sampler.mark_update(index)

    def update_priority(self, index: torch.Tensor, priority: torch.Tensor, *, storage: Storage | None = None) -> None:
        index = torch.as_tensor(index).reshape(-1, 2)
        priority = torch.as_tensor(priority).reshape(-1)
        for agent, sampler in enumerate(self.samplers):
            mine = index[:, 1] == agent
            sampler.update_priority(index[mine, 0], priority[mine])

    def _empty(self) -> None:
        for sampler in self.samplers:
            sampler._empty()

    def dumps(self, path: Path) -> None:
        for agent, sampler in enumerate(self.samplers):
            folder = Path(path) / f"agent-{agent}"
            folder.mkdir(parents=True, exist_ok=True)
            sampler.dumps(folder)

    def loads(self, path: Path) -> None:
        for agent, sampler in enumerate(self.samplers):
            sampler.loads(Path(path) / f"agent-{agent}")

    def state_dict(self) -> dict[str, Any]:
        return {str(agent): sampler.state_dict() for agent, sampler in enumerate(self.samplers)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for agent, sampler in enumerate(self.samplers):
            sampler.load_state_dict(state_dict[str(agent)])


def _agent_columns(agents: int, per_agent: int) -> torch.Tensor:
    return torch.arange(agents).repeat_interleave(per_agent)


def anneal_beta(buffer: TensorDictReplayBuffer, config: DQNConfig, frames: int) -> None:
    """Prioritized replay's beta after ``frames``: linear from ``priority_beta`` to 1 at ``priority_beta_frames``."""
    sampler = buffer.sampler
    if isinstance(sampler, PerAgentPrioritizedSampler):
        fraction = min(frames / config.priority_beta_frames, 1.0)
        beta = config.priority_beta + (1.0 - config.priority_beta) * fraction
        for agent_sampler in sampler.samplers:
            agent_sampler.beta = beta


def make_replay_buffer(
    config: DQNConfig, agents: int, device: torch.device | str = "cpu", seeds: list[int] | None = None
) -> TensorDictReplayBuffer:
    """Uniform or prioritized replay of ``config.buffer_size`` transitions per agent.

    Samples hold ``config.batch_size`` transitions of each agent. The storage lives in
    memory, or in memory-mapped files of a temporary folder when ``config.buffer_on_disk``.

    :param seeds: the agents' seeds: each draws its replay indices from a generator of its own.
    """
    sampler: Sampler
    streams = generators(seeds, agents, REPLAY)
    if config.prioritized:
        sampler = PerAgentPrioritizedSampler(
            agents, config.buffer_size, config.priority_alpha, config.priority_beta, streams
        )
    else:
        sampler = PerAgentSampler(agents, streams)
    storage: Storage
    scratch = None
    if config.buffer_on_disk:
        scratch = tempfile.mkdtemp(prefix="reservoir-dqn-replay-")
        storage = LazyMemmapStorage(config.buffer_size, scratch_dir=scratch, device=device)
    else:
        storage = LazyTensorStorage(config.buffer_size, device=device)
    buffer = TensorDictReplayBuffer(
        storage=storage, sampler=sampler, batch_size=agents * config.batch_size, priority_key="td_error"
    )
    if scratch is not None:  # the files go when the buffer does
        weakref.finalize(buffer, shutil.rmtree, scratch, ignore_errors=True)
    return buffer
