"""The held-out record, replayed: what the reservoir's profile offers as :meth:`~..profile.EnvProfile.held_out`.

For a record-driven reservoir, :class:`RecordReplay` replays its held-out windows
(:mod:`.windows`) with any policy, and names the reference policies a water engineer
replays beside an agent:

- ``sdp``: the SDP optimum of the fitted chain, which reads last month's inflow class;
- ``sdp_independent``: the SDP optimum of the same classes taken as independent (an operator
  who ignores what last month's inflow says of this month's);
- ``sop``, as on the synthetic scenarios;
- ``foresight``: the deterministic DP that knows the window's inflows, the bound;

and the anchor, the uniformly random policy, by its exact expected rewards on each window
(:func:`~.sdp.random_rewards`): with the inflows known the policy is the only randomness, so
its expectation is computed, not sampled by one seeded trajectory.

The statistics over those replays (scores against foresight, the block bootstrap) are
:mod:`reservoir_dqn.evaluation.reoperation`'s, which knows no reservoir.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import tensordict
import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase

from reservoir_dqn.config import EnvConfig
from reservoir_dqn.envs.baselines import RandomPolicy
from reservoir_dqn.envs.profile import EnvProfile, Episodes, Metric, Replayed
from reservoir_dqn.envs.reservoir.baselines import SDPPolicy, StandardOperatingPolicy, reservoir_optimum
from reservoir_dqn.envs.reservoir.env import DiscreteReservoirEnv
from reservoir_dqn.envs.reservoir.inflows import without_persistence
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.sdp import foresight, random_rewards, solve
from reservoir_dqn.envs.reservoir.settings import ReservoirConfig
from reservoir_dqn.envs.reservoir.windows import HELD_OUT_PREFIX, Windows, find_windows, whole_period
from reservoir_dqn.envs.rollouts import run_episodes

MONTHS_PER_YEAR = 12
RANDOM_REPLAYS, RANDOM_SEED = 100, 0  # the random policy's performance: a mean over seeded replays
# The re-operation's performance criteria, pooled over the windows (a window's total for deficit and energy).
PERFORMANCE = ("reliability", "resilience", "vulnerability_hm3", "deficit_hm3", "energy_gwh")
DEFICIT = Metric("deficit_hm3", "unmet demand per window (hm3)", 0.0)


class ForesightPolicy(TensorDictModuleBase):
    """Window ``i``'s foresight DP table, played in environment slot ``i``."""

    def __init__(self, table: torch.Tensor) -> None:
        """:param table: ``[W, T, S]`` the release of each window, time step and storage
        (:class:`~.sdp.ForesightSolution`'s ``policy``, or its months from some step on)."""
        super().__init__()
        self.in_keys, self.out_keys = ["time_step", "storage"], ["action"]
        self.register_buffer("table", table)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        time_step = tensordict.get("time_step").clamp(max=self.table.shape[1] - 1)
        storage = tensordict.get("storage").round().long()
        window = torch.arange(self.table.shape[0])
        return tensordict.set("action", self.table[window, time_step, storage])


class RecordReplay:
    """The held-out windows of one reservoir's record, replayed by any policy in the reservoir's environment."""

    def __init__(
        self, profile: EnvProfile, config: EnvConfig, reservoir: ReservoirConfig, windows: Windows, period: Windows
    ) -> None:
        """:param period: the whole held-out period from the first window's start, as one window of its length."""
        self.profile, self.config, self.reservoir = profile, config, reservoir
        self.windows, self.whole = windows, period
        self.model = ReservoirModel.from_config(reservoir)

    @classmethod
    def of(
        cls,
        profile: EnvProfile,
        config: EnvConfig,
        reservoir: ReservoirConfig,
        part: Literal["validation", "held_out"] = "held_out",
    ) -> RecordReplay | None:
        """The replay of a record-driven reservoir's held-out (or validation) windows (``None``: no record, or no
        such years)."""
        if reservoir.inflow_model != "record":
            return None
        chain = ReservoirModel.from_config(reservoir).chain
        windows = find_windows(reservoir, chain, part)
        if windows is None:
            return None
        return cls(profile, config, reservoir, windows, whole_period(reservoir, chain, part))

    @property
    def criteria(self) -> dict[str, tuple[float, float]]:
        """The performance criteria a replay measures, and where each lies (the profile's declared ranges)."""
        declared = {metric.name: (metric.low, metric.high) for metric in (*self.profile.metrics, DEFICIT)}
        return {key: declared.get(key, (-math.inf, math.inf)) for key in PERFORMANCE}

    @property
    def starts(self) -> tuple[str, ...]:
        """Each window's first month, ``YYYY-MM``."""
        return self.windows.starts

    @property
    def first_years(self) -> tuple[int, ...]:
        """Each window's first calendar year (its water years follow on)."""
        return self.windows.first_years

    @property
    def period(self) -> tuple[str, str]:
        """The first and last month of the held-out period's whole years from its first window's start."""
        first = self.whole.starts[0]
        year, month = (int(part) for part in first.split("-"))
        last = (year * 12 + month - 1) + MONTHS_PER_YEAR * self.period_years - 1
        return first, f"{last // 12:04d}-{last % 12 + 1:02d}"

    @property
    def period_years(self) -> int:
        """Whole water years of the held-out period from its first window's start: the continuous replay's."""
        return self.whole.inflows.shape[1] // MONTHS_PER_YEAR

    @property
    def horizon(self) -> int:
        """Months per window."""
        return self.reservoir.horizon_months

    def policies(self) -> dict[str, TensorDictModuleBase]:
        """Every reference policy replayed: the two SDPs, SOP and the bound, ``foresight``."""
        model = self.model
        independent = ReservoirModel(model.config, without_persistence(model.chain), model.release_levels, model.demand)
        return {
            "sdp": SDPPolicy(reservoir_optimum(self.reservoir)),
            "sdp_independent": SDPPolicy(solve(independent)),
            "sop": StandardOperatingPolicy(model),
            "foresight": ForesightPolicy(foresight(model, self.windows.inflows, self.windows.classes[:, -1]).policy),
        }

    def random_rewards(self) -> torch.Tensor:
        """``[W, H]`` each month's expected reward of the uniformly random policy, exactly (:func:`.sdp.random_rewards`
        carries the storage distribution forward)."""
        return random_rewards(self.model, self.windows.inflows.double(), self.windows.classes[:, -1])

    def episodes(
        self,
        policy: TensorDictModuleBase,
        windows: Windows | None = None,
        copies: int = 1,
        steps: int | None = None,
        env: EnvBase | None = None,
    ) -> Episodes:
        """``policy`` replaying every window (default: all held-out ones), ``copies`` times over (agent-major);
        ``steps``: only each window's first ``steps`` months; ``env``: played in this environment of as many
        slots (:meth:`make`), else a new one."""
        tiled = (windows or self.windows).tile(copies)

        def replayed(played_in: EnvBase) -> None:
            base = played_in.base_env
            assert isinstance(base, DiscreteReservoirEnv)
            base.replay(tiled)

        seeds = [0] * len(tiled)
        return run_episodes(self.profile, self.config, policy, seeds, prepare=replayed, steps=steps, env=env)

    def make(self, slots: int) -> EnvBase:
        """An environment of ``slots`` reservoirs to replay windows in (:meth:`episodes`' ``env``)."""
        return self.profile.make(self.config, [0] * slots)

    def rewards(self, policy: TensorDictModuleBase, copies: int = 1) -> torch.Tensor:
        """``[copies, W, H]`` the monthly rewards of ``policy`` replaying every window (``copies`` stacked agents)."""
        return self._rewards(self.episodes(policy, copies=copies), copies)

    def replay(self, policy: TensorDictModuleBase, copies: int = 1) -> Replayed:
        """``policy`` replaying every window, ``copies`` times over: rewards, and per copy the performance
        criteria (Hashimoto et al., 1982, as :meth:`~.profile.ReservoirProfile.policy_metrics`) pooled over the
        windows, with each window's reliability, deficit and energy."""
        episodes = self.episodes(policy, copies=copies)
        count = len(self.windows)
        parts = [episodes.part(copy * count, (copy + 1) * count) for copy in range(copies)]
        pooled, per_window = [self._pooled(part) for part in parts], [self._per_window(part) for part in parts]
        return Replayed(self._rewards(episodes, copies), pooled, per_window)

    def continuous(self, policy: TensorDictModuleBase | None, copies: int = 1) -> Replayed:
        """``policy`` operating the whole held-out period in one run, storage carried from year to year, as an
        operator would have lived it (``None``: the uniformly random policy, its rewards exact, its criteria
        over :data:`RANDOM_REPLAYS` seeded runs).

        Each water year is played as the first year of a fresh horizon from the storage the last one left (a
        finite-horizon rule re-applied every year, as operators re-plan each year); ``foresight`` is one DP
        over the whole period. Rewards ``[copies, 1, months]``; per copy the criteria pooled over the months,
        deficit and energy per year.
        """
        years = self.period_years
        inflows = self.whole.inflows
        months = MONTHS_PER_YEAR * years
        if policy is None:
            random = RandomPolicy(self.model.num_actions, RANDOM_SEED)
            played = self._years(lambda first: random, RANDOM_REPLAYS)
            expected = random_rewards(self.model, inflows[:, :months].double())
            return Replayed(expected.unsqueeze(0), [self._per_year(played, years)], [{}])
        if isinstance(policy, ForesightPolicy):  # one DP over the whole period: each year plays its months of it
            table = foresight(self.model, inflows[:, :months]).policy
            played = self._years(lambda first: ForesightPolicy(table[:, first:]), copies)
        else:
            played = self._years(lambda first: policy, copies)
        parts = [played.part(copy, copy + 1) for copy in range(copies)]
        rewards = played.steps["next", "reward"].squeeze(-1).double().view(copies, 1, months)
        return Replayed(rewards, [self._per_year(part, years) for part in parts], [{} for _ in parts])

    def _years(self, policy: Callable[[int], TensorDictModuleBase], copies: int) -> Episodes:
        """The held-out period's years played one after the other by ``copies`` slots (see :meth:`continuous`);
        ``policy(first)``: the policy of the year starting at the period's month ``first``. One environment
        plays every year (a year's replay is a window per slot, from the storage the last one left)."""
        horizon, period = self.horizon, self.whole
        storages = torch.full((copies,), float(self.reservoir.initial_storage), dtype=torch.float64)
        steps = []
        env = self.make(copies)
        try:
            for year in range(self.period_years):
                first = MONTHS_PER_YEAR * year
                # The year's months, then months of no inflow the episode never reaches (it plays the first year).
                inflows = torch.zeros(1, horizon, dtype=period.inflows.dtype)
                inflows[0, :MONTHS_PER_YEAR] = period.inflows[0, first : first + MONTHS_PER_YEAR]
                classes = period.classes[:, first : first + horizon + 1]
                classes = torch.cat([classes, classes[:, -1:].expand(1, horizon + 1 - classes.shape[1])], dim=1)
                before = period.before if first == 0 else period.inflows[:, first - 1]
                window = Windows((period.starts[0],), (period.first_years[0] + year,), classes, inflows, before)
                played = window.tile(copies).starting_at(storages)
                episodes = self.episodes(policy(first), played, 1, MONTHS_PER_YEAR, env=env)
                steps.append(episodes.steps)
                storages = episodes.steps["next", "storage"][:, -1].double()
        finally:
            env.close()
        joined = tensordict.cat(steps, dim=1)
        rewards = joined["next", "reward"].squeeze(-1).double()
        return Episodes(joined, rewards.sum(dim=1), torch.full((copies,), joined.shape[1]))

    def _per_year(self, episodes: Episodes, years: int) -> dict[str, float]:
        """The criteria pooled over ``episodes``' months, deficit and energy per year."""
        pooled = self._pooled(episodes)
        return pooled | {key: pooled[key] / years for key in ("deficit_hm3", "energy_gwh")}

    def _rewards(self, episodes: Episodes, copies: int) -> torch.Tensor:
        rewards: torch.Tensor = episodes.steps["next", "reward"].squeeze(-1).double()
        return rewards.view(copies, len(self.windows), -1)

    def random_performance(self) -> Replayed:
        """The uniformly random policy: its exact expected rewards, and its performance measured on
        :data:`RANDOM_REPLAYS` seeded replays of every window, pooled over all of them (each window's: the mean
        over the replays)."""
        episodes = self.episodes(RandomPolicy(self.model.num_actions, RANDOM_SEED), copies=RANDOM_REPLAYS)
        per_window = self._per_window(episodes)
        count = len(self.windows)
        mean = {
            key: tuple(float(v) for v in torch.tensor(values).view(RANDOM_REPLAYS, count).mean(dim=0))
            for key, values in per_window.items()
        }
        return Replayed(self.random_rewards().unsqueeze(0), [self._pooled(episodes)], [mean])

    def _pooled(self, episodes: Episodes) -> dict[str, float]:
        metrics = self.profile.policy_metrics(self.config, episodes)
        columns = self.profile.episode_columns(self.config, episodes)
        totals = {key: float(columns[key].double().mean()) for key in ("deficit_hm3", "energy_gwh")}
        return {key: float(metrics[key]) for key in PERFORMANCE if key in metrics} | totals

    def _per_window(self, episodes: Episodes) -> dict[str, tuple[float, ...]]:
        columns = self.profile.episode_columns(self.config, episodes)
        reliability = 1.0 - columns["shortfall_months"].double() / episodes.lengths.double()
        return {
            "reliability": tuple(float(value) for value in reliability),
            **{key: tuple(float(value) for value in columns[key]) for key in ("deficit_hm3", "energy_gwh")},
        }

    def trajectory_rows(self, shipped: tuple[TensorDictModuleBase, int, int]) -> list[dict[str, object]]:
        """Trajectory rows of the first held-out window for the shipped agent, the Markov SDP and foresight.

        :param shipped: the stacked Q-network, how many agents it holds, and the shipped agent's index.
        """
        first = self.windows.head(1)
        q_network, agents, agent = shipped
        played = {
            "dqn": self.episodes(q_network, first, agents).part(agent, agent + 1),
            "sdp": self.episodes(SDPPolicy(reservoir_optimum(self.reservoir)), first),
            "foresight": self.episodes(
                ForesightPolicy(foresight(self.model, first.inflows, first.classes[:, -1]).policy), first
            ),
        }
        return [
            row
            for name, episodes in played.items()
            for row in self.profile.trajectory_rows(self.config, HELD_OUT_PREFIX + name, episodes, 1)
        ]
