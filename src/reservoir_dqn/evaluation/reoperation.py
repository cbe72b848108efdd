"""Re-operating the held-out record: every policy replays the years nobody trained on.

Water engineers judge an operating policy by replaying it over the historical record, and
measure it against an operator who knew every inflow in advance (deterministic DP with
perfect foresight; the M3O toolbox, EMODPS on Lake Como). Where the environment's
profile offers a held-out record (:meth:`~reservoir_dqn.envs.profile.EnvProfile.held_out`: the
reservoir's is :class:`~reservoir_dqn.envs.reservoir.replay.RecordReplay`), the evaluate stage
replays every DQN agent (final and best networks) and every reference policy the replay names
(its bound, ``foresight``, among them) on each held-out window; the uniformly random policy,
the anchor of 0, enters by its exact expected rewards on each window (the replay computes
them: a seeded trajectory would move the anchor, and every score with it, with its seed).

**The score** is the project's, with foresight at 1: ``(R - R_random) / (R_foresight -
R_random)``, per window and pooled over the windows (the score of the summed returns).

**The interval respects the windows' overlap.** Ten 10-year windows starting each October
share most of their years, so they are not ten observations. Each window's return is split
into its water years, labelled by calendar year; a moving-block bootstrap over those labels
(blocks of :data:`BLOCK_YEARS` consecutive water years, so that a drought and the storage it
carries over stay together) resamples the years, and every window-year of a drawn year counts
as often as the year is drawn. The interval is the 2.5 and 97.5 percentiles of the pooled
score over :data:`RESAMPLES` resamples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tensordict.nn import TensorDictModuleBase

from reservoir_dqn.envs.profile import HeldOutReplay, Replayed
from reservoir_dqn.evaluation.results import Continuous, HeldOut, HeldOutScore
from reservoir_dqn.evaluation.statistics import summarize

BLOCK_YEARS = 3
RESAMPLES = 2000
BOOTSTRAP_SEED = 0
MONTHS_PER_YEAR = 12


def replay_baselines(record: HeldOutReplay) -> dict[str, np.ndarray]:
    """``[W, Y]`` each window-year's return of every reference policy the record names, and of ``random`` (its
    exact expectation)."""
    year_of_month, _ = water_years(record.first_years, record.horizon)
    played = {name: yearly(record.rewards(policy)[0], year_of_month) for name, policy in record.policies().items()}
    return played | {"random": yearly(record.random_rewards(), year_of_month)}


def _replay_references(record: HeldOutReplay, policies: Mapping[str, TensorDictModuleBase]) -> dict[str, Replayed]:
    """Every reference policy (``policies``, the record's) replayed, and ``random``: its exact rewards and measured
    criteria."""
    replayed = {name: record.replay(policy) for name, policy in policies.items()}
    return replayed | {"random": record.random_performance()}


@dataclass(frozen=True)
class Pooled:
    """One policy's pooled score on the held-out windows, with the block-bootstrap interval."""

    score: float
    low: float
    high: float


def water_years(first_years: Sequence[int], horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """``[H]`` the water year (0, 1, ...) of each month of a window, and ``[W, Y]`` each window-year's label."""
    year_of_month = np.arange(horizon) // MONTHS_PER_YEAR
    labels = np.array([[first + year for year in range(year_of_month[-1] + 1)] for first in first_years])
    return year_of_month, labels


def yearly(rewards: torch.Tensor, year_of_month: np.ndarray) -> np.ndarray:
    """``[..., W, Y]`` the rewards of each window's water years."""
    array = rewards.numpy()
    years = int(year_of_month[-1]) + 1
    return np.stack([array[..., year_of_month == year].sum(axis=-1) for year in range(years)], axis=-1)


def bootstrap_weights(labels: np.ndarray, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """``[R, W, Y]`` how often each window-year counts in each moving-block resample of the water years."""
    distinct = np.unique(labels)
    count = len(distinct)
    block = min(BLOCK_YEARS, count)
    generator = np.random.default_rng(seed)
    blocks = -(-count // block)
    starts = generator.integers(0, count - block + 1, size=(resamples, blocks))
    drawn = (starts[..., None] + np.arange(block)).reshape(resamples, -1)[:, :count]  # indices into distinct
    times = np.stack([np.bincount(row, minlength=count) for row in drawn])  # [R, distinct]
    position = np.searchsorted(distinct, labels)  # [W, Y]
    return times[:, position]


def pooled(returns: np.ndarray, random: np.ndarray, bound: np.ndarray, weights: np.ndarray) -> Pooled:
    """The pooled score of window-year returns ``[W, Y]`` against random's and the bound's, and its interval."""
    score = (returns.sum() - random.sum()) / (bound.sum() - random.sum())
    sums = {name: (weights * values).sum(axis=(1, 2)) for name, values in (("p", returns), ("r", random), ("b", bound))}
    resampled = (sums["p"] - sums["r"]) / (sums["b"] - sums["r"])
    # A resample weighs water years, within which a policy may beat foresight (optimal over whole windows only);
    # no policy's score exceeds 1, so neither does its interval.
    low, high = np.minimum(np.percentile(resampled, [2.5, 97.5]), 1.0)
    return Pooled(float(score), float(low), float(high))


def ratio(
    change: np.ndarray, reference: np.ndarray, random: np.ndarray, bound: np.ndarray, weights: np.ndarray
) -> Pooled:
    """The ratio of two policies' pooled scores (``change`` over ``reference``) and its block-bootstrap interval."""

    def scores(values: np.ndarray) -> tuple[float, np.ndarray]:
        point = (values.sum() - random.sum()) / (bound.sum() - random.sum())
        sums = [(weights * array).sum(axis=(1, 2)) for array in (values, random, bound)]
        return float(point), (sums[0] - sums[1]) / (sums[2] - sums[1])

    (change_point, change_draws), (reference_point, reference_draws) = scores(change), scores(reference)
    low, high = np.percentile(change_draws / reference_draws, [2.5, 97.5])
    return Pooled(change_point / reference_point, float(low), float(high))


def per_window(returns: np.ndarray, random: np.ndarray, bound: np.ndarray) -> list[float]:
    """Each window's score (its returns summed over its years)."""
    totals = [array.sum(axis=-1) for array in (returns, random, bound)]
    return [float(value) for value in (totals[0] - totals[1]) / (totals[2] - totals[1])]


def evaluate_held_out(record: HeldOutReplay, networks: Mapping[str, tuple[TensorDictModuleBase, int]]) -> HeldOut:
    """Every agent of each network (``network -> (stacked Q-network, agents)``) and every reference
    policy replaying the held-out record, scored against its bound (``foresight``), with their performance
    criteria (their intervals over seeds kept in the range the record declares for each)."""
    year_of_month, labels = water_years(record.first_years, record.horizon)
    policies = record.policies()  # the SDPs' solutions and foresight's DP, computed once for both replays
    references = _replay_references(record, policies)
    played = {name: yearly(replayed.rewards[0], year_of_month) for name, replayed in references.items()}
    replays = {network: record.replay(q_network, copies) for network, (q_network, copies) in networks.items()}
    agents = {network: yearly(replayed.rewards, year_of_month) for network, replayed in replays.items()}
    random, bound = played["random"], played["foresight"]
    weights = bootstrap_weights(labels)

    def scored(
        returns: np.ndarray, performance: dict[str, float], performance_per_window: dict[str, tuple[float, ...]]
    ) -> HeldOutScore:
        interval = pooled(returns, random, bound, weights)
        return HeldOutScore(
            interval.score,
            interval.low,
            interval.high,
            float(returns.sum(axis=-1).mean()),
            tuple(per_window(returns, random, bound)),
            performance,
            performance_per_window,
        )

    def agents_mean(returns: np.ndarray, replayed: Replayed) -> HeldOutScore:
        """The agents as one: their window-year returns ``[agents, W, Y]`` and their criteria averaged over seeds."""
        performance = {
            key: float(np.mean([seed[key] for seed in replayed.performance])) for key in replayed.performance[0]
        }
        windows = {
            key: tuple(float(value) for value in np.mean([seed[key] for seed in replayed.per_window], axis=0))
            for key in replayed.per_window[0]
        }
        return scored(returns.mean(axis=0), performance, windows)

    over_sdp = {
        network: ratio(returns.mean(axis=0), played["sdp"], random, bound, weights)
        for network, returns in agents.items()
    }
    limits = record.criteria
    return HeldOut(
        windows=record.starts,
        block_years=BLOCK_YEARS,
        resamples=RESAMPLES,
        baselines={
            name: scored(returns, references[name].performance[0], references[name].per_window[0])
            for name, returns in played.items()
        },
        dqn={network: agents_mean(agents[network], replayed) for network, replayed in replays.items()},
        dqn_per_seed={
            network: summarize([_pooled_point(agent, random, bound) for agent in returns])
            for network, returns in agents.items()
        },
        dqn_over_sdp={network: (value.score, value.low, value.high) for network, value in over_sdp.items()},
        dqn_performance={
            network: {
                key: summarize([seed[key] for seed in replayed.performance], *limits.get(key, ()))
                for key in replayed.performance[0]
            }
            for network, replayed in replays.items()
        },
        continuous=_continuous(record, policies, networks),
    )


def _continuous(
    record: HeldOutReplay,
    policies: Mapping[str, TensorDictModuleBase],
    networks: Mapping[str, tuple[TensorDictModuleBase, int]],
) -> Continuous:
    """Every policy (the record's reference ``policies`` and the agents) operating the held-out period in one run:
    its score over the period (random 0, foresight 1) and its criteria; the agents' summarised over seeds."""
    references = {name: record.continuous(policy) for name, policy in policies.items()}
    references["random"] = record.continuous(None)
    random = float(references["random"].rewards.sum())
    span = float(references["foresight"].rewards.sum()) - random

    def score(rewards: torch.Tensor) -> float:
        return (float(rewards.sum()) - random) / span

    baselines = {
        name: {"score": score(replayed.rewards[0])} | replayed.performance[0] for name, replayed in references.items()
    }
    limits = record.criteria | {"score": ()}
    dqn = {}
    for network, (q_network, copies) in networks.items():
        replayed = record.continuous(q_network, copies)
        seeds = [
            {"score": score(rewards)} | criteria
            for rewards, criteria in zip(replayed.rewards, replayed.performance, strict=True)
        ]
        dqn[network] = {key: summarize([seed[key] for seed in seeds], *limits.get(key, ())) for key in seeds[0]}
    return Continuous(record.period, baselines, dqn)


def _pooled_point(returns: np.ndarray, random: np.ndarray, bound: np.ndarray) -> float:
    return float((returns.sum() - random.sum()) / (bound.sum() - random.sum()))
