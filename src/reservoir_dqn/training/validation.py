"""What training validates its agents on: the episodes behind the best snapshots, convergence, early stops and tuning.

Two sets, chosen by the environment:

- **seeded episodes** (every environment's default): ``train.eval_episodes`` episodes of the
  training environment itself, seeded from :data:`~reservoir_dqn.config.VALIDATION_SEED_BASE`
  (never a training seed), scored against the profile's random policy and optimum there;
- **validation years of a record** (a record-driven reservoir with ``record.validation``,
  :meth:`~reservoir_dqn.envs.profile.EnvProfile.validation_years`): the record's windows of
  years kept out of the fit and out of every training episode, replayed, scored against the
  uniformly random policy (its exact expectation) and the Markov SDP on the same windows. A
  score above 1 beats the SDP there. Episodes of the training source cannot choose between
  sources (each scores itself); real years nobody trained on can, without touching the
  held-out years.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tensordict.nn import TensorDictModuleBase

from reservoir_dqn.config import VALIDATION_SEED_BASE, Config
from reservoir_dqn.envs import EnvProfile
from reservoir_dqn.envs.profile import HeldOutReplay
from reservoir_dqn.evaluation.episodes import reference, run_agents
from reservoir_dqn.evaluation.scoring import Reference

Play = Callable[[TensorDictModuleBase, int], torch.Tensor]


@dataclass(frozen=True)
class ValidationSet:
    """Episodes every agent is validated on.

    :ivar reference: the returns of score 0 and 1 there.
    :ivar play: ``play(network, agents)``: each of the ``agents`` stacked networks' mean return there, ``[agents]``.
    :ivar episodes: what the episodes are, in words (the training's summary carries it).
    """

    reference: Reference
    play: Play
    episodes: str


def validation_set(profile: EnvProfile, config: Config, num_actions: int) -> ValidationSet:
    """The episodes ``config``'s training validates on (see the module's docstring)."""
    years = profile.validation_years(config.env)
    if years is not None:
        return _record_years(years)
    count = config.train.eval_episodes
    seeded, _ = reference(profile, config.env, num_actions, count, VALIDATION_SEED_BASE)

    def play(network: TensorDictModuleBase, agents: int) -> torch.Tensor:
        episodes = run_agents(profile, config.env, network, agents, count, VALIDATION_SEED_BASE)
        return torch.stack([result.returns.double().mean() for result in episodes])

    return ValidationSet(seeded, play, f"{count} episodes of the training environment, seeded apart")


def _record_years(years: HeldOutReplay) -> ValidationSet:
    """The record's validation windows, scored between the random policy and the Markov SDP there."""
    random = float(years.random_rewards().sum(dim=-1).mean())
    sdp = float(years.rewards(years.policies()["sdp"]).sum(dim=-1).mean())

    def play(network: TensorDictModuleBase, agents: int) -> torch.Tensor:
        return years.rewards(network, agents).sum(dim=-1).mean(dim=-1)

    first, last = years.period
    text = f"{len(years.starts)} windows of the record's validation years ({first} to {last}), Markov SDP = 1"
    return ValidationSet(Reference(random, sdp), play, text)
