"""The schedules: epsilon and the learning rate as functions of the frames collected."""

from __future__ import annotations

from reservoir_dqn.agent.dqn import Agent


def anneal(agent: Agent, frames: int) -> None:
    """Set epsilon and the learning rate for ``frames`` collected (each linear, then constant).

    Closed forms rather than ``EGreedyModule.step(frames)``, which loops once per frame in
    Python; the values land in the module's ``eps`` buffer and the optimiser's param group,
    so checkpoints keep them.
    """
    exploration, config = agent.exploration, agent.config
    progress = min(frames / exploration.annealing_num_steps, 1.0)
    exploration.eps.copy_(exploration.eps_init + (exploration.eps_end - exploration.eps_init) * progress)
    progress = min(frames / config.lr_decay_frames, 1.0)
    for group in agent.optimizer.param_groups:
        group["lr"] = config.lr * (1.0 + (config.lr_end_factor - 1.0) * progress)
