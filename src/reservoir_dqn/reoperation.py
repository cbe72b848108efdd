"""Re-operating the held-out record: every policy replays the years nobody trained on.

Water engineers judge an operating policy by replaying it over the historical record, and
measure it against an operator who knew every inflow in advance (deterministic DP with
perfect foresight; the M3O toolbox, EMODPS on Lake Como). For a record-driven reservoir the
evaluate stage replays, on each held-out window (:mod:`reservoir_dqn.envs.windows`):

- every DQN agent (final and best networks);
- ``sdp``: the SDP optimum of the fitted chain, which reads last month's inflow class;
- ``sdp_independent``: the SDP optimum of the same classes taken as independent (an operator
  who ignores what last month's inflow says of this month's);
- ``sop`` and ``random``, as on the synthetic scenarios;
- ``foresight``: the deterministic DP that knows the window's inflows, the bound.

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

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase

from reservoir_dqn.config import EnvConfig
from reservoir_dqn.envs import EnvProfile, Episodes
from reservoir_dqn.envs.baselines import RandomPolicy, SDPPolicy, StandardOperatingPolicy, reservoir_optimum
from reservoir_dqn.envs.inflows import without_persistence
from reservoir_dqn.envs.reservoir import DiscreteReservoirEnv
from reservoir_dqn.envs.reservoir_model import ReservoirModel
from reservoir_dqn.envs.reservoir_profile import ReservoirProfile, reservoir_settings
from reservoir_dqn.envs.sdp import ForesightSolution, foresight, solve
from reservoir_dqn.envs.windows import HELD_OUT_PREFIX, Windows, find_windows
from reservoir_dqn.evaluation import run_episodes
from reservoir_dqn.results import HeldOut, HeldOutScore
from reservoir_dqn.statistics import summarize

BLOCK_YEARS = 3
RESAMPLES = 2000
BOOTSTRAP_SEED = 0
MONTHS_PER_YEAR = 12


class ForesightPolicy(TensorDictModuleBase):
    """Window ``i``'s foresight DP table, played in environment slot ``i``."""

    def __init__(self, solution: ForesightSolution) -> None:
        super().__init__()
        self.in_keys, self.out_keys = ["time_step", "storage"], ["action"]
        self.register_buffer("table", solution.policy)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        time_step = tensordict.get("time_step").clamp(max=self.table.shape[1] - 1)
        storage = tensordict.get("storage").round().long()
        window = torch.arange(self.table.shape[0])
        return tensordict.set("action", self.table[window, time_step, storage])


def held_out_windows(profile: EnvProfile, config: EnvConfig) -> Windows | None:
    """The held-out windows of a record-driven reservoir (``None``: another environment, or no held-out years)."""
    if not isinstance(profile, ReservoirProfile):
        return None
    reservoir = reservoir_settings(config)
    if reservoir.inflow_model != "record":
        return None
    return find_windows(reservoir, ReservoirModel.from_config(reservoir).chain, "held_out")


def baselines(config: EnvConfig, windows: Windows, seed: int) -> dict[str, TensorDictModuleBase]:
    """Every reference policy of the re-operation: the two SDPs, SOP, random and foresight."""
    model = ReservoirModel.from_config(reservoir_settings(config))
    independent = ReservoirModel(model.config, without_persistence(model.chain), model.release_levels, model.demand)
    return {
        "sdp": SDPPolicy(reservoir_optimum(reservoir_settings(config))),
        "sdp_independent": SDPPolicy(solve(independent)),
        "sop": StandardOperatingPolicy(model),
        "random": RandomPolicy(model.num_actions, seed),
        "foresight": ForesightPolicy(foresight(model, windows.inflows)),
    }


def replay_episodes(
    profile: EnvProfile, config: EnvConfig, policy: TensorDictModuleBase, windows: Windows, copies: int = 1
) -> Episodes:
    """``policy`` replaying every window, ``copies`` times over (stacked agents, agent-major)."""
    tiled = windows.tile(copies)

    def replayed(env: EnvBase) -> None:
        base = env.base_env
        assert isinstance(base, DiscreteReservoirEnv)
        base.replay(tiled)

    return run_episodes(profile, config, policy, [0] * len(tiled), prepare=replayed)


def replay(
    profile: EnvProfile, config: EnvConfig, policy: TensorDictModuleBase, windows: Windows, copies: int = 1
) -> torch.Tensor:
    """``[copies, W, H]`` the monthly rewards of ``policy`` replaying every window (``copies`` stacked agents)."""
    episodes = replay_episodes(profile, config, policy, windows, copies)
    rewards: torch.Tensor = episodes.steps["next", "reward"].squeeze(-1).double()
    return rewards.view(copies, len(windows), -1)


def held_out_trajectories(
    profile: EnvProfile,
    config: EnvConfig,
    shipped: tuple[TensorDictModuleBase, int, int],
    windows: Windows,
) -> list[dict[str, object]]:
    """Trajectory rows of the first held-out window for the shipped agent, the Markov SDP and foresight.

    :param shipped: the stacked Q-network, how many agents it holds, and the shipped agent's index.
    """
    first = windows.head(1)
    q_network, agents, agent = shipped
    bound = ForesightPolicy(foresight(ReservoirModel.from_config(reservoir_settings(config)), first.inflows))
    played = {
        "dqn": replay_episodes(profile, config, q_network, first, agents).part(agent, agent + 1),
        "sdp": replay_episodes(profile, config, SDPPolicy(reservoir_optimum(reservoir_settings(config))), first),
        "foresight": replay_episodes(profile, config, bound, first),
    }
    return [
        row
        for name, episodes in played.items()
        for row in profile.trajectory_rows(config, HELD_OUT_PREFIX + name, episodes, 1)
    ]


def replay_baselines(profile: EnvProfile, config: EnvConfig, windows: Windows, seed: int) -> dict[str, np.ndarray]:
    """``[W, Y]`` each window-year's return of every reference policy (:func:`baselines`)."""
    year_of_month, _ = water_years(windows, reservoir_settings(config).horizon_months)
    return {
        name: yearly(replay(profile, config, policy, windows)[0], year_of_month)
        for name, policy in baselines(config, windows, seed).items()
    }


@dataclass(frozen=True)
class Pooled:
    """One policy's pooled score on the held-out windows, with the block-bootstrap interval."""

    score: float
    low: float
    high: float


def water_years(windows: Windows, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """``[H]`` the water year (0, 1, ...) of each month of a window, and ``[W, Y]`` each window-year's label."""
    year_of_month = np.arange(horizon) // MONTHS_PER_YEAR
    labels = np.array([[first + year for year in range(year_of_month[-1] + 1)] for first in windows.first_years])
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
    low, high = np.percentile(resampled, [2.5, 97.5])
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


def evaluate_held_out(
    profile: EnvProfile,
    config: EnvConfig,
    networks: Mapping[str, tuple[TensorDictModuleBase, int]],
    windows: Windows,
    seed: int,
) -> HeldOut:
    """Every agent of each network (``network -> (stacked Q-network, agents)``) and every reference
    policy replaying the held-out ``windows``, scored against foresight."""
    year_of_month, labels = water_years(windows, reservoir_settings(config).horizon_months)
    played = replay_baselines(profile, config, windows, seed)
    agents = {
        network: yearly(replay(profile, config, q_network, windows, copies), year_of_month)
        for network, (q_network, copies) in networks.items()
    }
    random, bound = played["random"], played["foresight"]
    weights = bootstrap_weights(labels)

    def scored(returns: np.ndarray) -> HeldOutScore:
        interval = pooled(returns, random, bound, weights)
        return HeldOutScore(
            interval.score,
            interval.low,
            interval.high,
            float(returns.sum(axis=-1).mean()),
            tuple(per_window(returns, random, bound)),
        )

    over_sdp = {
        network: ratio(returns.mean(axis=0), played["sdp"], random, bound, weights)
        for network, returns in agents.items()
    }
    return HeldOut(
        windows=windows.starts,
        block_years=BLOCK_YEARS,
        resamples=RESAMPLES,
        baselines={name: scored(returns) for name, returns in played.items()},
        dqn={network: scored(returns.mean(axis=0)) for network, returns in agents.items()},
        dqn_per_seed={
            network: summarize([_pooled_point(agent, random, bound) for agent in returns])
            for network, returns in agents.items()
        },
        dqn_over_sdp={network: (value.score, value.low, value.high) for network, value in over_sdp.items()},
    )


def _pooled_point(returns: np.ndarray, random: np.ndarray, bound: np.ndarray) -> float:
    return float((returns.sum() - random.sum()) / (bound.sum() - random.sum()))
