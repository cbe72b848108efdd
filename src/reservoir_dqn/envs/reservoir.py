"""``DiscreteReservoirEnv``: monthly operation of a multipurpose reservoir, as an exact finite MDP.

The physics live in :class:`ReservoirModel`, shared by the batched TorchRL environment
and the stochastic dynamic programming solver (:mod:`reservoir_dqn.envs.sdp`), so the
optimum the solver computes is the optimum of exactly the environment the agent trains on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import NamedTuple

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from reservoir_dqn.config import ReservoirConfig

WATER_WEIGHT_N_PER_M3 = 9810.0  # rho * g: weight of one cubic metre of water, N/m3
JOULES_PER_GWH = 3.6e12
MONTHS = 12

# Per-step quantities the environment reports next to the reward (all float, one per reservoir).
INFO_KEYS = (
    "storage",  # storage at the end of the month, units
    "inflow",  # inflow during the month, units
    "release",  # water actually released (target cut to what is available), units
    "spill",  # uncontrolled overflow above capacity, units
    "energy_gwh",  # hydropower generated, GWh
    "deficit",  # demand not met by the release, units
    "violation",  # storage below the minimum operating level at the end of the month, units
    "deficit_months",  # months of this episode so far whose demand was not met in full
    "violation_months",  # months of this episode so far that ended below the minimum operating level
    "reward_energy",  # weighted reward components; they sum to the reward
    "reward_deficit",
    "reward_spill",
    "reward_violation",
)


class Outcome(NamedTuple):
    """One month of reservoir operation; every field broadcasts like the inputs."""

    next_storage: torch.Tensor
    release: torch.Tensor
    spill: torch.Tensor
    energy_gwh: torch.Tensor
    deficit: torch.Tensor
    violation: torch.Tensor
    reward_energy: torch.Tensor
    reward_deficit: torch.Tensor
    reward_spill: torch.Tensor
    reward_violation: torch.Tensor

    @property
    def reward(self) -> torch.Tensor:
        """The reward is the sum of the weighted components."""
        return self.reward_energy + self.reward_deficit + self.reward_spill + self.reward_violation


def discretise_lognormal(median: float, cv: float, classes: int) -> list[int]:
    """Equiprobable classes of a lognormal flow, each represented by its conditional mean, in whole units.

    Band ``k`` holds the flows between the ``k/K`` and ``(k+1)/K`` quantiles; its value is
    ``E[X | band k] = exp(mu + s^2/2) * K * (Phi(z_{k+1} - s) - Phi(z_k - s))``, rounded.
    """
    sigma = math.sqrt(math.log(1.0 + cv * cv))
    mean = median * math.exp(sigma * sigma / 2.0)
    normal = NormalDist()
    edges = [-math.inf, *(normal.inv_cdf(k / classes) for k in range(1, classes)), math.inf]

    def cdf(z: float) -> float:
        return 0.0 if z == -math.inf else 1.0 if z == math.inf else normal.cdf(z)

    return [max(0, round(mean * classes * (cdf(edges[k + 1] - sigma) - cdf(edges[k] - sigma)))) for k in range(classes)]


@dataclass(frozen=True)
class ReservoirModel:
    """The reservoir's physics and inflow model, as tensors derived from :class:`ReservoirConfig`.

    :ivar inflow_values: ``[12, K]`` inflow of each equiprobable class, units per month.
    :ivar release_levels: ``[A]`` release target of each action, units per month.
    :ivar demand: ``[12]`` water-supply demand, units per month.
    """

    config: ReservoirConfig
    inflow_values: torch.Tensor
    release_levels: torch.Tensor
    demand: torch.Tensor

    @classmethod
    def from_config(cls, config: ReservoirConfig) -> ReservoirModel:
        inflows = [
            discretise_lognormal(median, cv, config.inflow_classes)
            for median, cv in zip(config.inflow_median, config.inflow_cv, strict=True)
        ]
        return cls(
            config=config,
            inflow_values=torch.tensor(inflows, dtype=torch.float64),
            release_levels=torch.tensor(config.release_levels, dtype=torch.float64),
            demand=torch.tensor(config.demand, dtype=torch.float64),
        )

    @property
    def num_actions(self) -> int:
        return len(self.config.release_levels)

    @property
    def num_storages(self) -> int:
        return self.config.capacity + 1

    def month(self, time_step: torch.Tensor) -> torch.Tensor:
        """Calendar month (0 = January) of a time step."""
        return (time_step + self.config.start_month) % MONTHS

    def head_m(self, storage: torch.Tensor) -> torch.Tensor:
        """Hydraulic head, linear in storage between ``head_min_m`` (empty) and ``head_max_m`` (full)."""
        c = self.config
        return c.head_min_m + (c.head_max_m - c.head_min_m) * storage / c.capacity

    def transition(
        self, storage: torch.Tensor, inflow: torch.Tensor, action: torch.Tensor, month: torch.Tensor
    ) -> Outcome:
        """One month: mass balance, spill, energy, deficit, violation and the weighted rewards.

        All arguments broadcast; storage and inflow in units, ``action`` indexes the release
        levels, ``month`` is the calendar month.
        """
        c = self.config
        available = storage + inflow
        release = torch.minimum(self.release_levels[action], available)
        after_release = available - release
        spill = torch.clamp(after_release - c.capacity, min=0.0)
        next_storage = after_release - spill
        turbined = torch.clamp(release, max=float(c.turbine_capacity))
        head = self.head_m((storage + next_storage) / 2.0)
        energy_gwh = WATER_WEIGHT_N_PER_M3 * head * turbined * c.unit_hm3 * 1e6 * c.efficiency / JOULES_PER_GWH
        deficit = torch.clamp(self.demand[month] - release, min=0.0)
        violation = torch.clamp(c.min_storage - next_storage, min=0.0)
        return Outcome(
            next_storage=next_storage,
            release=release,
            spill=spill,
            energy_gwh=energy_gwh,
            deficit=deficit,
            violation=violation,
            reward_energy=c.weight_energy * energy_gwh,
            reward_deficit=-c.weight_deficit * deficit,
            reward_spill=-c.weight_spill * spill,
            reward_violation=-c.weight_violation * violation,
        )

    def observation(self, storage: torch.Tensor, time_step: torch.Tensor) -> torch.Tensor:
        """``[storage / capacity, sin(2 pi month / 12), cos(2 pi month / 12)]`` as float32."""
        angle = 2.0 * math.pi * self.month(time_step).double() / MONTHS
        return torch.stack([storage / self.config.capacity, torch.sin(angle), torch.cos(angle)], dim=-1).float()


class DiscreteReservoirEnv(EnvBase):
    """Monthly release decisions for ``N`` independent reservoirs, stepped together.

    A reservoir stores water in whole volume units (``unit_hm3`` hm3 each) between 0 and
    ``capacity``. Every month the operator picks a release target; the inflow of that
    month arrives; water above capacity spills. Turbined release makes hydropower, release
    serves a downstream water-supply demand, spill is a flood risk and storage below the
    minimum operating level is a violation. All parameters come from the ``env.reservoir``
    section of params.yaml.

    ## Action Space

    ``Categorical(A)``: index into ``release_levels`` (default 11 targets, 0 to 20 units
    per month). The actual release is the target cut to the water available
    (storage + inflow); storage can therefore never go negative.

    ## Observation Space

    ``observation`` is a float32 vector of shape ``(3,)``:

    | Num | Observation                      | Min  | Max |
    |-----|----------------------------------|------|-----|
    | 0   | storage / capacity (start of month) | 0 | 1   |
    | 1   | sin(2 pi month / 12)             | -1   | 1   |
    | 2   | cos(2 pi month / 12)             | -1   | 1   |

    The output also carries, per reservoir, the month's physical quantities and reward
    components, the episode's running counts of months with a supply shortfall and with
    a storage violation (see ``INFO_KEYS``), ``month`` (0 = January) and ``time_step``.

    ## Transition (one month, month ``m``, storage ``s``, inflow ``q``, target ``u``)

    - release ``r = min(u, s + q)``
    - spill ``= max(0, s + q - r - capacity)``; next storage ``s' = s + q - r - spill``
      (mass balance: ``s' = s + q - r - spill`` and ``0 <= s' <= capacity``)
    - turbined ``= min(r, turbine_capacity)``; head ``h`` is linear in storage from
      ``head_min_m`` (empty) to ``head_max_m`` (full), taken at ``(s + s') / 2``
    - energy [GWh] ``= 9810 N/m3 * h * turbined [m3] * efficiency / 3.6e12``
    - deficit ``= max(0, demand[m] - r)``; violation ``= max(0, min_storage - s')``

    ## Inflow

    Month ``m``'s inflow is lognormal with median ``inflow_median[m]`` and coefficient of
    variation ``inflow_cv[m]``, discretised into ``inflow_classes`` equiprobable classes
    represented by their conditional means (whole units). Draws are independent across
    months and years. Each reservoir slot has its own generator: slot ``i`` of an
    environment seeded ``s`` draws what a single environment seeded ``s + i`` draws. An
    episode's inflow sequence is drawn at reset, so it does not depend on the actions.

    ## Rewards

    ``reward = weight_energy * energy - weight_deficit * deficit - weight_spill * spill
    - weight_violation * violation``; each weighted term is reported separately
    (``reward_energy``, ``reward_deficit``, ``reward_spill``, ``reward_violation``).

    ## Starting State

    Storage ``initial_storage``, month ``start_month``, time step 0.

    ## Episode End

    - Termination: never (a reservoir does not fail).
    - Truncation: after ``horizon_months`` steps (default 120, ten years).

    ## Arguments

    :param config: the ``env.reservoir`` parameters.
    :param num_envs: number of reservoirs stepped together (the batch size).
    :param device: torch device of the outputs.
    """

    def __init__(self, config: ReservoirConfig, num_envs: int = 1, device: torch.device | str = "cpu") -> None:
        super().__init__(batch_size=torch.Size([num_envs]), device=device)
        self.model = ReservoirModel.from_config(config)
        self.num_envs = num_envs
        self._storage = torch.full((num_envs,), float(config.initial_storage), dtype=torch.float64)
        self._time_step = torch.zeros(num_envs, dtype=torch.long)
        self._inflows = torch.zeros(num_envs, config.horizon_months, dtype=torch.float64)
        self._deficit_months = torch.zeros(num_envs, dtype=torch.float64)
        self._violation_months = torch.zeros(num_envs, dtype=torch.float64)
        self._generators = [np.random.default_rng(index) for index in range(num_envs)]
        self._make_specs()

    def _make_specs(self) -> None:
        shape = self.batch_size
        info = {key: Unbounded(shape=shape, dtype=torch.float32) for key in INFO_KEYS}
        self.observation_spec = Composite(
            observation=Bounded(low=-1.0, high=1.0, shape=(*shape, 3), dtype=torch.float32),
            month=Bounded(low=0, high=MONTHS - 1, shape=shape, dtype=torch.int64),
            time_step=Bounded(low=0, high=self.model.config.horizon_months, shape=shape, dtype=torch.int64),
            **info,
            shape=shape,
        )
        self.action_spec = Categorical(self.model.num_actions, shape=shape)
        self.reward_spec = Unbounded(shape=(*shape, 1), dtype=torch.float32)
        self.full_done_spec = Composite(
            done=Categorical(2, shape=(*shape, 1), dtype=torch.bool),
            terminated=Categorical(2, shape=(*shape, 1), dtype=torch.bool),
            truncated=Categorical(2, shape=(*shape, 1), dtype=torch.bool),
            shape=shape,
        )

    def _set_seed(self, seed: int | None) -> None:
        base = 0 if seed is None else int(seed)
        self._generators = [np.random.default_rng(base + index) for index in range(self.num_envs)]

    def _draw_inflows(self, slots: torch.Tensor) -> torch.Tensor:
        """A whole episode of inflows for each slot being reset, from that slot's generator."""
        horizon = self.model.config.horizon_months
        classes = self.model.inflow_values.shape[1]
        uniforms = np.stack([self._generators[int(slot)].random(horizon) for slot in slots])
        choice = torch.from_numpy(np.minimum((uniforms * classes).astype(np.int64), classes - 1))
        months = self.model.month(torch.arange(horizon)).expand(len(slots), horizon)
        return self.model.inflow_values[months, choice]

    def _reset(self, tensordict: TensorDictBase | None, **kwargs: object) -> TensorDictBase:
        mask = None if tensordict is None else tensordict.get("_reset", None)
        slots = torch.arange(self.num_envs) if mask is None else mask.reshape(self.num_envs).nonzero().squeeze(-1)
        if len(slots):
            self._storage[slots] = float(self.model.config.initial_storage)
            self._time_step[slots] = 0
            self._inflows[slots] = self._draw_inflows(slots)
            self._deficit_months[slots] = 0.0
            self._violation_months[slots] = 0.0
        zeros = torch.zeros(self.num_envs, dtype=torch.float32)
        info = {key: zeros.clone() for key in INFO_KEYS}
        info["storage"] = self._storage.float()
        return TensorDict(
            {
                "observation": self.model.observation(self._storage, self._time_step),
                "month": self.model.month(self._time_step),
                "time_step": self._time_step.clone(),
                **info,
                "done": torch.zeros(self.num_envs, 1, dtype=torch.bool),
                "terminated": torch.zeros(self.num_envs, 1, dtype=torch.bool),
                "truncated": torch.zeros(self.num_envs, 1, dtype=torch.bool),
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get("action").reshape(self.num_envs).long()
        horizon = self.model.config.horizon_months
        # Slots past the horizon (never seen in normal use: they are reset first) repeat their last month.
        column = self._time_step.clamp(max=horizon - 1)
        inflow = self._inflows.gather(1, column.unsqueeze(1)).squeeze(1)
        outcome = self.model.transition(self._storage, inflow, action, self.model.month(self._time_step))
        self._storage = outcome.next_storage
        self._time_step = self._time_step + 1
        self._deficit_months = self._deficit_months + (outcome.deficit > 0)
        self._violation_months = self._violation_months + (outcome.violation > 0)
        truncated = (self._time_step >= horizon).unsqueeze(-1)
        info = {
            "storage": outcome.next_storage.float(),
            "inflow": inflow.float(),
            **{key: getattr(outcome, key).float() for key in INFO_KEYS if hasattr(Outcome, key)},
            "deficit_months": self._deficit_months.float(),
            "violation_months": self._violation_months.float(),
        }
        return TensorDict(
            {
                "observation": self.model.observation(self._storage, self._time_step),
                "month": self.model.month(self._time_step),
                "time_step": self._time_step.clone(),
                **info,
                "reward": outcome.reward.float().unsqueeze(-1),
                "done": truncated.clone(),
                "terminated": torch.zeros_like(truncated),
                "truncated": truncated,
            },
            batch_size=self.batch_size,
            device=self.device,
        )
