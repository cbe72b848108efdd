"""The reservoir's profile: how it is built, scored against the SDP optimum, and read by water engineers.

Besides the return, every policy is described with the performance criteria of the
water-resources field (Hashimoto, Stedinger and Loucks, 1982, "Reliability, resiliency and
vulnerability criteria for water resource system performance evaluation"), with a month
as the time unit and "the demand is met in full" as the satisfactory state:

- **reliability**: the share of months whose demand is met in full;
- **resilience**: the probability that a month of shortfall is followed by a month without
  (1 when there is no shortfall at all);
- **vulnerability**: the mean shortfall in the months with one, in hm3 (0 without shortfall);

plus the months that end below the minimum operating storage, the spilled volume and the
energy generated, per episode. All are pooled over the episodes of a policy, so one unit of
storage more or less moves them by one month's worth, never by a whole episode.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import Compose, EnvBase, RewardSum, StepCounter

from reservoir_dqn.common.metrics import MetricGroup
from reservoir_dqn.config import EnvConfig
from reservoir_dqn.envs.profile import RETURN, SCORE, EnvProfile, Episodes, Metric
from reservoir_dqn.envs.reservoir.account import Account, account, greedy_tables, grid_observations
from reservoir_dqn.envs.reservoir.advice import ReservoirAdvisor
from reservoir_dqn.envs.reservoir.baselines import reservoir_baselines, reservoir_optimum
from reservoir_dqn.envs.reservoir.env import DiscreteReservoirEnv
from reservoir_dqn.envs.reservoir.front import Evaluator, agent_points, describe, exact_front, sop_table
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.replay import RecordReplay
from reservoir_dqn.envs.reservoir.settings import ReservoirConfig
from reservoir_dqn.envs.reservoir.sizing import check_size
from reservoir_dqn.envs.reservoir.windows import check_held_out

if TYPE_CHECKING:  # matplotlib and pandas are imported where figures and tables are made
    from matplotlib.figure import Figure
    from pandas import DataFrame

RELIABILITY = Metric("reliability", "reliability (share of months with the demand met in full)", 0.0, 1.0)
RANGED = (
    Metric("resilience", "resilience (probability that a month of shortfall is followed by one without)", 0.0, 1.0),
    Metric("vulnerability_hm3", "vulnerability (mean shortfall of the months with one, hm3)", 0.0),
    Metric("violation_months", "months ending below the minimum operating storage, per episode", 0.0),
    Metric("spill_hm3", "spilled volume per episode (hm3)", 0.0),
    Metric("energy_gwh", "energy generated per episode (GWh)", 0.0),
    Metric("utility_loss_mean", "mean utility lost to the exact front over weightings (reward units)", 0.0),
    Metric("utility_loss_max", "largest utility lost to the exact front over weightings (reward units)", 0.0),
)
# Per-month flows of the training batches, in hm3 (energy in GWh): the reservoir/ namespace.
FLOWS = ("inflow", "release", "spill", "deficit", "violation")
BATCH = MetricGroup(
    "reservoir",
    ("storage_hm3", *(f"{flow}_hm3" for flow in FLOWS), "energy_gwh"),
    description="training batches, per month: mean storage at month end, flows in hm3, energy in GWh",
)
EPISODE = MetricGroup(
    "episode",
    ("return", "length", "count", "reliability"),
    description="training episodes that ended in the interval: mean return, length and reliability, how many",
)


NAMED = "reservoir-"  # env.name reservoir-<river>: a reservoir under a name of its own


def reservoir_settings(config: EnvConfig) -> ReservoirConfig:
    """``env.reservoir``, typed."""
    return config.settings(ReservoirConfig, ReservoirProfile.section)


# Settings added after evaluations recorded their conditions, and the value at which they change nothing.
ADDED_SINCE: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("end_value",), "none"),
    (("record", "held_out"), None),
    (("record", "validation"), None),
    (("bootstrap_block_years",), 3),  # these two change nothing under scenarios chain or record
    (("mixture_chain_share",), 0.5),
    (("observe_last_flow",), False),
)


class ReservoirProfile(EnvProfile):
    """The reservoir, as ``env.name: reservoir``, or under a name of its own (``reservoir-<river>``).

    A named reservoir has its own MLflow experiment, registered model and champion, so a
    reservoir on a real river's record never competes with the illustrative one.
    """

    section = "reservoir"
    settings_model = ReservoirConfig
    headline = (SCORE, RETURN, RELIABILITY)
    ranged = RANGED
    optimum_label = "the SDP optimum"
    optimum_baseline = "sdp"

    def __init__(self, name: str = "reservoir") -> None:
        if name != "reservoir" and not (name.startswith(NAMED) and len(name) > len(NAMED)):
            raise ValueError(f"a reservoir's name is 'reservoir' or '{NAMED}<river>', not {name!r}")
        self.name = name

    def settings(self, config: EnvConfig) -> dict[str, Any]:
        """The reservoir's settings, but the options added since results were first recorded where they hold the
        value that reproduces those results (:data:`ADDED_SINCE`), so older results compare equal."""
        physics = reservoir_settings(config).model_dump(mode="json")
        for path, neutral in ADDED_SINCE:
            *parents, key = path
            section = physics
            for parent in parents:
                section = section[parent]
            if section.get(key) == neutral:
                del section[key]
        return {"env.name": config.name} | {f"env.reservoir.{key}": value for key, value in physics.items()}

    def check(self, config: EnvConfig) -> None:
        """A record-driven reservoir's record loads and fits (a bad one: one line naming the file and the line), and
        the reservoir is sized for that river (:mod:`.sizing`: one sized for another is refused in one line)."""
        reservoir = reservoir_settings(config)
        ReservoirModel.from_config(reservoir)  # the record's own problems first: fix the file, then the size
        if reservoir.inflow_model == "record":
            check_held_out(reservoir)
            check_size(reservoir)

    def test_config(self, config: EnvConfig) -> EnvConfig:
        """Test episodes are drawn from the chain, whatever the agents learnt from: the SDP is optimal there."""
        chain = reservoir_settings(config).model_copy(update={"scenarios": "chain"})
        return config.with_settings(self.section, chain)

    def make(self, config: EnvConfig, slot_seeds: Sequence[int]) -> EnvBase:
        env = DiscreteReservoirEnv(reservoir_settings(config), len(slot_seeds))
        env.seed_slots(slot_seeds)
        return env.append_transform(Compose(StepCounter(), RewardSum()))

    def episode_limit(self, config: EnvConfig) -> int:
        return reservoir_settings(config).horizon_months

    def baselines(self, config: EnvConfig, num_actions: int, seed: int) -> dict[str, TensorDictModuleBase]:
        return reservoir_baselines(reservoir_settings(config), seed)

    def optimum_return(self, config: EnvConfig, baseline_returns: Mapping[str, float]) -> float:
        return baseline_returns["sdp"]

    def policy_metrics(self, config: EnvConfig, episodes: Episodes) -> dict[str, float]:
        unit = reservoir_settings(config).unit_hm3
        valid = episodes.steps["valid"]
        nxt = episodes.steps["next"]
        deficit = nxt["deficit"].double() * valid
        failure = (deficit > 0) & valid
        months = int(valid.sum())
        failures = int(failure.sum())
        # Resilience: of the failure months that have a next month in the episode, the share followed by success.
        followed = failure[:, :-1] & valid[:, 1:]
        recovered = followed & ~failure[:, 1:]
        totals = {key: (nxt[key].double() * valid).sum(dim=1) for key in ("spill", "energy_gwh")}
        return {
            "reliability": 1.0 - failures / months,
            "resilience": float(recovered.sum()) / int(followed.sum()) if int(followed.sum()) else 1.0,
            "vulnerability_hm3": float(deficit[failure].mean()) * unit if failures else 0.0,
            "violation_months": float(((nxt["violation"] > 0) & valid).sum()) / len(episodes),
            "spill_hm3": float(totals["spill"].mean()) * unit,
            "energy_gwh": float(totals["energy_gwh"].mean()),
        }

    def episode_columns(self, config: EnvConfig, episodes: Episodes) -> dict[str, torch.Tensor]:
        unit = reservoir_settings(config).unit_hm3
        valid = episodes.steps["valid"].double()
        nxt = episodes.steps["next"]
        columns = {f"{flow}_hm3": (nxt[flow].double() * valid).sum(dim=1) * unit for flow in FLOWS}
        columns["energy_gwh"] = (nxt["energy_gwh"].double() * valid).sum(dim=1)
        columns |= {key: (nxt[key].double() * valid).sum(dim=1) for key in _reward_keys(config)}
        columns["shortfall_months"] = ((nxt["deficit"] > 0).double() * valid).sum(dim=1)
        columns["violation_months"] = ((nxt["violation"] > 0).double() * valid).sum(dim=1)
        return columns

    def action_meaning(self, config: EnvConfig, num_actions: int) -> tuple[str, torch.Tensor]:
        reservoir = reservoir_settings(config)
        return "release_hm3", torch.tensor(reservoir.release_levels, dtype=torch.float32) * reservoir.unit_hm3

    def observation_fields(self, config: EnvConfig, size: int) -> tuple[str, ...]:
        """As :class:`~reservoir_dqn.envs.reservoir.env.DiscreteReservoirEnv` documents its observation."""
        return tuple(self._observation(config))

    def observation_bounds(self, config: EnvConfig, size: int) -> tuple[tuple[float, float], ...]:
        """The Min and Max columns of :class:`~reservoir_dqn.envs.reservoir.env.DiscreteReservoirEnv`'s table."""
        return tuple(self._observation(config).values())

    def _observation(self, config: EnvConfig) -> dict[str, tuple[float, float]]:
        """The observation's fields, in order, and their bounds."""
        reservoir = reservoir_settings(config)
        fields = {"storage_over_capacity": (0.0, 1.0), "sin_month": (-1.0, 1.0), "cos_month": (-1.0, 1.0)}
        if reservoir.observe_time_left:
            fields["months_left_over_horizon"] = (0.0, 1.0)
        if ReservoirModel.from_config(reservoir).chain.persistent:
            fields["last_inflow_class_quantile"] = (0.0, 1.0)
        if reservoir.observe_last_flow:
            fields["last_inflow_quantile"] = (-1.0, 1.0)
        return fields

    def grid_observations(self, config: EnvConfig) -> torch.Tensor:
        return grid_observations(ReservoirModel.from_config(reservoir_settings(config)))

    def exact_accounts(
        self, config: EnvConfig, q_values: Callable[[torch.Tensor], torch.Tensor], agents: int
    ) -> list[Account]:
        reservoir = reservoir_settings(config)
        model, solution = ReservoirModel.from_config(reservoir), reservoir_optimum(reservoir)
        return [account(model, solution, table) for table in greedy_tables(model, q_values, agents)]

    def trade_offs(
        self, config: EnvConfig, networks: Mapping[str, tuple[Callable[[torch.Tensor], torch.Tensor], int]]
    ) -> dict[str, Any] | None:
        """Energy against supply (:mod:`.front`): the front at the ``front`` command's default tolerance, SOP, and
        each network's agents; none where the episode's end has a water value (a reward that is neither)."""
        reservoir = reservoir_settings(config)
        if reservoir.end_value != "none":
            return None
        model = ReservoirModel.from_config(reservoir)
        front = exact_front(model)
        sop = Evaluator(model).point(sop_table(model))
        agents = {network: agent_points(model, q_values, count) for network, (q_values, count) in networks.items()}
        return describe(front, model, sop, agents)

    def trade_off_figure(self, config: EnvConfig, trade_offs: dict[str, Any]) -> Figure:
        from reservoir_dqn.envs.reservoir.front_figure import front_figure  # matplotlib only where figures are drawn

        return front_figure(trade_offs, config.name)

    def state_rows(self, config: EnvConfig, account: Account) -> list[dict[str, Any]]:
        """Every (time step, storage, class) state: the policy's and the optimum's release targets in hm3/month,
        the probability that the policy is there, and the value one month of the policy loses there (reward units)."""
        reservoir = reservoir_settings(config)
        model = ReservoirModel.from_config(reservoir)
        optimal = reservoir_optimum(reservoir).policy
        levels = model.release_levels * reservoir.unit_hm3
        horizon, storages, columns = account.policy.shape
        months = model.month(torch.arange(horizon)).tolist()
        policy, best = levels[account.policy].tolist(), levels[optimal].tolist()
        visits, loss = account.visits.tolist(), account.loss.tolist()
        return [
            {
                "time_step": t,
                "month": calendar.month_abbr[months[t] + 1],
                "months_left": horizon - t,
                "storage_hm3": s * reservoir.unit_hm3,
                "inflow_class": j if model.chain.persistent else "-",
                "release_hm3": policy[t][s][j],
                "sdp_release_hm3": best[t][s][j],
                "visits": visits[t][s][j],
                "value_lost": loss[t][s][j],
            }
            for t in range(horizon)
            for s in range(storages)
            for j in range(columns)
        ]

    @property
    def episode_group(self) -> MetricGroup:
        return EPISODE

    def episode_extras(self, finished: TensorDictBase) -> dict[str, torch.Tensor]:
        # The running count of months with a shortfall, at the episode's last step, is the episode's total.
        months = finished["step_count"].squeeze(-1).double()
        return {"reliability": 1.0 - finished["deficit_months"].double() / months}

    @property
    def batch_group(self) -> MetricGroup:
        return BATCH

    def batch_sums(self, config: EnvConfig, steps: TensorDictBase) -> dict[str, torch.Tensor]:
        nxt = steps["next"]
        unit = reservoir_settings(config).unit_hm3
        sums = {"storage_hm3": nxt["storage"].double().sum(dim=1) * unit}
        sums |= {f"{flow}_hm3": nxt[flow].double().sum(dim=1) * unit for flow in FLOWS}
        sums["energy_gwh"] = nxt["energy_gwh"].double().sum(dim=1)
        return sums

    def trajectory_rows(self, config: EnvConfig, policy: str, episodes: Episodes, count: int) -> list[dict[str, Any]]:
        reservoir = reservoir_settings(config)
        unit, levels = reservoir.unit_hm3, reservoir.release_levels
        steps, nxt = episodes.steps, episodes.steps["next"]
        demand = torch.tensor(reservoir.demand, dtype=torch.float64)
        rewards = _reward_keys(config)
        rows = []
        for index in range(min(count, len(episodes))):
            for step in range(int(episodes.lengths[index])):
                month = int(steps["month"][index, step])
                action = int(steps["action"][index, step])
                row: dict[str, Any] = {
                    "policy": policy,
                    "episode": index,
                    "step": step,
                    "month": month,
                    "storage_start_hm3": float(steps["storage"][index, step]) * unit,
                    "action": action,
                    "release_target_hm3": levels[action] * unit,
                    "demand_hm3": float(demand[month]) * unit,
                }
                row |= {f"{key}_hm3": float(nxt[key][index, step]) * unit for key in ("storage", *FLOWS)}
                row["energy_gwh"] = float(nxt["energy_gwh"][index, step])
                row |= {key: float(nxt[key][index, step]) for key in rewards}
                row["reward"] = float(nxt["reward"][index, step])
                rows.append(row)
        return rows

    def figures(
        self, config: EnvConfig, trajectories: DataFrame, episodes: DataFrame, states: DataFrame
    ) -> dict[str, Figure]:
        from reservoir_dqn.envs.reservoir.figures import reservoir_figures  # matplotlib only where figures are drawn

        return reservoir_figures(reservoir_settings(config), trajectories, episodes, states)

    def held_out(self, config: EnvConfig) -> RecordReplay | None:
        """A record-driven reservoir's held-out windows (:mod:`.replay`); ``None`` for synthetic inflows."""
        return RecordReplay.of(self, config, reservoir_settings(config))

    def validation_years(self, config: EnvConfig) -> RecordReplay | None:
        """A record-driven reservoir's validation windows (``record.validation``); ``None`` without them."""
        reservoir = reservoir_settings(config)
        if reservoir.record.validation is None:
            return None
        return RecordReplay.of(self, config, reservoir, "validation")

    def advisor(self, config: EnvConfig) -> ReservoirAdvisor:
        return ReservoirAdvisor(reservoir_settings(config))

    def get_state(self, env: EnvBase) -> dict[str, Any]:
        base = env.base_env
        assert isinstance(base, DiscreteReservoirEnv)
        return base.get_state()

    def set_state(self, env: EnvBase, state: Mapping[str, Any]) -> bool:
        base = env.base_env
        assert isinstance(base, DiscreteReservoirEnv)
        base.set_state(dict(state))
        return True


def _reward_keys(config: EnvConfig) -> tuple[str, ...]:
    """The reward's components the environment reports (they sum to the reward)."""
    keys = ReservoirModel.from_config(reservoir_settings(config)).info_keys
    return tuple(key for key in keys if key.startswith("reward_"))
