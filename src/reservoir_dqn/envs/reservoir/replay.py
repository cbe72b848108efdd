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
from reservoir_dqn.envs.reservoir.sdp import ForesightSolution, foresight, random_rewards, solve
from reservoir_dqn.envs.reservoir.settings import ReservoirConfig
from reservoir_dqn.envs.reservoir.windows import HELD_OUT_PREFIX, Windows, find_windows
from reservoir_dqn.envs.rollouts import run_episodes

RANDOM_REPLAYS, RANDOM_SEED = 100, 0  # the random policy's performance: a mean over seeded replays
# The re-operation's performance criteria, pooled over the windows (a window's total for deficit and energy).
PERFORMANCE = ("reliability", "resilience", "vulnerability_hm3", "deficit_hm3", "energy_gwh")
DEFICIT = Metric("deficit_hm3", "unmet demand per window (hm3)", 0.0)


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


class RecordReplay:
    """The held-out windows of one reservoir's record, replayed by any policy in the reservoir's environment."""

    def __init__(self, profile: EnvProfile, config: EnvConfig, reservoir: ReservoirConfig, windows: Windows) -> None:
        self.profile, self.config, self.reservoir, self.windows = profile, config, reservoir, windows
        self.model = ReservoirModel.from_config(reservoir)

    @classmethod
    def of(cls, profile: EnvProfile, config: EnvConfig, reservoir: ReservoirConfig) -> RecordReplay | None:
        """The replay of a record-driven reservoir's held-out windows (``None``: no record, or no held-out years)."""
        if reservoir.inflow_model != "record":
            return None
        windows = find_windows(reservoir, ReservoirModel.from_config(reservoir).chain, "held_out")
        return None if windows is None else cls(profile, config, reservoir, windows)

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
            "foresight": ForesightPolicy(foresight(model, self.windows.inflows)),
        }

    def random_rewards(self) -> torch.Tensor:
        """``[W, H]`` each month's expected reward of the uniformly random policy, exactly (:func:`.sdp.random_rewards`
        carries the storage distribution forward)."""
        return random_rewards(self.model, self.windows.inflows.double())

    def episodes(self, policy: TensorDictModuleBase, windows: Windows | None = None, copies: int = 1) -> Episodes:
        """``policy`` replaying every window (default: all held-out ones), ``copies`` times over (agent-major)."""
        tiled = (windows or self.windows).tile(copies)

        def replayed(env: EnvBase) -> None:
            base = env.base_env
            assert isinstance(base, DiscreteReservoirEnv)
            base.replay(tiled)

        return run_episodes(self.profile, self.config, policy, [0] * len(tiled), prepare=replayed)

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
            "foresight": self.episodes(ForesightPolicy(foresight(self.model, first.inflows)), first),
        }
        return [
            row
            for name, episodes in played.items()
            for row in self.profile.trajectory_rows(self.config, HELD_OUT_PREFIX + name, episodes, 1)
        ]
