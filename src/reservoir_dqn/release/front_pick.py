"""A point of the exact front as a policy that ships: the SDP optimum at one weighting, as a model file.

``reservoir-dqn front --pick LAM`` solves the reservoir at the weighting ``lam``
(:func:`~reservoir_dqn.envs.reservoir.front.weighted`: energy x ``2 lam``, deficit x ``2 (1 - lam)``)
and writes that optimum where a trained agent goes, in a folder of its own::

    model.pt                 a model file holding the policy as a Q-table (:mod:`reservoir_dqn.agent.table`)
    policy.onnx              the same, as ONNX, checked in ONNX Runtime without torch on every state
    policy_map.png           its release targets by storage and month, above the configured optimum's
    policy_disagreement.png  where they differ, faded where it seldom goes
    value_lost.png           what it gives up, in the configured reward, state by state
    pick.json                its point (GWh and hm3 a year), its losses against the front, its exact gap

``reservoir-dqn advise --model <folder>/model.pt`` advises with it; ``front --models`` places it.

The table's values are each release's expected return at ``lam`` less the best one's (0 for the
release the SDP takes, which breaks ties to the smaller release): the policy is exactly the
SDP's in every state, in float32 as in float64. The table reads the state off the observation
(storage, months left, last month's class), so the reservoir must show the agent the months
left (``observe_time_left``): the SDP's rule changes as the horizon's end nears.
"""

from __future__ import annotations

import calendar
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torchrl.modules import QValueActor

from reservoir_dqn.agent import Axis, NetworkSpec, PolicyTable, TableSpec, make_q_network, q_module, save_model
from reservoir_dqn.common.errors import ConfigError, RunFailed
from reservoir_dqn.common.files import write_atomic, write_json
from reservoir_dqn.config import Config
from reservoir_dqn.envs import profile
from reservoir_dqn.envs.reservoir.account import account, greedy_tables
from reservoir_dqn.envs.reservoir.baselines import reservoir_optimum
from reservoir_dqn.envs.reservoir.front import Evaluator, Front, policy_entry, weighted
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.profile import reservoir_settings
from reservoir_dqn.envs.reservoir.sdp import solve
from reservoir_dqn.release.export import TOLERANCE, check, check_observations, export, policy_metadata
from reservoir_dqn.release.policy import OperatorPolicy

STORAGE_FEATURE, TIME_LEFT_FEATURE, CLASS_FEATURE = 0, 3, 4  # in ReservoirModel.observation, months left shown


def table_spec(model: ReservoirModel) -> TableSpec:
    """The Q-table over ``(time step, storage, last month's class)`` of ``model``'s grid, read off its observation."""
    config = model.config
    horizon, classes = config.horizon_months, model.chain.classes
    axes = (
        Axis(horizon, TIME_LEFT_FEATURE, scale=-float(horizon), offset=float(horizon)),  # months left -> time step
        Axis(model.num_storages, STORAGE_FEATURE, scale=float(config.capacity)),
        Axis(classes, CLASS_FEATURE, scale=float(classes), offset=-0.5) if model.chain.persistent else Axis(1),
    )
    columns = f"{classes} inflow classes" if model.chain.persistent else "independent inflows"
    grid = (
        f"{horizon} months from {calendar.month_abbr[config.start_month + 1]}, "
        f"{model.num_storages} storages of {config.unit_hm3:g} hm3, {columns}"
    )
    return TableSpec(axes, grid)


def table_policy(model: ReservoirModel, lam: float, env_name: str) -> tuple[QValueActor, NetworkSpec]:
    """The SDP optimum at ``lam`` as a one-agent Q-network whose module is a :class:`~reservoir_dqn.agent.PolicyTable`
    over ``(time step, storage, last month's class)``."""
    if not model.config.observe_time_left:
        raise ConfigError(NEEDS_TIME_LEFT)
    solution = solve(weighted(model, lam))
    spec = NetworkSpec(
        obs_dim=model.observation_size,
        num_actions=model.num_actions,
        hidden_sizes=(),
        env_name=env_name,
        table=table_spec(model),
    )
    q_network = make_q_network(spec)
    advantages = solution.q_values - solution.values[:-1].unsqueeze(-1)  # <= 0; exactly 0 where the SDP's release
    table = q_module(q_network)
    assert isinstance(table, PolicyTable)
    with torch.no_grad():
        table.values.copy_(advantages.reshape(-1, model.num_actions).float())
    return q_network, spec


NEEDS_TIME_LEFT = (
    "env.reservoir.observe_time_left is false: a front point's policy changes with the months left, which such an "
    "observation does not show; set env.reservoir.observe_time_left=true to pick one"
)


def write_pick(config: Config, model: ReservoirModel, front: Front, lam: float, folder: Path) -> dict[str, Any]:
    """Every file of the pick at ``lam`` into the new, empty ``folder`` (the caller replaces the previous pick with it
    as a whole); what ``pick.json`` holds."""
    import matplotlib.pyplot as plt  # matplotlib and pandas only where the maps are drawn (advise reads table_spec)
    import pandas as pd

    from reservoir_dqn.envs.reservoir.policy_figures import Names, policy_figures

    q_network, spec = table_policy(model, lam, config.env.name)
    table = greedy_tables(model, q_module(q_network), 1)[0]  # the SDP's policy at lam, read back through the table
    point = Evaluator(model).point(table, lam)
    gap = account(model, reservoir_optimum(model.config), table)
    output, values, metadata = policy_metadata(config, spec, f"the exact front's optimum at lam {lam:g}")
    operator = OperatorPolicy(q_network, values)
    save_model(q_network, spec, folder / "model.pt")
    export(operator, folder / "policy.onnx", output, metadata)
    result = check(folder / "policy.onnx", operator, check_observations(config, spec))
    if not result.passed:
        raise RunFailed(
            f"the pick's ONNX policy disagrees with torch's: {result.same_action} of {result.observations} "
            f"actions agree, Q-values within {result.max_q_error:.2g} (at most {TOLERANCE:g}); nothing was written"
        )
    names = Names(
        policy=f"front pick, lam {lam:g}",
        short="pick",
        subject=f"the lam {lam:g} pick",
        again="the pick",
        optimum="SDP optimum, configured weights",
    )
    rows = pd.DataFrame(profile(config.env).state_rows(config.env, gap))
    for name, figure in policy_figures(reservoir_settings(config.env), rows, names).items():
        write_atomic(folder / name, partial(figure.savefig, dpi=110, format="png"))
        plt.close(figure)
    summary = {
        "lam": lam,
        **policy_entry(front, model, point),
        "utility_loss_at_lam": front.best(lam) - point.utility(model, lam),
        "configured_return": gap.policy_return,
        "configured_optimum_return": gap.optimum_return,
        "onnx_checked_states": result.observations,
    }
    write_json(folder / "pick.json", summary)
    return summary
