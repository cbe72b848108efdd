"""The DQN training loop, top to bottom in algorithm order.

collect a batch -> store its transitions -> anneal epsilon by frames collected ->
when the buffer is warm, sample and update (the target network follows) -> log ->
every ``eval_interval_frames``: greedy evaluation -> every ``checkpoint_interval_frames``:
checkpoint.

Exact resume. Training is split into segments of ``checkpoint_interval_frames``; each
segment starts by re-seeding and resetting the environments from ``(seed, segment)``
(an episode still running there is truncated, not terminated). A checkpoint, written at
a segment boundary, holds every other piece of state: networks, optimiser, exploration,
target updater, RNG states, counters and the replay buffer. A run resumed from it
therefore computes exactly what the uninterrupted run computes after that boundary.
"""

from __future__ import annotations

import copy
import os
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase
from torchrl.checkpoint import Checkpoint, GlobalRNGState
from torchrl.collectors import Collector
from torchrl.data import TensorDictReplayBuffer
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType
from torchrl.modules import QValueActor
from tqdm import tqdm

from reservoir_dqn.agent import Agent, NetworkSpec, anneal_exploration, make_agent, update
from reservoir_dqn.checkpoint import Checkpointer, CorruptCheckpoint, SafeReplayBufferAdapter, checkpoint_frames
from reservoir_dqn.config import TRAIN_SEED_LIMIT, VALIDATION_SEED_BASE, Config, EnvConfig
from reservoir_dqn.envs import RESERVOIR, SUCCESS_COUNTS, episode_success, make_env, observation_scale
from reservoir_dqn.envs.reservoir import INFO_KEYS
from reservoir_dqn.evaluation import run_episodes, success
from reservoir_dqn.replay import TransitionWriter, make_replay_buffer
from reservoir_dqn.tracking import CsvLog, MetricSink, Tracker, Tracking

BUFFER_CHECKPOINT_AUTO_LIMIT = 200_000  # 'auto' saves the replay buffer up to this many transitions
RECENT_EPISODES = 100  # the progress bar and summary report the mean over this many episodes


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the frame and update."""


@dataclass
class Progress:
    """Counters that a checkpoint restores with the rest of the training state."""

    frames: int = 0
    updates: int = 0
    episodes: int = 0
    train_seconds: float = 0.0  # wall time of collection and updates, all processes together
    eval_seconds: float = 0.0  # wall time of the periodic greedy evaluations
    recent_returns: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_EPISODES))
    last_eval_return: float = float("nan")
    best_eval_return: float = float("-inf")  # best periodic evaluation so far ...
    best_eval_frames: int = 0  # ... and when it happened
    run_id: str = ""  # the MLflow run this training logs to, continued on resume

    def state_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "updates": self.updates,
            "episodes": self.episodes,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "recent_returns": list(self.recent_returns),
            "last_eval_return": self.last_eval_return,
            "best_eval_return": self.best_eval_return,
            "best_eval_frames": self.best_eval_frames,
            "run_id": self.run_id,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.frames = int(state["frames"])
        self.updates = int(state["updates"])
        self.episodes = int(state["episodes"])
        self.train_seconds = float(state["train_seconds"])
        self.eval_seconds = float(state["eval_seconds"])
        self.recent_returns = deque((float(value) for value in state["recent_returns"]), maxlen=RECENT_EPISODES)
        self.last_eval_return = float(state["last_eval_return"])
        self.best_eval_return = float(state["best_eval_return"])
        self.best_eval_frames = int(state["best_eval_frames"])
        self.run_id = str(state["run_id"])

    def record_episodes(self, returns: torch.Tensor) -> None:
        self.episodes += len(returns)
        self.recent_returns.extend(returns.tolist())


@dataclass
class TrainResult:
    """What training produced: the network to ship, its description and summary metrics.

    ``q_network`` is the best-evaluated network when ``train.select_best`` is on, else the last.
    """

    q_network: QValueActor
    agent: Agent
    spec: NetworkSpec
    summary: dict[str, float | int | str | None]


@dataclass
class _Session:
    """The live objects of one training process; rebuilt from scratch for every restore attempt."""

    agent: Agent
    best_network: QValueActor  # a copy of the Q-network as of its best periodic evaluation
    buffer: TensorDictReplayBuffer
    progress: Progress
    checkpoint: Checkpoint
    collector: Collector

    def close(self) -> None:
        self.collector.shutdown()


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; anything else is used as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def segment_seed(seed: int, segment: int, num_envs: int) -> int:
    """Environment seed of training segment ``segment``: distinct per segment, below TRAIN_SEED_LIMIT."""
    state = np.random.SeedSequence([seed, segment]).generate_state(1, dtype=np.uint32)[0]
    return int(state) % (TRAIN_SEED_LIMIT - num_envs)


def network_spec(env: EnvBase, config: EnvConfig, hidden_sizes: Sequence[int]) -> NetworkSpec:
    """Read observation size and number of actions off the environment's specs."""
    return NetworkSpec(
        obs_dim=int(env.observation_spec["observation"].shape[-1]),
        num_actions=int(env.action_spec_unbatched.space.n),
        hidden_sizes=tuple(hidden_sizes),
        env_name=config.name,
        obs_scale=observation_scale(config),
    )


# Per-month reservoir quantities averaged over each collected batch (reservoir/ namespace).
RESERVOIR_MEANS = tuple(key for key in INFO_KEYS if key not in ("storage", *SUCCESS_COUNTS))


def metric_names(num_actions: int, env_name: str) -> list[str]:
    """Every metric the loop emits, in training-log column order."""
    reservoir = ["reservoir/storage_mean", "reservoir/storage_min", "reservoir/storage_max"]
    reservoir += [f"reservoir/{key}" for key in RESERVOIR_MEANS]
    return [
        "train/loss",
        "train/grad_norm",
        "train/epsilon",
        "train/lr",
        "train/buffer_size",
        "train/updates",
        "train/fps",
        "episode/count",
        "episode/return_mean",
        "episode/return_min",
        "episode/return_max",
        "episode/length_mean",
        "episode/success_rate",
        "agent/q_mean",
        "agent/q_max",
        *[f"agent/action_frac_{action}" for action in range(num_actions)],
        "eval/return_mean",
        "eval/return_std",
        "eval/success_rate",
        *(reservoir if env_name == RESERVOIR else []),
    ]


def train(
    config: Config,
    checkpoint_dir: Path,
    train_log: Path,
    tracking: Tracking | None = None,
    say: Callable[[str], None] = print,
) -> TrainResult:
    """Train a DQN agent as ``config`` says, resuming from ``checkpoint_dir`` when it can.

    :param config: validated parameters.
    :param checkpoint_dir: folder of checkpoints for this configuration.
    :param train_log: CSV training log (one row per collected batch).
    :param tracking: MLflow and TensorBoard, already connected; ``None`` logs to the CSV only.
    :param say: where one-line notices go.
    """
    train_cfg = config.train
    device = resolve_device(train_cfg.device)
    torch.set_num_threads(train_cfg.torch_threads or os.cpu_count() or 1)
    checkpointer = Checkpointer(checkpoint_dir, config.training_hash, train_cfg.keep_checkpoints, say)
    session = _restore_or_start(config, device, checkpointer, say)
    agent, buffer, progress = session.agent, session.buffer, session.progress
    spec = network_spec(session.collector.env, config.env, config.dqn.hidden_sizes)
    resumed_from = progress.frames
    sinks: list[MetricSink] = [CsvLog(train_log, metric_names(spec.num_actions, config.env.name), resumed_from)]
    if tracking is not None:
        progress.run_id = tracking.start_run(progress.run_id or None) or ""
        sinks += tracking.sinks(start=resumed_from)
    tracker = Tracker(sinks)

    writer = TransitionWriter(buffer, config.dqn.n_steps, config.dqn.gamma)
    batches = iter(session.collector)
    bar = tqdm(total=train_cfg.total_frames, initial=progress.frames, unit="frame", mininterval=2.0, smoothing=0.05)
    clock = time.perf_counter()
    try:
        while progress.frames < train_cfg.total_frames:
            # 0. A segment starts: re-seed and reset the environments (what makes resume exact).
            if progress.frames % train_cfg.checkpoint_interval_frames == 0:
                _start_segment(session.collector, writer, config, progress)
            # 1. Collect a batch with the exploring policy and store its transitions.
            batch = next(batches)
            frames = batch.numel()
            progress.frames += frames
            writer.write(batch)
            # 2. Anneal epsilon by frames collected (not by updates).
            anneal_exploration(agent.exploration, progress.frames)
            # 3. Learn once the buffer is warm; the target network follows each update.
            losses, grad_norms = _learn(agent, buffer, config, progress)
            # 4. Log what happened in this batch.
            returns, lengths, totals = _finished_episodes(batch)
            progress.record_episodes(returns)
            clock = _add_elapsed(progress, "train_seconds", clock)
            metrics = _batch_metrics(batch, agent, buffer, progress, losses, grad_norms)
            metrics |= _episode_metrics(config, returns, lengths, totals)
            if config.env.name == RESERVOIR:
                metrics |= _reservoir_metrics(batch)
            # 5. Periodic greedy evaluation on validation seeds (never used for training).
            every = train_cfg.eval_interval_frames
            evaluated = bool(every) and progress.frames % every == 0
            if evaluated:
                metrics.update(_validate(agent, config))
                progress.last_eval_return = metrics["eval/return_mean"]
                if progress.last_eval_return >= progress.best_eval_return:  # ties: the later, longer-trained one
                    progress.best_eval_return, progress.best_eval_frames = progress.last_eval_return, progress.frames
                    session.best_network.load_state_dict(agent.q_network.state_dict())
                clock = _add_elapsed(progress, "eval_seconds", clock)
            at_boundary = progress.frames % train_cfg.checkpoint_interval_frames == 0
            tracker.log(metrics, step=progress.frames, histograms={"agent/actions": batch["action"]})
            if evaluated or at_boundary:  # an evaluation gets its own point; a checkpoint leaves none pending
                tracker.flush()
            bar.update(frames)
            bar.set_postfix(_postfix(progress, agent, metrics), refresh=False)
            # 6. Checkpoint at segment boundaries (and at the end).
            if at_boundary or progress.frames >= train_cfg.total_frames:
                checkpointer.save(session.checkpoint, progress.frames)
                clock = _add_elapsed(progress, "train_seconds", clock)
    finally:
        bar.close()
        tracker.close()
        session.close()
    summary = _summary(progress, resumed_from, agent)
    shipped = session.best_network if train_cfg.select_best else agent.q_network
    return TrainResult(q_network=shipped, agent=agent, spec=spec, summary=summary)


def _build_session(config: Config, device: torch.device) -> _Session:
    """Everything a training process holds, freshly seeded (identical on every call)."""
    seed_everything(config.seed)
    env = make_env(config.env, config.env.num_envs)
    spec = network_spec(env, config.env, config.dqn.hidden_sizes)
    agent = make_agent(config.dqn, spec, device, compile_loss=config.train.compile)
    buffer = make_replay_buffer(config.dqn, device)
    progress = Progress()
    best_network = copy.deepcopy(agent.q_network)
    checkpoint = Checkpoint(
        format="archive",
        loss=agent.loss,
        best_network=best_network,
        optimizer=agent.optimizer,
        exploration=agent.exploration,
        target_updater=agent.target_updater,
        rng=GlobalRNGState(),
        progress=progress,
    )
    if _checkpoint_buffer(config):
        checkpoint.register("replay_buffer", buffer, adapter=SafeReplayBufferAdapter())
    # The collector is built before any restore: building it runs the policy once, and
    # that must not consume random numbers after the checkpoint's RNG state is restored.
    collector = Collector(
        env,
        agent.policy,
        frames_per_batch=config.train.frames_per_batch,
        total_frames=-1,
        env_device="cpu",
        policy_device=device,
        storing_device=device,
        exploration_type=ExplorationType.RANDOM,
        auto_register_policy_transforms=False,
    )
    return _Session(agent, best_network, buffer, progress, checkpoint, collector)


def _checkpoint_buffer(config: Config) -> bool:
    choice = config.train.checkpoint_buffer
    return choice == "always" or (choice == "auto" and config.dqn.buffer_size <= BUFFER_CHECKPOINT_AUTO_LIMIT)


def _restore_or_start(
    config: Config, device: torch.device, checkpointer: Checkpointer, say: Callable[[str], None]
) -> _Session:
    """A session restored from the newest usable checkpoint, or a fresh one if there is none.

    Usable means written by these parameters, within ``total_frames``, and either at a
    segment boundary (so that training continues exactly) or final (nothing to continue).
    """
    total, interval = config.train.total_frames, config.train.checkpoint_interval_frames
    for path in checkpointer.candidates():
        frames = checkpoint_frames(path)
        if frames > total or (frames % interval and frames != total):
            continue
        session = _build_session(config, device)
        try:
            checkpointer.restore(session.checkpoint, path)
        except CorruptCheckpoint as error:
            session.close()
            checkpointer.set_aside(path, str(error))
            continue
        say(f"resuming from {path} ({session.progress.frames:,} frames)")
        return session
    return _build_session(config, device)


def _start_segment(collector: Collector, writer: TransitionWriter, config: Config, progress: Progress) -> None:
    """Re-seed and reset the environments from ``(seed, segment)``; drop frames held for n-step returns."""
    segment = progress.frames // config.train.checkpoint_interval_frames
    collector.set_seed(segment_seed(config.seed, segment, config.env.num_envs))
    collector.reset()
    writer.start_segment()


def _learn(
    agent: Agent, buffer: TensorDictReplayBuffer, config: Config, progress: Progress
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``updates_per_batch`` optimiser steps on replayed transitions, once the buffer is warm."""
    losses: list[torch.Tensor] = []
    grad_norms: list[torch.Tensor] = []
    if len(buffer) < config.train.min_replay_size:
        return losses, grad_norms
    for _ in range(config.train.updates_per_batch):
        sample = buffer.sample()
        loss, grad_norm = update(agent, sample)
        if config.dqn.prioritized:
            buffer.update_tensordict_priority(sample)
        losses.append(loss)
        grad_norms.append(grad_norm)
        progress.updates += 1
    if not bool(torch.isfinite(torch.stack(losses)).all()):
        bad = next(float(loss) for loss in losses if not torch.isfinite(loss))
        raise TrainingDiverged(
            f"the loss became {bad} at frame {progress.frames:,} (update {progress.updates:,}); "
            "training stopped, no model written, the last checkpoint is kept"
        )
    return losses, grad_norms


def _finished_episodes(batch: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Returns, lengths and success counts of the episodes that ended in this batch."""
    nxt = batch["next"]
    done = nxt["done"].squeeze(-1)
    returns = nxt["episode_reward"].squeeze(-1)[done].double()
    lengths = nxt["step_count"].squeeze(-1)[done].double()
    present = set(nxt.keys())  # a TensorDict does not support `in` directly
    totals = {name: nxt[name].squeeze(-1)[done].double() for name in SUCCESS_COUNTS if name in present}
    return returns, lengths, totals


def _add_elapsed(progress: Progress, counter: str, since: float) -> float:
    """Add the time since ``since`` to one of the progress clocks; return the new reference."""
    now = time.perf_counter()
    setattr(progress, counter, getattr(progress, counter) + now - since)
    return now


def _batch_metrics(
    batch: TensorDictBase,
    agent: Agent,
    buffer: TensorDictReplayBuffer,
    progress: Progress,
    losses: list[torch.Tensor],
    grad_norms: list[torch.Tensor],
) -> dict[str, float]:
    """train/ and agent/ metrics of one collected batch and the updates that followed it."""
    nan = float("nan")
    greedy_values = batch["chosen_action_value"].squeeze(-1)
    num_actions = int(batch["action_value"].shape[-1])
    actions = torch.bincount(batch["action"].reshape(-1).long(), minlength=num_actions).double()
    actions /= actions.sum()
    return {
        "train/loss": float(torch.stack(losses).mean()) if losses else nan,
        "train/grad_norm": float(torch.stack(grad_norms).mean()) if grad_norms else nan,
        "train/epsilon": float(agent.exploration.eps),
        "train/lr": float(agent.optimizer.param_groups[0]["lr"]),
        "train/buffer_size": float(len(buffer)),
        "train/updates": float(progress.updates),
        "train/fps": progress.frames / max(progress.train_seconds, 1e-9),
        "agent/q_mean": float(greedy_values.mean()),
        "agent/q_max": float(greedy_values.max()),
        **{f"agent/action_frac_{action}": float(share) for action, share in enumerate(actions)},
    }


def _episode_metrics(
    config: Config, returns: torch.Tensor, lengths: torch.Tensor, totals: dict[str, torch.Tensor]
) -> dict[str, float]:
    """episode/ metrics of the episodes that ended in one batch (NaN when none did)."""
    if not len(returns):
        nan = float("nan")
        return {
            f"episode/{name}": nan
            for name in ("count", "return_mean", "return_min", "return_max", "length_mean", "success_rate")
        }
    succeeded = episode_success(config.env, returns, lengths, totals)
    return {
        "episode/count": float(len(returns)),
        "episode/return_mean": float(returns.mean()),
        "episode/return_min": float(returns.min()),
        "episode/return_max": float(returns.max()),
        "episode/length_mean": float(lengths.mean()),
        "episode/success_rate": float(succeeded.double().mean()),
    }


def _reservoir_metrics(batch: TensorDictBase) -> dict[str, float]:
    """reservoir/ metrics: storage range and per-month means of every flow and reward component."""
    nxt = batch["next"]
    storage = nxt["storage"]
    return {
        "reservoir/storage_mean": float(storage.mean()),
        "reservoir/storage_min": float(storage.min()),
        "reservoir/storage_max": float(storage.max()),
        **{f"reservoir/{key}": float(nxt[key].mean()) for key in RESERVOIR_MEANS},
    }


def _validate(agent: Agent, config: Config) -> dict[str, float]:
    """Greedy episodes on the fixed validation seeds; leaves every global RNG as it found it."""
    rng = GlobalRNGState()
    state = rng.state_dict()
    try:
        episodes = run_episodes(config.env, agent.q_network, config.train.eval_episodes, VALIDATION_SEED_BASE)
    finally:
        rng.load_state_dict(state)
    returns = episodes.returns.double()
    return {
        "eval/return_mean": float(returns.mean()),
        "eval/return_std": float(returns.std(unbiased=False)),
        "eval/success_rate": float(success(config.env, episodes).double().mean()),
    }


def _postfix(progress: Progress, agent: Agent, metrics: dict[str, float]) -> dict[str, str]:
    recent = f"{np.mean(progress.recent_returns):.1f}" if progress.recent_returns else "-"
    loss = metrics["train/loss"]
    return {
        "return": recent,
        "eps": f"{float(agent.exploration.eps):.3f}",
        "loss": "-" if np.isnan(loss) else f"{loss:.4f}",
    }


def _summary(progress: Progress, resumed_from: int, agent: Agent) -> dict[str, float | int | str | None]:
    recent = float(np.mean(progress.recent_returns)) if progress.recent_returns else None
    last_eval = None if np.isnan(progress.last_eval_return) else progress.last_eval_return
    evaluated = np.isfinite(progress.best_eval_return)
    return {
        "frames": progress.frames,
        "updates": progress.updates,
        "episodes": progress.episodes,
        "episode_return_mean_100": recent,
        "last_eval_return_mean": last_eval,
        "best_eval_return_mean": progress.best_eval_return if evaluated else None,
        "best_eval_frames": progress.best_eval_frames if evaluated else None,
        "final_epsilon": float(agent.exploration.eps),
        "train_time_s": round(progress.train_seconds, 2),
        "eval_time_s": round(progress.eval_seconds, 2),
        "fps": round(progress.frames / max(progress.train_seconds, 1e-9), 1),
        "resumed_from_frames": resumed_from,
        "mlflow_run_id": progress.run_id or None,
    }
