"""One state's advice in an operator's terms: what the reservoir's profile offers as
:meth:`~..profile.EnvProfile.advisor`.

An operator gives the storage (hm3), the calendar month, the months left in the planning
horizon and, for a reservoir driven by a record, last month's inflow (hm3). The model's
state is on a grid: the storage is read at the nearest whole storage unit and last month's
inflow by its class (the report says so). The month fixes the time step, so the months left
are one of those the horizon gives that month; without them, the earliest (farthest from
the horizon's end). A value out of range is a :class:`~reservoir_dqn.config.ConfigError`
naming the option and what it allows.

The advice compares a policy's release with the SDP optimum's and prices the difference:
the expected return lost by following the policy this month rather than the optimum (then
acting optimally: ``V* - Q*(its release)``, the one-step loss of :mod:`.account`).
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass

import torch

from reservoir_dqn.config import ConfigError
from reservoir_dqn.envs.reservoir.baselines import reservoir_optimum
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.settings import ReservoirConfig

SECONDS_PER_MONTH = 365.25 / 12 * 86_400


@dataclass(frozen=True)
class State:
    """A state of the reservoir's MDP: time step, storage (units) and last month's inflow class."""

    time_step: int
    storage: int
    inflow_class: int
    last_inflow: float | None = None  # units; what an agent that observes the last flow sees (else its class's)


@dataclass(frozen=True)
class Advice:
    """The shipped policy's and the optimum's release targets in one state, and what the difference costs."""

    state: State
    release_hm3: float
    sdp_release_hm3: float
    value_lost: float
    q_values: tuple[float, ...]


def parse_month(text: str) -> int:
    """A calendar month (0 = January) from ``Jun``, ``June`` or ``6``."""
    names = {name.lower(): index for index, name in enumerate(calendar.month_abbr[1:])}
    names |= {name.lower(): index for index, name in enumerate(calendar.month_name[1:])}
    if text.strip().lower() in names:
        return names[text.strip().lower()]
    if text.strip().isdigit() and 1 <= int(text) <= 12:
        return int(text) - 1
    raise ConfigError(f"--month: {text!r} is not a month (Jan to Dec, or 1 to 12)")


def operator_state(
    model: ReservoirModel, storage_hm3: float, month: int, months_left: int | None, last_inflow_hm3: float | None
) -> State:
    """The MDP state of an operator's description; :class:`ConfigError` names the first value out of range."""
    config = model.config
    full = config.capacity * config.unit_hm3
    if not math.isfinite(storage_hm3) or not 0 <= storage_hm3 <= full:
        raise ConfigError(f"--storage-hm3: {storage_hm3:g} is outside 0 to {full:g} hm3 (the active storage)")
    horizon = config.horizon_months
    possible = [horizon - t for t in range(horizon) if int(model.month(torch.tensor(t))) == month]
    name = calendar.month_abbr[month + 1]
    if not possible:
        raise ConfigError(f"--month: the {horizon}-month horizon has no {name}")
    if months_left is None:
        months_left = max(possible)
    elif months_left not in possible:
        shown = ", ".join(str(value) for value in sorted(possible)[:12])
        raise ConfigError(f"--months-left: {months_left} months left is no {name} in the horizon; with {name}: {shown}")
    time_step = horizon - months_left
    inflow_class = 0
    if model.chain.persistent:
        if last_inflow_hm3 is None:
            raise ConfigError("--last-inflow-hm3: required, the reservoir's inflows are persistent (a record's chain)")
        if not math.isfinite(last_inflow_hm3) or last_inflow_hm3 < 0:
            raise ConfigError(f"--last-inflow-hm3: {last_inflow_hm3:g} is not a volume (0 hm3 or more)")
        inflow_class = model.chain.classify((month - 1) % 12, last_inflow_hm3 / config.unit_hm3)
    elif last_inflow_hm3 is not None:
        raise ConfigError("--last-inflow-hm3: the reservoir's inflows are independent draws; leave it out")
    # In whole units, as the episodes' flows are (and as the flow's quantile was fitted).
    last_inflow = None if last_inflow_hm3 is None else float(round(last_inflow_hm3 / config.unit_hm3))
    return State(time_step, round(storage_hm3 / config.unit_hm3), inflow_class, last_inflow)


def _release(hm3_per_month: float) -> str:
    return f"release {hm3_per_month:,.0f} hm3/month ({hm3_per_month * 1e6 / SECONDS_PER_MONTH:,.1f} m3/s)"


class ReservoirAdvisor:
    """Advice on the reservoir ``config``: a state from an operator's figures, its observation, the optimum's
    release there and the report an operator reads."""

    def __init__(self, config: ReservoirConfig) -> None:
        self.config = config
        self.model = ReservoirModel.from_config(config)

    @property
    def observation_size(self) -> int:
        return self.model.observation_size

    def state(self, storage_hm3: float, month: str, months_left: int | None, last_inflow_hm3: float | None) -> State:
        """The MDP state of an operator's description (``month``: ``Jun``, ``June`` or ``6``)."""
        return operator_state(self.model, storage_hm3, parse_month(month), months_left, last_inflow_hm3)

    def observation(self, state: State) -> torch.Tensor:
        """``[1, observation]`` what a policy sees in ``state``."""
        return self.model.observation(
            torch.tensor([float(state.storage)], dtype=torch.float64),
            torch.tensor([state.time_step]),
            torch.tensor([state.inflow_class]),
            None if state.last_inflow is None else torch.tensor([state.last_inflow], dtype=torch.float64),
        )

    def advice(self, state: State, q_values: torch.Tensor) -> Advice:
        """A policy's greedy release in ``state`` (its ``[actions]`` Q-values), the optimum's, and the value lost."""
        action = int(q_values.argmax())
        solution = reservoir_optimum(self.config)
        column = min(state.inflow_class, int(solution.policy.shape[2]) - 1)
        where = (state.time_step, state.storage, column)
        levels = self.model.release_levels * self.config.unit_hm3
        return Advice(
            state=state,
            release_hm3=float(levels[action]),
            sdp_release_hm3=float(levels[solution.policy[where]]),
            value_lost=float(solution.values[where] - solution.q_values[(*where, action)]),
            q_values=tuple(float(value) for value in q_values),
        )

    def report(self, advice: Advice, storage_hm3: float, last_inflow_hm3: float | None, name: str) -> str:
        """What an operator reads: the state as the model reads it, both releases (the policy's called ``name``),
        and the value at stake."""
        config, model = self.config, self.model
        state, unit = advice.state, config.unit_hm3
        month = calendar.month_name[int(model.month(torch.tensor(state.time_step))) + 1]
        read = state.storage * unit
        storage = f"storage {read:,.0f} hm3 ({read / (config.capacity * unit):.0%} of the active storage)"
        if not math.isclose(read, storage_hm3):
            storage += f", read from {storage_hm3:,.1f} hm3 at the model's {unit:g} hm3 grid"
        left = config.horizon_months - state.time_step
        lines = [f"{month}, {left} months left in the horizon (this one included), {storage}"]
        if last_inflow_hm3 is not None:
            lines.append(
                f"last month's inflow {last_inflow_hm3:,.0f} hm3: class {state.inflow_class} of "
                f"0 (driest) to {model.chain.classes - 1} (wettest) for its month"
            )
        demand = config.demand[int(model.month(torch.tensor(state.time_step)))] * unit
        lines += [
            f"  demand this month:  {demand:,.0f} hm3",
            f"  {name + ':':<19} {_release(advice.release_hm3)}",
            f"  SDP optimum:        {_release(advice.sdp_release_hm3)}",
        ]
        if advice.value_lost > 1e-9:
            lines.append(
                f"  following the policy this month, then the optimum, loses {advice.value_lost:,.2f} of expected "
                "return (reward units: GWh-equivalents)"
            )
        else:
            lines.append("  the policy's release is optimal here: following it loses nothing")
        return "\n".join(lines)
