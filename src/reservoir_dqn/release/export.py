"""The shipped policy as an ONNX file, and the check that ONNX Runtime, without torch, gives torch's answers.

:func:`export` writes the file (input ``observation``, raw; outputs the action's value and
``q_values``); :func:`check` runs it in a separate process that does not import torch
(:mod:`.onnx_check`) on :func:`check_observations` (every state of a finite environment's
grid, else seeded random-policy episodes' observations) and compares.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir
import torch

from reservoir_dqn.agent import NetworkSpec
from reservoir_dqn.common.errors import RunFailed
from reservoir_dqn.config import Config
from reservoir_dqn.envs import profile
from reservoir_dqn.envs.rollouts import run_episodes
from reservoir_dqn.release.policy import OperatorPolicy

TOLERANCE = 1e-5  # the largest Q-value difference between ONNX Runtime and torch
CHECK_SEED, CHECK_EPISODES = 2_000_000, 10  # random-policy episodes whose observations check a non-finite env


@dataclass(frozen=True)
class Check:
    """ONNX Runtime's outputs against torch's, on ``observations`` observations."""

    observations: int
    same_action: int
    same_value: int
    max_q_error: float
    torch_imported: bool

    @property
    def passed(self) -> bool:
        return (
            self.same_action == self.observations == self.same_value
            and self.max_q_error <= TOLERANCE
            and not self.torch_imported
        )


def check_observations(config: Config, spec: NetworkSpec) -> torch.Tensor:
    """Every state's observation of a finite environment, else those of seeded random-policy episodes."""
    env_profile = profile(config.env)
    grid = env_profile.grid_observations(config.env)
    if grid is not None:
        return grid.float()
    random = env_profile.baselines(config.env, spec.num_actions, CHECK_SEED)["random"]
    episodes = run_episodes(env_profile, config.env, random, range(CHECK_SEED, CHECK_SEED + CHECK_EPISODES))
    observations: torch.Tensor = episodes.steps["observation"][episodes.steps["valid"]]
    return observations.float()


def initial_observation(config: Config) -> torch.Tensor:
    """``[observation]`` a real state's observation: the first of a seeded episode (the reservoir: its start)."""
    env = profile(config.env).make(config.env, [CHECK_SEED])
    try:
        observation: torch.Tensor = env.reset()["observation"][0].float()
    finally:
        env.close()
    return observation


def bounds_metadata(bounds: Sequence[tuple[float, float]]) -> str:
    """The ONNX metadata ``observation_bounds``: JSON ``[[low, high], ...]``, ``null`` for an infinite bound.

    JSON has no infinity; :mod:`reservoir_dqn.tracking.served_policy` reads ``null`` back as one.
    """
    return json.dumps([[value if math.isfinite(value) else None for value in pair] for pair in bounds])


def policy_metadata(config: Config, spec: NetworkSpec, shipped: str) -> tuple[str, torch.Tensor, dict[str, str]]:
    """What an exported policy's file says of itself: the output's name, each action's value in the environment's
    units, and the metadata (the environment, the observation's fields and bounds, the actions' values, ``shipped``:
    which policy this is)."""
    env_profile = profile(config.env)
    output, values = env_profile.action_meaning(config.env, spec.num_actions)
    fields = env_profile.observation_fields(config.env, spec.obs_dim)
    metadata = {
        "env": config.env.name,
        "observation": json.dumps(list(fields)),
        "observation_bounds": bounds_metadata(env_profile.observation_bounds(config.env, spec.obs_dim)),
        output: json.dumps([float(value) for value in values]),
        "shipped": shipped,
    }
    return output, values, metadata


def export(policy: OperatorPolicy, path: Path, output: str, metadata: dict[str, str]) -> None:
    """Write ``policy`` as ONNX to ``path``, its batch size free, the weights inside the file."""
    example = torch.zeros(2, policy.q_values.obs_dim)
    batch = torch.export.Dim("batch", min=1)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed": not ours to use
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecation, raised inside the exporter
        program = torch.onnx.export(
            policy,
            (example,),
            dynamo=True,
            input_names=["observation"],
            output_names=[output, "q_values"],
            dynamic_shapes={"observation": {0: batch}},
            external_data=False,
            verbose=False,
        )
    assert program is not None
    # The exporter records each node's Python stack (file paths, line numbers) in the file: the same policy would
    # give other bytes from another checkout or after an unrelated edit, and DVC would see a new model.
    for node in onnx_ir.traversal.RecursiveGraphIterator(program.model.graph):
        for key in [key for key in node.metadata_props if key.startswith("pkg.torch.onnx.")]:
            del node.metadata_props[key]
    for key, value in metadata.items():
        program.model.metadata_props[key] = value
    program.save(str(path), external_data=False)


def check(path: Path, policy: OperatorPolicy, observations: torch.Tensor) -> Check:
    """Run the ONNX file in ONNX Runtime, in a process without torch, against ``policy`` on ``observations``."""
    with torch.no_grad():
        value, q_values = policy(observations)
    with tempfile.TemporaryDirectory() as folder:
        expected = Path(folder) / "expected.npz"
        np.savez(
            expected,
            observation=observations.numpy(),
            action=q_values.argmax(dim=-1).numpy(),
            value=value.numpy(),
            q_values=q_values.numpy(),
        )
        command = [sys.executable, "-m", "reservoir_dqn.release.onnx_check", str(path), str(expected)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RunFailed(f"ONNX Runtime could not run {path}: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return Check(**json.loads(result.stdout))
