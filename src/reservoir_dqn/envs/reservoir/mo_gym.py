"""The reservoir as a multi-objective Gymnasium environment, for MO-Gymnasium and morl-baselines.

:class:`ReservoirMOEnv` is a ``gymnasium.Env`` on the same :class:`~.model.ReservoirModel` as
the TorchRL environment the agents train on (:mod:`.env`): the same transition, observation
and inflow draws (:func:`~.env.draw_classes`), one reservoir, numpy in and out. Its reward is
a vector of two objectives, in MO-Gymnasium's convention (``reward_space``, ``reward_dim``)::

    r = (2 R_energy + R_spill + R_violation,  2 R_deficit + R_spill + R_violation)

with ``R_*`` the configured reward's components (``env.reservoir.weight_*``), so that a linear
weighting ``(lam, 1 - lam)`` of it is the scalarisation of :mod:`.front` at ``lam``, and
``(1/2, 1/2)`` is the configured reward itself. :meth:`ReservoirMOEnv.pareto_front` returns the
exact front's vertices in these units, as MO-Gymnasium's environments with a known front do.

Registered as ``reservoir_dqn/Reservoir-v0`` when this module is imported::

    import mo_gymnasium
    import reservoir_dqn.envs.reservoir.mo_gym  # registers the id
    env = mo_gymnasium.make("reservoir_dqn/Reservoir-v0")  # params.yaml's env.reservoir
    env = mo_gymnasium.make("reservoir_dqn/Reservoir-v0", overrides=["env.reservoir.horizon_months=12"])

Episodes draw their inflows from the model's chain (``scenarios: chain``); the end's water
value is not an objective (``end_value: none``). Both are refused otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium.spaces import Box, Discrete

from reservoir_dqn.config import ConfigError, load_config
from reservoir_dqn.envs.reservoir.env import draw_classes
from reservoir_dqn.envs.reservoir.front import exact_front
from reservoir_dqn.envs.reservoir.model import Outcome, ReservoirModel
from reservoir_dqn.envs.reservoir.profile import ReservoirProfile, reservoir_settings
from reservoir_dqn.envs.reservoir.sdp import month_fields

ENV_ID = "reservoir_dqn/Reservoir-v0"
OBJECTIVES = ("energy", "supply")  # each with the safety penalties (spill, violation)
QUANTITIES = ("storage", "inflow", "release", "spill", "energy_gwh", "deficit", "violation")


def objective_vector(
    reward_energy: Any, reward_deficit: Any, reward_spill: Any, reward_violation: Any
) -> tuple[Any, Any]:
    """The two objectives of one step (any broadcastable numbers): energy and supply, each with the safety terms."""
    safety = reward_spill + reward_violation
    return 2.0 * reward_energy + safety, 2.0 * reward_deficit + safety


class ReservoirMOEnv(gymnasium.Env[np.ndarray, np.int64]):
    """Monthly release decisions for one reservoir, with a vector reward of energy and supply.

    :param params: the parameter file whose ``env`` section is a reservoir (default: ``params.yaml``).
    :param overrides: ``KEY=VALUE`` settings over it, as ``--set`` takes them.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's class attribute

    def __init__(self, params: str | Path = "params.yaml", overrides: Sequence[str] = (), render_mode: None = None):
        config = load_config(Path(params), list(overrides))
        if config.env.section != "reservoir":
            raise ConfigError(f"env.name: the multi-objective environment is a reservoir's, not {config.env.name}'s")
        reservoir = reservoir_settings(config.env)
        if reservoir.scenarios != "chain" or reservoir.end_value != "none":
            raise ConfigError(
                f"env.reservoir: the multi-objective environment draws its episodes from the chain with nothing at "
                f"the end (scenarios: chain, end_value: none), not scenarios: {reservoir.scenarios}, "
                f"end_value: {reservoir.end_value}"
            )
        self.model = ReservoirModel.from_config(reservoir)
        self.render_mode = render_mode
        size = self.model.observation_size
        low, high = zip(*ReservoirProfile(config.env.name).observation_bounds(config.env, size), strict=True)
        self.observation_space = Box(
            np.array(low, dtype=np.float32), np.array(high, dtype=np.float32), dtype=np.float32
        )
        self.action_space = Discrete(self.model.num_actions)
        steps = month_fields(self.model, ("reward_energy", "reward_deficit", "reward_spill", "reward_violation"))
        every = torch.stack(objective_vector(*steps.values()), dim=-1).reshape(-1, len(OBJECTIVES))
        # Every step's vector lies between the smallest and largest over every month, storage, action and inflow.
        self.reward_space = Box(
            every.min(dim=0).values.numpy().astype(np.float32),
            every.max(dim=0).values.numpy().astype(np.float32),
            dtype=np.float32,
        )
        self.reward_dim = len(OBJECTIVES)
        self._storage, self._time_step = float(reservoir.initial_storage), 0
        self._classes = torch.zeros(reservoir.horizon_months + 1, dtype=torch.long)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._storage, self._time_step = float(self.model.config.initial_storage), 0
        self._classes = draw_classes(self.model, 1, [self.np_random])[0]
        return self._observation(), {"month": int(self.model.month(torch.tensor(0)))}

    def step(self, action: np.int64 | int) -> tuple[np.ndarray, np.ndarray, bool, bool, dict[str, Any]]:
        model, t = self.model, self._time_step
        month = model.month(torch.tensor(t))
        inflow = model.inflow_values[month, self._classes[t + 1]]
        outcome: Outcome = model.transition(
            torch.tensor(self._storage, dtype=torch.float64), inflow, torch.tensor(int(action)), month
        )
        self._storage, self._time_step = float(outcome.next_storage), t + 1
        vector = objective_vector(
            outcome.reward_energy, outcome.reward_deficit, outcome.reward_spill, outcome.reward_violation
        )
        ended = self._time_step >= model.config.horizon_months
        terminated = ended and model.config.observe_time_left  # the horizon ends the MDP, or truncates it
        info = {"inflow": float(inflow), "reward": float(outcome.reward)} | {
            key: float(getattr(outcome, key)) for key in QUANTITIES if hasattr(outcome, key)
        }
        info["storage"] = self._storage
        return (
            self._observation(),
            np.array([float(value) for value in vector], dtype=np.float32),
            terminated,
            ended and not terminated,
            info,
        )

    def _observation(self) -> np.ndarray:
        last_class = self._classes[min(self._time_step, len(self._classes) - 1)]
        observation = self.model.observation(
            torch.tensor(self._storage, dtype=torch.float64), torch.tensor(self._time_step), last_class
        )
        return observation.numpy()

    def pareto_front(self, gamma: float = 1.0, tolerance: float = 1e-4) -> list[np.ndarray]:
        """The exact front's vertices as expected episode returns of the two objectives (:mod:`.front`).

        Undiscounted only: the SDP and the front value whole horizons.
        """
        if gamma != 1.0:
            raise ValueError(f"gamma ({gamma}): the exact front is of undiscounted returns (gamma 1)")
        c = self.model.config
        front = exact_front(self.model, tolerance=tolerance)
        vectors = []
        for vertex in front.vertices:
            energy, deficit, spill, violation = vertex.totals
            components = (c.weight_energy * energy, -c.weight_deficit * deficit)
            penalties = (-c.weight_spill * spill, -c.weight_violation * violation)
            vectors.append(np.array(objective_vector(*components, *penalties), dtype=np.float64))
        return vectors


if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point=f"{__name__}:ReservoirMOEnv")
