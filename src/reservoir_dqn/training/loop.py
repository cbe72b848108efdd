"""The DQN training loop, top to bottom in algorithm order; every agent of the experiment at once.

For every batch:

1. collect a batch with the exploring policy (every agent's environments in one batched env);
2. store its (n-step) transitions, each agent's in its own replay column;
3. anneal epsilon, the learning rate and prioritized replay's beta by frames collected;
4. once the buffer is warm, ``updates_per_batch`` optimiser steps, all agents in one;
5. gather the training curves, and emit them at each log point;
6. every ``eval_interval_frames``: greedy validation of every agent (:mod:`.validation`: seeded
   episodes, or a record's validation years);
   keep each agent's best snapshot; an agent that reached ``stop_at_validation_return``
   keeps its network from then on (the others go on);
7. every ``checkpoint_interval_frames``: a checkpoint.

At the end every agent is validated once more, and the one that validated best is shipped.

Exact resume. A checkpoint holds every piece of state, the environments' included (the
episodes in flight, their generators, the frames held back for n-step returns), so a run
resumed from any checkpoint computes exactly what the uninterrupted run computes. The
session (:mod:`reservoir_dqn.training.session`) is what the checkpoint holds.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchrl.modules import QValueActor
from tqdm import tqdm

from reservoir_dqn.agent import Agent, NetworkSpec, anneal, select_agents
from reservoir_dqn.agent.dqn import learn
from reservoir_dqn.common.metrics import Record, Sink
from reservoir_dqn.common.process import raise_pending
from reservoir_dqn.config import TrainConfig
from reservoir_dqn.training.curves import VALIDATION, Interval
from reservoir_dqn.training.replay import anneal_beta
from reservoir_dqn.training.session import Progress, Session
from reservoir_dqn.training.summary import AgentTraining, Training, ValidationReference

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the frame and update."""


@dataclass
class TrainResult:
    """The agents' final and best networks, which one to ship, and the summary metrics."""

    final: QValueActor
    best: QValueActor
    spec: NetworkSpec
    shipped_agent: int
    summary: Training


ValidationHook = Callable[[int, torch.Tensor], None]


def train(session: Session, sinks: Sequence[Sink] = (), on_validation: ValidationHook | None = None) -> TrainResult:
    """Train every agent of ``session`` to ``train.total_frames`` (or until all stopped early).

    :param session: from :func:`reservoir_dqn.training.session.start`: fresh, or restored from a
        checkpoint; its checkpoints go where it was restored from (none for a tuning trial).
    :param sinks: where the training curves go.
    :param on_validation: called with the frames and every agent's validation score after each
        periodic validation; it may raise to stop training (a pruned tuning trial does).
    """
    config, agent, progress = session.config, session.agent, session.progress
    settings = config.train
    interval = Interval(session.profile, config.env, agent.agents, session.spec.num_actions)
    bar = tqdm(total=settings.total_frames, initial=progress.frames, unit="frame", mininterval=2.0, smoothing=0.05)
    clock = time.perf_counter()
    try:
        while progress.frames < settings.total_frames and not all(f is not None for f in progress.stopped_frames):
            raise_pending()  # a signal whose exception a library swallowed ends the loop here
            # 1-2. Collect a batch with the exploring policy and store its transitions.
            batch = session.rollout.collect()
            progress.frames += settings.frames_per_batch
            session.writer.write(batch)
            # 3. Anneal epsilon, the learning rate and replay's beta by frames collected (not by updates).
            anneal(agent, progress.frames)
            anneal_beta(session.buffer, config.dqn, progress.frames)
            # 4. Learn once the buffer is warm; target and averaged weights follow each update.
            _learn(session, interval)
            # 5. Gather what happened in this batch.
            interval.add_batch(batch)
            clock = _add_elapsed(progress, "train_seconds", clock)
            # 6. Periodic greedy validation on validation seeds (never used for training).
            records = []
            every = settings.eval_interval_frames
            if every and progress.frames % every == 0:
                records.append(_validate(session))
                clock = _add_elapsed(progress, "eval_seconds", clock)
                if on_validation is not None:
                    on_validation(progress.frames, torch.tensor(progress.last_score))
            at_checkpoint = progress.frames % settings.checkpoint_interval_frames == 0
            finished = progress.frames >= settings.total_frames
            if records or at_checkpoint or finished or progress.frames % config.tracking.log_interval_frames == 0:
                _emit(session, interval, records, sinks)
            bar.update(settings.frames_per_batch)
            bar.set_postfix(_postfix(progress, agent), refresh=False)
            # 7. Checkpoint (and always at the end, so a finished run is never trained again).
            if session.checkpoints is not None and (at_checkpoint or finished):
                session.checkpoints.save(session.checkpoint, progress.frames)
                clock = _add_elapsed(progress, "train_seconds", clock)
        if progress.validated_at != progress.frames:  # the shipped agent is chosen on a fresh validation
            _emit(session, interval, [_validate(session)], sinks)
            _add_elapsed(progress, "eval_seconds", clock)
    finally:
        bar.close()
        for sink in sinks:
            sink.close()
        session.close()
    return _result(session)


def _learn(session: Session, interval: Interval) -> None:
    """``updates_per_batch`` optimiser steps on replayed transitions, once the buffer is warm."""
    config, progress = session.config, session.progress
    if len(session.buffer) < config.train.min_replay_size:
        return
    losses = []
    for _ in range(config.train.updates_per_batch):
        loss, grad_norm = learn(session.agent, session.buffer)
        losses.append(loss)
        interval.add_updates(loss, grad_norm)
        progress.updates += 1
    stacked = torch.stack(losses)
    if not bool(torch.isfinite(stacked).all()):
        bad = float(stacked[~torch.isfinite(stacked)][0])
        raise TrainingDiverged(
            f"the loss became {bad} at frame {progress.frames:,} (update {progress.updates:,}); "
            "training stopped, no model written, the last checkpoint is kept"
        )


def _validate(session: Session) -> Record:
    """Greedy episodes of every agent's averaged weights on the validation set; snapshots and early stops."""
    config, progress, agent = session.config, session.progress, session.agent
    # A stopped agent's network no longer changes: only the others play.
    active = [index for index, stopped in enumerate(progress.stopped_frames) if stopped is None]
    network = agent.averaged_network
    if len(active) < agent.agents:
        network = select_agents(network, session.spec, active)[0]
    returns = torch.full((agent.agents,), torch.nan, dtype=torch.float64)
    if active:
        returns[active] = session.validation.play(network, len(active))
    scores = session.validation.reference.score(returns)
    assert isinstance(scores, torch.Tensor)
    target, solved = config.train.stop_at_validation_return, session.profile.solved_return
    elapsed = round(progress.train_seconds + progress.eval_seconds, 2)
    for index in active:
        progress.last_return[index], progress.last_score[index] = float(returns[index]), float(scores[index])
        if solved is not None and returns[index] >= solved and progress.solved_frames[index] is None:
            progress.solved_frames[index], progress.solved_seconds[index] = progress.frames, elapsed
        if returns[index] >= progress.best_return[index]:  # ties: the later, longer-trained one
            progress.best_return[index], progress.best_score[index] = float(returns[index]), float(scores[index])
            progress.best_frames[index] = progress.frames
            _copy_agent(agent.averaged_network, session.best, index)
        converged = plateaued(progress, index, float(scores[index]), config.train)
        if target is not None and returns[index] >= target:
            _stop(
                session, index, elapsed, f"reached a validation return of {float(returns[index]):.1f} (>= {target:g})"
            )
        elif converged and config.train.until_converged:
            _stop(session, index, elapsed, f"converged (its best validation at {progress.converged_frames[index]:,})")
    progress.validated_at = progress.frames
    return Record.of(
        VALIDATION,
        progress.frames,
        {"return": torch.tensor(progress.last_return), "score": torch.tensor(progress.last_score)},
    )


def plateaued(progress: Progress, index: int, score: float, settings: TrainConfig) -> bool:
    """Count agent ``index``'s validation ``score`` toward its plateau; whether it has converged (now or before).

    The plateau watches the moving average of the last ``plateau_window`` scores: one above its best by more
    than ``plateau_min_delta`` is a new best; after ``plateau_validations`` validations in a row without one,
    the agent converged at that best's frames.
    """
    agents = len(progress.last_score)
    if len(progress.plateau_best) != agents:  # a checkpoint written before plateaus were counted: count from here
        progress.plateau_recent = [[] for _ in range(agents)]
        progress.plateau_best, progress.plateau_frames = [float("-inf")] * agents, [0] * agents
        progress.plateau_count, progress.converged_frames = [0] * agents, [None] * agents
    if progress.converged_frames[index] is not None:
        return True
    recent = (progress.plateau_recent[index] + [score])[-settings.plateau_window :]
    progress.plateau_recent[index] = recent
    if len(recent) < settings.plateau_window:
        return False
    average = sum(recent) / len(recent)
    if average > progress.plateau_best[index] + settings.plateau_min_delta:
        progress.plateau_best[index], progress.plateau_frames[index] = average, progress.frames
        progress.plateau_count[index] = 0
    else:
        progress.plateau_count[index] += 1
    if progress.plateau_count[index] >= settings.plateau_validations:
        progress.converged_frames[index] = progress.plateau_frames[index]
    return progress.converged_frames[index] is not None


def _stop(session: Session, index: int, elapsed: float, why: str) -> None:
    """Agent ``index`` stops learning: its network is kept as it is now."""
    progress = session.progress
    progress.stopped_frames[index], progress.stopped_seconds[index] = progress.frames, elapsed
    _copy_agent(session.agent.averaged_network, session.stopped, index)
    log.info(f"agent {index} {why} at {progress.frames:,} frames and stops learning")


@torch.no_grad()
def _copy_agent(source: QValueActor, destination: QValueActor, index: int) -> None:
    """Copy agent ``index``'s weights (its row of every stacked parameter) from one network to another."""
    for target, origin in zip(destination.parameters(), source.parameters(), strict=True):
        target[index].copy_(origin[index])


def _emit(session: Session, interval: Interval, extra: list[Record], sinks: Sequence[Sink]) -> None:
    progress, agent = session.progress, session.agent
    schedule = {
        "epsilon": float(agent.exploration.eps),
        "lr": float(agent.optimizer.param_groups[0]["lr"]),
        "updates": float(progress.updates),
        "frames_per_second": progress.frames * agent.agents / max(progress.train_seconds, 1e-9),
    }
    records = interval.records(progress.frames, schedule) + extra
    histograms = interval.action_histograms()
    for sink in sinks:
        sink.emit(records, histograms)
    interval.reset()


def _add_elapsed(progress: Progress, counter: str, since: float) -> float:
    """Add the time since ``since`` to one of the progress clocks; return the new reference."""
    now = time.perf_counter()
    setattr(progress, counter, getattr(progress, counter) + now - since)
    return now


def _postfix(progress: Progress, agent: Agent) -> dict[str, str]:
    scores = [score for score in progress.last_score if np.isfinite(score)]
    return {
        "validation score": f"{np.median(scores):.3f}" if scores else "-",
        "eps": f"{float(agent.exploration.eps):.3f}",
    }


def _result(session: Session) -> TrainResult:
    """The final networks (stopped agents as they were when they stopped), the best ones, and the summary."""
    progress, agent = session.progress, session.agent
    final = copy.deepcopy(agent.averaged_network)
    for index, stopped_at in enumerate(progress.stopped_frames):
        if stopped_at is not None:
            _copy_agent(session.stopped, final, index)
    select_best = session.config.train.select_best
    shipped = int(np.argmax(progress.best_return if select_best else progress.last_return))
    summary = Training(
        env=session.config.env.name,
        seeds=agent.agents,
        frames=progress.frames,
        updates=progress.updates,
        train_time_s=round(progress.train_seconds, 2),
        validation_time_s=round(progress.eval_seconds, 2),
        frames_per_second=round(progress.frames * agent.agents / max(progress.train_seconds, 1e-9), 1),
        resumed_from_frames=session.resumed_from,
        exact_resume=not (progress.resumed_without_buffer or progress.resumed_at_episode_boundary),
        resumed_without_buffer_at_frames=list(progress.resumed_without_buffer),
        resumed_at_episode_boundary_at_frames=list(progress.resumed_at_episode_boundary),
        solved_return=session.profile.solved_return,
        shipped_agent=shipped,
        shipped_network="best" if select_best else "final",
        validation_reference=ValidationReference(
            random_return=session.validation.reference.random_return,
            optimum_return=session.validation.reference.optimum_return,
            episodes=session.validation.episodes,
        ),
        agents=[
            AgentTraining(
                seed_index=index,
                final_validation_return=progress.last_return[index],
                final_validation_score=progress.last_score[index],
                best_validation_return=progress.best_return[index],
                best_validation_score=progress.best_score[index],
                best_validation_frames=progress.best_frames[index],
                stopped_at_frames=progress.stopped_frames[index],
                stopped_after_seconds=progress.stopped_seconds[index],
                solved_at_frames=progress.solved_frames[index],
                solved_after_seconds=progress.solved_seconds[index],
                converged_at_frames=(progress.converged_frames or [None] * agent.agents)[index],
            )
            for index in range(agent.agents)
        ],
        run_ids=dict(progress.run_ids),
    )
    return TrainResult(final, session.best, session.spec, shipped, summary)
