"""``reservoir-dqn advise``: this month's release, for a reservoir's state in an operator's terms.

Given the storage (hm3), the calendar month, the months left in the planning horizon and,
for a reservoir driven by a record, last month's inflow (hm3), it prints the shipped
policy's release target, the SDP optimum's, and the expected return lost by following the
policy this month rather than the optimum (then acting optimally: ``V* - Q*(its release)``,
the one-step loss of :mod:`reservoir_dqn.envs.reservoir.account`; the environment's advisor,
:mod:`reservoir_dqn.envs.reservoir.advice`, reads the state and writes the report)::

    .venv/bin/reservoir-dqn advise --storage-hm3 250 --month Jun

The model's state is on a grid: the storage is read at the nearest whole storage unit and
last month's inflow by its class (the line says so). The month fixes the time step, so the
months left are one of those the horizon gives that month; without ``--months-left``, the
earliest (farthest from the horizon's end). A value out of range stops the command with one
line naming the option and what it allows (exit status 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from reservoir_dqn.commands.plumbing import run_stage
from reservoir_dqn.config import Config, ConfigError, add_config_arguments, config_from_args
from reservoir_dqn.envs import profile
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.profile import reservoir_settings
from reservoir_dqn.release.advice import advise
from reservoir_dqn.release.front_pick import table_spec


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
    advisor = profile(config.env).advisor(config.env)
    if advisor is None:
        raise ConfigError(
            f"env.name: advise operates a reservoir (reservoir or reservoir-<river>), not {config.env.name}"
        )
    state = advisor.state(args.storage_hm3, args.month, args.months_left, args.last_inflow_hm3)
    model = ReservoirModel.from_config(reservoir_settings(config.env))
    advice = advise(advisor, args.model or Path(config.paths.model), config.env.name, state, table_spec(model))
    name = "shipped policy" if args.model is None else "given model"
    print(advisor.report(advice, args.storage_hm3, args.last_inflow_hm3, name))


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)
