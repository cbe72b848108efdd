"""The reservoir's physics and inflow model, shared by the environment and the SDP solver.

:class:`ReservoirModel` computes one month of operation for any broadcastable batch of
storages, inflows, actions and months, so the optimum the solver computes
(:mod:`reservoir_dqn.envs.reservoir.sdp`) is the optimum of exactly the environment the agent trains
on (:mod:`reservoir_dqn.envs.reservoir.env`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import NamedTuple

import numpy as np
import torch

from reservoir_dqn.envs.reservoir.inflows import InflowChain, independent_chain, record_chain
from reservoir_dqn.envs.reservoir.records import MONTHS, record_version
from reservoir_dqn.envs.reservoir.settings import ReservoirConfig
from reservoir_dqn.envs.reservoir.split import load_split
from reservoir_dqn.envs.reservoir.windows import WaterYears, Windows, fitting_water_years, record_windows

WATER_WEIGHT_N_PER_M3 = 9810.0  # rho * g: weight of one cubic metre of water, N/m3
JOULES_PER_GWH = 3.6e12

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

    :ivar chain: the inflow classes and their persistence (:mod:`.inflows`).
    :ivar training_windows: the fitting years' windows the episodes replay (``scenarios: record``), else ``None``.
    :ivar water_years: the fitting water years the bootstrap joins (``scenarios: bootstrap`` and ``mixture``), else
        ``None``.
    :ivar release_levels: ``[A]`` release target of each action, units per month.
    :ivar demand: ``[12]`` water-supply demand, units per month.
    :ivar flow_moments: ``[12, 2]`` mean and standard deviation of the log of each calendar month's fitting-year
        inflows in whole units (``observe_last_flow``), else ``None``.
    """

    config: ReservoirConfig
    chain: InflowChain
    release_levels: torch.Tensor
    demand: torch.Tensor
    training_windows: Windows | None = None
    water_years: WaterYears | None = None
    flow_moments: torch.Tensor | None = None

    @classmethod
    def from_config(cls, config: ReservoirConfig) -> ReservoirModel:
        """The model of ``config``, built once per process for each configuration and record file version.

        (Every environment copy, baseline and evaluation asks for it; a record's chain and its
        training windows take tens of milliseconds to derive. The tensors are never written.)
        """
        version = record_version(config.record.path) if config.inflow_model == "record" else None
        return _model(config, version)

    @property
    def inflow_values(self) -> torch.Tensor:
        """``[12, K]`` inflow of each class, units per month."""
        return self.chain.values

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

    @property
    def info_keys(self) -> tuple[str, ...]:
        """:data:`INFO_KEYS`, and ``reward_end`` (the end value, in the last month) where the end has a value."""
        return INFO_KEYS + (("reward_end",) if self.config.end_value != "none" else ())

    @property
    def observation_size(self) -> int:
        return 3 + int(self.config.observe_time_left) + int(self.chain.persistent) + int(self.config.observe_last_flow)

    def observation(
        self,
        storage: torch.Tensor,
        time_step: torch.Tensor,
        inflow_class: torch.Tensor,
        last_inflow: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[storage / capacity, sin(2 pi month / 12), cos(2 pi month / 12)(, months left / horizon)
        (, last month's inflow class as its middle quantile (k + 1/2) / K)(, last month's inflow as its quantile,
        :meth:`flow_quantile`)]``, float32. Without ``last_inflow`` (units) the class's value stands in for it."""
        c = self.config
        angle = 2.0 * math.pi * self.month(time_step).double() / MONTHS
        features = [storage / c.capacity, torch.sin(angle), torch.cos(angle)]
        if c.observe_time_left:
            features.append((c.horizon_months - time_step).double() / c.horizon_months)
        if self.chain.persistent:
            features.append((inflow_class.double() + 0.5) / self.chain.classes)
        if c.observe_last_flow:
            before = self.month(time_step - 1)
            flow = self.inflow_values[before, inflow_class] if last_inflow is None else last_inflow.double()
            features.append(self.flow_quantile(flow, before))
        return torch.stack(features, dim=-1).float()

    def flow_quantile(self, flow: torch.Tensor, month: torch.Tensor) -> torch.Tensor:
        """``2 Phi(z) - 1`` in ``[-1, 1]``: ``flow`` (units) in ``month`` as its quantile among that calendar
        month's fitting-year flows under a lognormal fit (a dry month below 0, a wet one above; 0 is the median)."""
        assert self.flow_moments is not None, "observe_last_flow is off"
        moments = self.flow_moments[month]
        z = (torch.log(flow.clamp(min=0.5)) - moments[..., 0]) / moments[..., 1]
        quantile: torch.Tensor = 2.0 * torch.special.ndtr(z) - 1.0
        return quantile


@lru_cache(maxsize=8)
def _model(config: ReservoirConfig, record_version: int | None) -> ReservoirModel:
    """:meth:`ReservoirModel.from_config`, cached (``record_version``: the record file's, which the key must hold)."""
    if config.inflow_model == "record":
        chain = record_chain(config)
    else:
        inflows = [
            discretise_lognormal(median, cv, config.inflow_classes)
            for median, cv in zip(config.inflow_median, config.inflow_cv, strict=True)
        ]
        chain = independent_chain(torch.tensor(inflows, dtype=torch.float64))
    return ReservoirModel(
        config=config,
        chain=chain,
        training_windows=record_windows(config, chain, "training") if config.scenarios == "record" else None,
        water_years=fitting_water_years(config, chain) if config.scenarios in ("bootstrap", "mixture") else None,
        flow_moments=_flow_moments(config) if config.observe_last_flow else None,
        release_levels=torch.tensor(config.release_levels, dtype=torch.float64),
        demand=torch.tensor(config.demand, dtype=torch.float64),
    )


def _flow_moments(config: ReservoirConfig) -> torch.Tensor:
    """``[12, 2]`` the mean and standard deviation of ``log(max(inflow, 0.5))`` of each calendar month's fitting
    months, inflows rounded to whole units as the episodes have them."""
    record, split = load_split(config)
    flows = np.log(np.maximum(np.round(record.volumes_hm3 / config.unit_hm3), 0.5))
    moments = torch.zeros(MONTHS, 2, dtype=torch.float64)
    for month in range(MONTHS):
        values = flows[split.fitting & (record.calendar_months == month)]
        moments[month] = torch.tensor([values.mean(), max(float(values.std()), 1e-6)])
    return moments
