"""``reservoir-dqn advise``: this month's release, for a reservoir's state in an operator's terms.

Given the storage (hm3), the calendar month, the months left in the planning horizon and,
for a reservoir driven by a record, last month's inflow (hm3), it prints the shipped
policy's release target, the SDP optimum's, and the expected return lost by following the
policy this month rather than the optimum (then acting optimally: ``V* - Q*(its release)``,
the one-step loss of :mod:`reservoir_dqn.envs.account`)::

    .venv/bin/reservoir-dqn advise --storage-hm3 250 --month Jun

The model's state is on a grid: the storage is read at the nearest whole storage unit and
last month's inflow by its class (the line says so). The month fixes the time step, so the
months left are one of those the horizon gives that month; without ``--months-left``, the
earliest (farthest from the horizon's end). A value out of range stops the command with one
line naming the option and what it allows (exit status 2).
"""

from __future__ import annotations

import argparse
import calendar
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from reservoir_dqn.agent import load_model, stacked_mlp
from reservoir_dqn.commands import run_stage
from reservoir_dqn.config import Config, ConfigError, add_config_arguments, config_from_args
from reservoir_dqn.envs import profile
from reservoir_dqn.envs.baselines import reservoir_optimum
from reservoir_dqn.envs.reservoir_model import ReservoirModel
from reservoir_dqn.envs.reservoir_profile import ReservoirProfile, reservoir_settings
from reservoir_dqn.envs.reservoir_settings import ReservoirConfig
from reservoir_dqn.errors import ModelFileError

SECONDS_PER_MONTH = 365.25 / 12 * 86_400


@dataclass(frozen=True)
class State:
    """A state of the reservoir's MDP: time step, storage (units) and last month's inflow class."""

    time_step: int
    storage: int
    inflow_class: int


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
    return State(time_step, round(storage_hm3 / config.unit_hm3), inflow_class)


def advise(config: ReservoirConfig, model_path: Path, env_name: str, state: State) -> Advice:
    """The shipped policy's release in ``state``, the optimum's, and the value one month of the policy loses there."""
    model = ReservoirModel.from_config(config)
    q_network, spec = load_model(model_path)
    if spec.env_name != env_name or spec.obs_dim != model.observation_size:
        raise ModelFileError(f"{model_path}: a model of {spec.env_name} with {spec.obs_dim} inputs, not of {env_name}")
    observation = model.observation(
        torch.tensor([float(state.storage)], dtype=torch.float64),
        torch.tensor([state.time_step]),
        torch.tensor([state.inflow_class]),
    )
    with torch.no_grad():
        q_values = stacked_mlp(q_network)(observation)[0]
    action = int(q_values.argmax())
    solution = reservoir_optimum(config)
    column = min(state.inflow_class, int(solution.policy.shape[2]) - 1)
    where = (state.time_step, state.storage, column)
    levels = model.release_levels * config.unit_hm3
    return Advice(
        state=state,
        release_hm3=float(levels[action]),
        sdp_release_hm3=float(levels[solution.policy[where]]),
        value_lost=float(solution.values[where] - solution.q_values[(*where, action)]),
        q_values=tuple(float(value) for value in q_values),
    )


def _release(hm3_per_month: float) -> str:
    return f"release {hm3_per_month:,.0f} hm3/month ({hm3_per_month * 1e6 / SECONDS_PER_MONTH:,.1f} m3/s)"


def report(config: ReservoirConfig, advice: Advice, storage_hm3: float, last_inflow_hm3: float | None) -> str:
    """What an operator reads: the state as the model reads it, both releases, and the value at stake."""
    state, unit = advice.state, config.unit_hm3
    model = ReservoirModel.from_config(config)
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
        f"  shipped policy:     {_release(advice.release_hm3)}",
        f"  SDP optimum:        {_release(advice.sdp_release_hm3)}",
    ]
    if advice.value_lost > 1e-9:
        lines.append(
            f"  following the policy this month, then the optimum, loses {advice.value_lost:,.2f} of expected return "
            "(reward units: GWh-equivalents)"
        )
    else:
        lines.append("  the policy's release is optimal here: following it loses nothing")
    return "\n".join(lines)


def run(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="reservoir-dqn advise", description="This month's release for a reservoir's state, against the optimum."
    )
    parser.add_argument("--storage-hm3", type=float, required=True, help="storage now, hm3 of active storage")
    parser.add_argument("--month", required=True, help="the calendar month to release in: Jun, June or 6")
    parser.add_argument(
        "--months-left", type=int, help="months left in the horizon, this one included (default: the most)"
    )
    parser.add_argument("--last-inflow-hm3", type=float, help="last month's inflow, hm3 (a record-driven reservoir)")
    parser.add_argument("--model", type=Path, help="the model file (default: paths.model, the shipped agent)")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    config: Config = config_from_args(args)
    if not isinstance(profile(config.env), ReservoirProfile):
        raise ConfigError(
            f"env.name: advise operates a reservoir (reservoir or reservoir-<river>), not {config.env.name}"
        )
    reservoir = reservoir_settings(config.env)
    model = ReservoirModel.from_config(reservoir)
    state = operator_state(model, args.storage_hm3, parse_month(args.month), args.months_left, args.last_inflow_hm3)
    advice = advise(reservoir, args.model or Path(config.paths.model), config.env.name, state)
    print(report(reservoir, advice, args.storage_hm3, args.last_inflow_hm3))


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)
