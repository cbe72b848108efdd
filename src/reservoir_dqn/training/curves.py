"""Training curves: what the loop gathers between two log points, emitted as metric-group records.

A log point falls every ``tracking.log_interval_frames``, at every validation and at every
checkpoint; at a point, every group is emitted once, summarising the batches since the
previous point (mean TD loss of the updates, mean return of the episodes that ended, ...).
Every sink (CSV, TensorBoard, MLflow) receives the same points. Nothing is pending at a
checkpoint, so resuming needs no state from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tensordict import TensorDictBase

from reservoir_dqn.common.metrics import MetricGroup, Record
from reservoir_dqn.config import EnvConfig
from reservoir_dqn.envs import EnvProfile

PROGRESS = MetricGroup(
    "progress",
    ("epsilon", "lr", "updates", "frames_per_second"),
    per_agent=False,
    description="the schedules and the speed, shared by all agents",
)
LEARNING = MetricGroup(
    "learning",
    ("td_loss", "grad_norm", "q_mean", "q_max"),
    description="mean TD loss and gradient norm of the interval's updates; greedy Q-values of the collected states "
    "(from the first update on)",
)
VALIDATION = MetricGroup(
    "validation",
    ("return", "score"),
    description="greedy episodes on the validation seeds, with the averaged weights",
)


@dataclass
class Interval:
    """Sums over the batches since the last log point, one entry per agent."""

    profile: EnvProfile
    config: EnvConfig
    agents: int
    num_actions: int
    updates: int = 0
    loss: torch.Tensor = field(init=False)
    grad_norm: torch.Tensor = field(init=False)
    q_sum: torch.Tensor = field(init=False)
    q_max: torch.Tensor = field(init=False)
    steps: int = 0
    episodes: dict[str, torch.Tensor] = field(init=False)
    batch: dict[str, torch.Tensor] = field(init=False)
    actions: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        zeros = torch.zeros(self.agents, dtype=torch.float64)
        self.updates, self.steps, self.actions = 0, 0, []
        self.loss, self.grad_norm, self.q_sum = zeros.clone(), zeros.clone(), zeros.clone()
        self.q_max = torch.full((self.agents,), -torch.inf, dtype=torch.float64)
        self.episodes = {name: zeros.clone() for name in self.profile.episode_group.fields}
        self.batch = {}

    def add_batch(self, batch: TensorDictBase) -> None:
        """A collected ``[agents * envs, time]`` batch: Q-values, actions, the profile's quantities, ended episodes."""
        per_agent = batch.reshape(self.agents, -1)
        greedy = per_agent["chosen_action_value"].double().reshape(self.agents, -1)
        self.q_sum += greedy.sum(dim=1)
        self.q_max = torch.maximum(self.q_max, greedy.max(dim=1).values)
        self.steps += per_agent.shape[1]
        self.actions.append(per_agent["action"].reshape(self.agents, -1))
        for name, value in self.profile.batch_sums(self.config, per_agent).items():
            self.batch[name] = self.batch.get(name, 0.0) + value
        self._add_episodes(per_agent["next"])

    def _add_episodes(self, nxt: TensorDictBase) -> None:
        done = nxt["done"].reshape(self.agents, -1)
        agent = torch.arange(self.agents).unsqueeze(1).expand_as(done)[done]
        finished = nxt[done]
        values = {
            "return": finished["episode_reward"].reshape(-1).double(),
            "length": finished["step_count"].reshape(-1).double(),
            "count": torch.ones(len(agent), dtype=torch.float64),
            **{name: value.reshape(-1).double() for name, value in self.profile.episode_extras(finished).items()},
        }
        for name, value in values.items():
            self.episodes[name].index_add_(0, agent, value)

    def add_updates(self, losses: torch.Tensor, grad_norms: torch.Tensor) -> None:
        """Per-agent losses and gradient norms of one update."""
        self.updates += 1
        self.loss += losses.double()
        self.grad_norm += grad_norms.double()

    def records(self, step: int, schedule: dict[str, float]) -> list[Record]:
        """One record per group for the interval; groups with nothing to report are left out."""
        nan = torch.full((self.agents,), torch.nan, dtype=torch.float64)
        records = [Record.of(PROGRESS, step, schedule)]
        if self.updates:  # before learning starts there is no loss, and the Q-values are the initial guess
            learning = {
                "td_loss": self.loss / self.updates,
                "grad_norm": self.grad_norm / self.updates,
                "q_mean": self.q_sum / max(self.steps, 1),
                "q_max": self.q_max,
            }
            records.append(Record.of(LEARNING, step, learning))
        count = self.episodes["count"]
        means = {
            name: total / count for name, total in self.episodes.items() if name != "count"
        }  # NaN where none ended
        records.append(
            Record.of(self.profile.episode_group, step, {**means, "count": torch.where(count > 0, count, nan)})
        )
        if self.profile.batch_group is not None and self.steps:
            records.append(
                Record.of(self.profile.batch_group, step, {k: v / self.steps for k, v in self.batch.items()})
            )
        return [record for record in records if record.rows]

    def action_histograms(self) -> list[torch.Tensor]:
        """Every action each agent took in the interval, for TensorBoard's histograms."""
        return list(torch.cat(self.actions, dim=1)) if self.actions else []
