"""The shipped policy's advice for one state, asked of the environment's advisor
(:meth:`~reservoir_dqn.envs.profile.EnvProfile.advisor`): its release, the optimum's, the value lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from reservoir_dqn.agent import TableSpec, check_table, load_model, q_module
from reservoir_dqn.common.errors import ModelFileError
from reservoir_dqn.envs.profile import Advisor


def advise(advisor: Advisor, model_path: Path, env_name: str, state: Any, table: TableSpec | None = None) -> Any:
    """The advice of the model file ``model_path`` (its shipped agent, or a solved policy's Q-table) in ``state``.

    :param table: the Q-table this environment's states read as (a file holding another is refused).
    :raises ModelFileError: the file holds a model of another environment, observation or grid.
    """
    q_network, spec = load_model(model_path)
    if spec.env_name != env_name or spec.obs_dim != advisor.observation_size:
        raise ModelFileError(f"{model_path}: a model of {spec.env_name} with {spec.obs_dim} inputs, not of {env_name}")
    check_table(spec, table, model_path)
    with torch.no_grad():
        q_values = q_module(q_network)(advisor.observation(state))[0]
    return advisor.advice(state, q_values)
