"""A training session: everything one training process holds, built fresh or restored from a checkpoint.

:func:`start` restores the newest usable checkpoint of these parameters and this code, or
builds a fresh session. Building is deterministic: every generator is seeded from the
master seed, so a fresh session is the same on every call, and a restored one continues
exactly where its checkpoint left off (the environments' episodes in flight, their
generators and the frames held back for n-step returns included).
"""

from __future__ import annotations

import copy
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torchrl.checkpoint import Checkpoint, GlobalRNGState
from torchrl.data import TensorDictReplayBuffer
from torchrl.modules import QValueActor

from reservoir_dqn.agent import Agent, NetworkSpec, make_agent
from reservoir_dqn.agent.dqn import TransitionWriter
from reservoir_dqn.agent.streams import RandomStreams
from reservoir_dqn.common.metrics import MetricGroup
from reservoir_dqn.config import TRAIN_SEED_LIMIT, Config
from reservoir_dqn.envs import EnvProfile, profile
from reservoir_dqn.training.checkpoints import (
    Checkpointer,
    CorruptCheckpoint,
    SafeReplayBufferAdapter,
    checkpoint_frames,
    checkpoint_key,
)
from reservoir_dqn.training.collection import Rollout
from reservoir_dqn.training.curves import LEARNING, PROGRESS, VALIDATION
from reservoir_dqn.training.replay import make_replay_buffer
from reservoir_dqn.training.validation import ValidationSet, validation_set

BUFFER_CHECKPOINT_AUTO_LIMIT = 1_000_000  # 'auto' saves the replay buffer up to this many transitions in all

log = logging.getLogger(__name__)


class Progress(BaseModel):
    """Counters and per-agent results that a checkpoint restores with the rest of the training state."""

    frames: int = 0
    updates: int = 0
    train_seconds: float = 0.0  # collection and updates
    eval_seconds: float = 0.0  # periodic validation
    validated_at: int = -1  # frames of the newest validation
    last_return: list[float] = []  # per agent: newest validation
    last_score: list[float] = []
    best_return: list[float] = []  # per agent: best validation so far ...
    best_score: list[float] = []
    best_frames: list[int] = []  # ... and when
    stopped_frames: list[int | None] = []  # per agent: when it reached stop_at_validation_return ...
    stopped_seconds: list[float | None] = []  # ... and after how much training and validation time
    solved_frames: list[int | None] = []  # per agent: when its validation first reached the profile's solved_return ...
    solved_seconds: list[float | None] = []  # ... and after how much training and validation time
    plateau_recent: list[list[float]] = []  # per agent: its last plateau_window validation scores
    plateau_best: list[float] = []  # per agent: the best of their moving average that counted as a rise ...
    plateau_frames: list[int] = []  # ... when it came ...
    plateau_count: list[int] = []  # ... and the validations since that did not beat it by plateau_min_delta
    converged_frames: list[int | None] = []  # per agent: the frames of that best, once plateau_validations passed
    run_ids: dict[str, str] = {}  # the tracking runs this training logs to, continued on resume
    resumed_without_buffer: list[int] = []  # frames of each resume that restarted from an empty replay buffer
    resumed_at_episode_boundary: list[int] = []  # frames of each resume that restarted the episodes in flight

    def state_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in Progress.model_validate(state):
            setattr(self, name, value)


@dataclass
class Session:
    """The live objects of one training process; rebuilt from scratch for every restore attempt."""

    config: Config
    profile: EnvProfile
    spec: NetworkSpec
    agent: Agent
    buffer: TensorDictReplayBuffer
    writer: TransitionWriter
    rollout: Rollout
    best: QValueActor  # each agent's best-validated averaged weights
    stopped: QValueActor  # the weights of agents that stopped early, as they were then
    progress: Progress
    validation: ValidationSet  # what every agent is validated on, and the score's reference there
    checkpoint: Checkpoint
    checkpoints: Checkpointer | None  # where the checkpoints go; None: nowhere (a tuning trial)
    resumed_from: int = 0

    def close(self) -> None:
        self.rollout.close()

    @property
    def metric_groups(self) -> list[MetricGroup]:
        """Every group of training curves this session emits."""
        groups = [PROGRESS, LEARNING, self.profile.episode_group, VALIDATION]
        return groups if self.profile.batch_group is None else [*groups, self.profile.batch_group]


def agent_seeds(seed: int, agents: int) -> list[int]:
    """One seed per agent, derived from the master seed (independent streams, NumPy's SeedSequence)."""
    children = np.random.SeedSequence(seed).spawn(agents)
    return [int(child.generate_state(1, dtype=np.uint32)[0]) for child in children]


def env_seeds(seed: int, agents: int, envs: int) -> list[int]:
    """Seeds of every training environment, agent-major, all below TRAIN_SEED_LIMIT."""
    return [
        int(value) % TRAIN_SEED_LIMIT
        for agent in range(agents)
        for value in np.random.SeedSequence([seed, agent]).generate_state(envs, dtype=np.uint32)
    ]


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; anything else is used as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def start(config: Config, checkpoint_dir: Path | None) -> Session:
    """The newest usable checkpoint of these parameters, restored; or a fresh session if there is none.

    :param checkpoint_dir: where the checkpoints are, and where training writes them; ``None``
        for a fresh session that never resumes and writes none (a tuning trial: its
        checkpoints, replay buffer included, would be written only to be deleted).
    """
    torch.set_num_threads(config.train.torch_threads or os.cpu_count() or 1)
    # Adam's second moments of tiny gradients fall below float32's normal range, where x86 arithmetic runs
    # about four times slower: the optimiser step took 0.81 ms of each default update with them, 0.22 ms
    # flushed to zero (bench/results/speed.md). Values under 1.2e-38 change no decision a network makes.
    torch.set_flush_denormal(True)
    device = resolve_device(config.train.device)
    if checkpoint_dir is None:
        return _build(config, device, None)
    # The checkpoints of these parameters and this code (others are never resumed).
    checkpoints = Checkpointer(checkpoint_dir, checkpoint_key(config.training_hash), config.train.keep_checkpoints)
    for path in checkpoints.candidates():
        if checkpoint_frames(path) > config.train.total_frames:
            continue
        session = _build(config, device, checkpoints)
        try:
            checkpoints.restore(session.checkpoint, path)
        except CorruptCheckpoint as error:
            session.close()
            checkpoints.set_aside(path, str(error))
            continue
        session.resumed_from = session.progress.frames
        if "replay_buffer" not in session.checkpoint:
            session.progress.resumed_without_buffer.append(session.progress.frames)
            log.warning(
                f"resuming from {path} without its replay buffer (train.checkpoint_buffer: "
                f"{config.train.checkpoint_buffer}): learning restarts from an empty buffer, so this run is not an "
                "exact resume (metrics/train.json records it)"
            )
        else:
            log.info(f"resuming from {path} ({session.progress.frames:,} frames per agent)")
        if not session.rollout.exact:
            session.progress.resumed_at_episode_boundary.append(session.progress.frames)
            log.warning(
                f"resuming at an episode boundary: {config.env.name}'s state cannot be saved (it holds more than "
                "arrays, numbers and generators), so the episodes in flight restart from a reset; this run is not "
                "an exact resume (metrics/train.json records it)"
            )
        return session
    return _build(config, device, checkpoints)


def _build(config: Config, device: torch.device, checkpoints: Checkpointer | None) -> Session:
    """Everything a training process holds, freshly seeded (identical on every call)."""
    agents, envs = config.train.seeds, config.env.num_envs
    env_profile = profile(config.env)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    env = env_profile.make(config.env, env_seeds(config.seed, agents, envs))
    spec = NetworkSpec(
        obs_dim=int(env.observation_spec["observation"].shape[-1]),
        num_actions=int(env.action_spec_unbatched.space.n),
        hidden_sizes=tuple(config.dqn.hidden_sizes),
        env_name=config.env.name,
        obs_scale=env_profile.observation_scale(config.env),
        agents=agents,
        head=config.dqn.head,
    )
    seeds = agent_seeds(config.seed, agents)
    agent = make_agent(config.dqn, spec, device, seeds, compile_loss=config.train.compile)
    buffer = make_replay_buffer(config.dqn, agents, device, seeds)
    writer = TransitionWriter(buffer, agents, config.dqn.n_steps, config.dqn.gamma, config.dqn.reward_scale)
    rollout = Rollout(env, agent.policy, config.train.frames_per_batch // envs, env_profile)
    validation = validation_set(env_profile, config, spec.num_actions)
    progress = Progress(
        last_return=[float("nan")] * agents,
        last_score=[float("nan")] * agents,
        best_return=[float("-inf")] * agents,
        best_score=[float("-inf")] * agents,
        best_frames=[0] * agents,
        stopped_frames=[None] * agents,
        stopped_seconds=[None] * agents,
        solved_frames=[None] * agents,
        solved_seconds=[None] * agents,
        plateau_recent=[[] for _ in range(agents)],
        plateau_best=[float("-inf")] * agents,
        plateau_frames=[0] * agents,
        plateau_count=[0] * agents,
        converged_frames=[None] * agents,
    )
    best, stopped = copy.deepcopy(agent.averaged_network), copy.deepcopy(agent.averaged_network)
    checkpoint = Checkpoint(
        format="archive",
        loss=agent.loss,
        averaged=agent.averaged_network,
        best=best,
        stopped=stopped,
        optimizer=agent.optimizer,
        exploration=agent.exploration,
        target_updater=agent.target_updater,
        rng=GlobalRNGState(),
        streams=RandomStreams(exploration=agent.exploration.generators, replay=buffer.sampler.generators),
        progress=progress,
        rollout=rollout,
        writer=writer,
    )
    if config.train.checkpoint_buffer == "always" or (
        config.train.checkpoint_buffer == "auto" and agents * config.dqn.buffer_size <= BUFFER_CHECKPOINT_AUTO_LIMIT
    ):
        checkpoint.register("replay_buffer", buffer, adapter=SafeReplayBufferAdapter())
    return Session(
        config,
        env_profile,
        spec,
        agent,
        buffer,
        writer,
        rollout,
        best,
        stopped,
        progress,
        validation,
        checkpoint,
        checkpoints,
    )
