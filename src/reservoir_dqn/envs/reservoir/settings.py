"""The reservoir's settings, ``env.reservoir``: its physics, its inflows and the rules between them.

:class:`ReservoirConfig` is checked against the rules of :data:`RESERVOIR_RULES` (declared
once: the validator checks them and the parameters reference lists them,
:mod:`reservoir_dqn.config.rules`). The reservoir's profile registers it as the settings
section ``reservoir`` (:mod:`reservoir_dqn.envs`).
"""

from __future__ import annotations

import calendar
from typing import Annotated, Literal

from pydantic import Field, Strict, model_validator

from reservoir_dqn.config import rules
from reservoir_dqn.config.sections import (
    CountTuple,
    PositiveFloat,
    PositiveFloatTuple,
    PositiveInt,
    Section,
)


class RecordConfig(Section):
    """A river's monthly inflow record (a CSV file) that the reservoir's inflow chain is fitted to.

    :mod:`reservoir_dqn.envs.reservoir.records` reads the file (monthly or daily lines) and
    :mod:`reservoir_dqn.envs.reservoir.inflows` fits the chain.
    """

    path: str = Field(
        description="CSV file of the record, relative to the folder the stages run in (the project root); its "
        "first column is the date."
    )
    column: str = Field(description="The column of the flows (e.g. a gauge's number).")
    units: Literal["hm3", "m3/s", "cfs"] = Field(
        description="What a value is: the volume of its line's period (a month or a day) in hm3, or the "
        "period's mean flow in m3/s or in cubic feet per second (cfs, USGS discharge)."
    )
    first_year: int | None = Field(description="First calendar year the chain is fitted on; empty: the record's first.")
    last_year: int | None = Field(description="Last calendar year the chain is fitted on; empty: the record's last.")
    held_out: Annotated[tuple[Annotated[int, Strict()], Annotated[int, Strict()]], Strict(False)] | None = Field(
        description="Held-out years [first, last], anywhere in the record, each from its start_month for twelve "
        "months: the chain is fitted and agents learn on the fitting years less these, and the re-operation "
        "replays them. Empty: the months after last_year."
    )

    validation: Annotated[tuple[Annotated[int, Strict()], Annotated[int, Strict()]], Strict(False)] | None = Field(
        description="Validation years [first, last] inside first_year to last_year, each from its start_month for "
        "twelve months: kept out of the chain's fit and the agents' episodes, and training validates on their "
        "windows of the record (scored against the Markov SDP there), so the best snapshots, convergence and the "
        "tuner choose on real years nobody trained on. Empty: training validates on episodes of its own source."
    )

    @model_validator(mode="after")
    def _ordered(self) -> RecordConfig:
        for name, years in (("held_out", self.held_out), ("validation", self.validation)):
            if years is not None and years[0] > years[1]:
                raise ValueError(f"{name} ({list(years)}): the first year comes after the last")
        return self

    pseudocount: float = Field(
        ge=0.0,
        description="Added to every transition count before a row is normalised: 0 keeps the record's "
        "frequencies (an empty row is the next month's class frequencies), 1 is add-one smoothing.",
    )


class ReservoirConfig(Section):
    """Physical parameters of :class:`reservoir_dqn.envs.reservoir.env.DiscreteReservoirEnv`.

    The defaults describe a mid-sized multipurpose reservoir with a snowmelt-driven
    inflow regime; see params.yaml for the unit and source of each number.
    """

    horizon_months: int = Field(ge=12, description="Episode length H in months, a year or more; the planning horizon.")
    start_month: int = Field(ge=0, le=11, description="Calendar month of the first step (0 = January).")
    observe_time_left: bool = Field(
        description="Observe the months left as a share of the horizon; the horizon is then the end of the MDP "
        "(termination), as in the SDP. Off: a stationary observation, and the horizon truncates."
    )
    unit_hm3: PositiveFloat = Field(description="Volume of one storage unit in hm3.")
    capacity: PositiveInt = Field(description="Active storage capacity in units.")
    min_storage: int = Field(ge=0, description="Minimum operating storage in units; below it is a violation.")
    initial_storage: int = Field(ge=0, description="Storage at the start of every episode, in units.")
    release_levels: CountTuple = Field(
        min_length=2, description="Discrete release targets in units per month, ascending."
    )
    turbine_capacity: PositiveInt = Field(description="Largest release the turbines can pass, units per month.")
    head_min_m: PositiveFloat = Field(description="Hydraulic head at empty storage, metres.")
    head_max_m: PositiveFloat = Field(description="Hydraulic head at full storage, metres.")
    efficiency: float = Field(gt=0.0, le=1.0, description="Turbine-generator efficiency (dimensionless).")
    demand: CountTuple = Field(
        min_length=12, max_length=12, description="Monthly water-supply demand, units, January first."
    )
    inflow_model: Literal["lognormal", "record"] = Field(
        description="lognormal: independent draws from inflow_median and inflow_cv; record: a periodic Markov "
        "chain fitted to the record (the inflow class then is part of the state and the observation)."
    )
    record: RecordConfig = Field(description="The record the chain is fitted to (used when inflow_model is record).")
    scenarios: Literal["chain", "record", "bootstrap", "mixture"] = Field(
        description="With inflow_model record, where training and validation episodes come from: chain (draws "
        "from the fitted chain, the model the SDP solves), record (windows of the fitting years' own record), "
        "bootstrap (the fitting years' water years in blocks of bootstrap_block_years consecutive ones, drawn "
        "with replacement and joined) or mixture (each episode a chain draw with probability "
        "mixture_chain_share, else a bootstrap one)."
    )
    bootstrap_block_years: PositiveInt = Field(
        description="Consecutive water years per block of the bootstrap (scenarios bootstrap and mixture): "
        "longer blocks keep more of the record's multi-year persistence (droughts), shorter ones make more "
        "distinct episodes."
    )
    mixture_chain_share: float = Field(
        ge=0.0, le=1.0, description="With scenarios mixture, the probability that an episode is a chain draw."
    )
    observe_last_flow: bool = Field(
        description="With inflow_model record, the agent also observes last month's actual inflow, as its quantile "
        "among that calendar month's fitting-year flows under a lognormal fit (2 Phi(z) - 1, in [-1, 1]). Where "
        "only the class is known (chain episodes, the exact account, the policy maps, the front) the class's "
        "value stands in for the flow, so there the observation is still a function of the SDP's state."
    )
    end_value: Literal["none", "water_value"] = Field(
        description="What the storage left at the end of an episode is worth. none: nothing (the MDP ends there, "
        "and the optimum empties the reservoir in its last months); water_value: what it earns in the next "
        "horizon, from the SDP's values of a fresh horizon, less what the initial storage earns (leaving the "
        "reservoir as it was found is worth 0), added to the last month's reward of the agent, the SDP, "
        "foresight and random alike."
    )
    inflow_median: PositiveFloatTuple = Field(
        min_length=12, max_length=12, description="Median monthly inflow in units, January first."
    )
    inflow_cv: PositiveFloatTuple = Field(
        min_length=12, max_length=12, description="Coefficient of variation of monthly inflow."
    )
    inflow_classes: Annotated[int, Field(ge=2, le=25)] = Field(
        description="Number K of inflow classes per month: equiprobable lognormal classes, or the record's "
        "quantile classes."
    )
    weight_energy: float = Field(ge=0.0, description="Reward per GWh of hydropower.")
    weight_deficit: float = Field(ge=0.0, description="Penalty per unit of unmet demand.")
    weight_spill: float = Field(ge=0.0, description="Penalty per unit spilled over the crest.")
    weight_violation: float = Field(ge=0.0, description="Penalty per unit of storage below min_storage.")

    @model_validator(mode="after")
    def _consistent(self) -> ReservoirConfig:
        rules.check(self, RESERVOIR_RULES)
        return self


def _unserved_month(config: ReservoirConfig) -> str | None:
    levels = set(config.release_levels)
    month = next((month for month, demand in enumerate(config.demand) if demand not in levels), None)
    if month is None:
        return None
    return (
        f"demand ({config.demand[month]} in {calendar.month_name[month + 1]}) is not one of release_levels "
        f"({list(config.release_levels)}): no release meets that month's demand exactly"
    )


WEIGHTS = ("weight_energy", "weight_deficit", "weight_spill", "weight_violation")
# The reservoir's rules between fields (each field's own bounds are on the field); the parameters reference lists both.
RESERVOIR_RULES = (
    rules.Rule(
        ("min_storage", "capacity"),
        "`min_storage` is below `capacity`",
        lambda c: (
            f"min_storage ({c.min_storage}) must be below capacity ({c.capacity})"
            if c.min_storage >= c.capacity
            else None
        ),
    ),
    rules.Rule(
        ("initial_storage", "capacity"),
        "`initial_storage` lies in [0, `capacity`]",
        lambda c: (
            f"initial_storage ({c.initial_storage}) lies outside [0, capacity ({c.capacity})]"
            if c.initial_storage > c.capacity
            else None
        ),
    ),
    rules.Rule(
        ("release_levels",),
        "strictly ascending",
        lambda c: (
            f"release_levels ({list(c.release_levels)}) must be strictly ascending"
            if list(c.release_levels) != sorted(set(c.release_levels))
            else None
        ),
    ),
    rules.Rule(
        ("demand", "release_levels"),
        "every month's demand is one of the release levels, so some release meets it exactly (levels above "
        "`turbine_capacity` are allowed: the excess passes without generating)",
        _unserved_month,
    ),
    rules.Rule(
        ("head_min_m", "head_max_m"),
        "`head_max_m` is at least `head_min_m`",
        lambda c: (
            f"head_max_m ({c.head_max_m}) is below head_min_m ({c.head_min_m})" if c.head_max_m < c.head_min_m else None
        ),
    ),
    rules.Rule(
        ("observe_last_flow", "inflow_model"),
        "`observe_last_flow` needs `inflow_model: record`",
        lambda c: (
            f"observe_last_flow (true) needs inflow_model ({c.inflow_model}) to be record: the flows are the record's"
            if c.observe_last_flow and c.inflow_model != "record"
            else None
        ),
    ),
    rules.Rule(
        ("record.validation", "inflow_model"),
        "`record.validation` needs `inflow_model: record`",
        lambda c: (
            f"record.validation ({list(c.record.validation)}) needs inflow_model ({c.inflow_model}) to be record: "
            "the validation years are the record's"
            if c.record.validation is not None and c.inflow_model != "record"
            else None
        ),
    ),
    rules.Rule(
        ("scenarios", "inflow_model"),
        "`scenarios` other than `chain` needs `inflow_model: record`",
        lambda c: (
            f"scenarios ({c.scenarios}) needs inflow_model (lognormal) to be record: the episodes are the record's"
            if c.scenarios != "chain" and c.inflow_model != "record"
            else None
        ),
    ),
    rules.Rule(
        WEIGHTS,
        "at least one weight is above 0 (with none, every policy is optimal)",
        lambda c: (
            ", ".join(f"{name} ({getattr(c, name)})" for name in WEIGHTS) + " are all 0: every policy is optimal"
            if not any(getattr(c, name) > 0 for name in WEIGHTS)
            else None
        ),
    ),
)
