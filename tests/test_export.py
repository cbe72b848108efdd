"""The export stage: an ONNX file that ONNX Runtime runs without torch and that acts as the shipped network does."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from reservoir_dqn.agent import NetworkSpec, make_q_network, save_model
from reservoir_dqn.commands import export as export_stage
from reservoir_dqn.config import Config, EnvConfig, load_config
from reservoir_dqn.envs import profile
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.release import export
from reservoir_dqn.release.policy import OperatorPolicy
from tests.conftest import REPO, evaluation_json, training_json


def _shipped(project: Path, config: Config) -> OperatorPolicy:
    """A random network saved as the shipped model, hand-made train.json and eval.json; its policy as torch runs it."""
    env_profile = profile(config.env)
    model = ReservoirModel.from_config(config.env.reservoir)
    spec = NetworkSpec(model.observation_size, model.num_actions, (16,), "reservoir")
    q_network = make_q_network(spec, seeds=[3])
    (project / "models").mkdir(exist_ok=True)
    (project / "metrics").mkdir(exist_ok=True)
    save_model(q_network, spec, project / "models/model.pt")
    (project / "metrics/train.json").write_text(json.dumps(training_json()))
    (project / "metrics/eval.json").write_text(json.dumps(evaluation_json(scores=[0.9])))  # one seed, as trained
    return OperatorPolicy(q_network, env_profile.action_meaning(config.env, spec.num_actions)[1])


def test_export_writes_a_policy_onnx_runtime_runs_as_torch_does(project: Path, tiny_config: Config) -> None:
    policy = _shipped(project, tiny_config)
    assert export_stage.main([]) == 0
    path = project / "models/policy.onnx"
    metadata = {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}
    assert metadata["env"] == "reservoir" and len(json.loads(metadata["observation"])) == 4
    assert json.loads(metadata["observation_bounds"]) == [[0, 1], [-1, 1], [-1, 1], [0, 1]]
    observations = torch.rand(37, 4) * torch.tensor([1.0, 2.0, 2.0, 1.0]) - torch.tensor([0.0, 1.0, 1.0, 0.0])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    release, q_values = session.run(None, {"observation": observations.numpy()})  # a batch size not exported with
    with torch.no_grad():
        expected_release, expected_q = policy(observations)
    np.testing.assert_allclose(q_values, expected_q.numpy(), atol=1e-5)
    np.testing.assert_array_equal(release, expected_release.numpy())
    assert set(release.tolist()) <= set(json.loads(metadata["release_hm3"]))
    # no Python stack in the file: the same policy gives the same bytes from any checkout
    assert b"stack_trace" not in path.read_bytes() and b"network.py" not in path.read_bytes()


def test_the_check_runs_without_torch_and_catches_a_file_that_disagrees(project: Path, tiny_config: Config) -> None:
    policy = _shipped(project, tiny_config)
    path = project / "policy.onnx"
    export.export(policy, path, "release_hm3", {})
    observations = export.check_observations(
        tiny_config, NetworkSpec(4, policy.action_values.numel(), (16,), "reservoir")
    )
    assert len(observations) == profile(tiny_config.env).grid_observations(tiny_config.env).shape[0]
    passed = export.check(path, policy, observations)
    assert passed.passed and not passed.torch_imported and passed.observations == len(observations)
    with torch.no_grad():
        policy.q_values.biases[-1][..., 0] += 1e3  # torch now prefers action 0 everywhere; the file does not
    failed = export.check(path, policy, observations)
    assert not failed.passed and failed.same_action < failed.observations


def test_a_failed_check_keeps_the_previous_file(
    project: Path, tiny_config: Config, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _shipped(project, tiny_config)
    previous = project / "models/policy.onnx"
    previous.write_bytes(b"the previous export")
    failing = export.Check(observations=10, same_action=9, same_value=9, max_q_error=0.5, torch_imported=False)
    monkeypatch.setattr(export_stage, "check", lambda *args: failing)
    assert export_stage.main([]) != 0
    assert "the ONNX policy disagrees with torch's: 9 of 10 actions agree" in capsys.readouterr().err
    assert previous.read_bytes() == b"the previous export"


def test_onnx_check_is_a_torch_free_command() -> None:
    code = "import sys, reservoir_dqn.release.onnx_check; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_export_needs_the_evaluation_and_says_so_in_one_line(
    project: Path, tiny_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    _shipped(project, tiny_config)
    (project / "metrics/eval.json").unlink()
    assert export_stage.main([]) == 4
    assert capsys.readouterr().err.strip() == "error: metrics/eval.json is missing: run the evaluate stage first"
    assert not (project / "models/policy.onnx").exists()


def test_export_refuses_the_evaluation_of_another_training(
    project: Path, tiny_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    _shipped(project, tiny_config)
    (project / "metrics/eval.json").write_text(json.dumps(evaluation_json(scores=[0.9, 0.92])))  # 2 seeds, not 1
    assert export_stage.main([]) == 4
    assert "metrics/eval.json evaluates another training (2 seeds" in capsys.readouterr().err
    assert not (project / "models/policy.onnx").exists()


def test_the_registered_signature_is_the_environments_own_terms() -> None:
    """A Gymnasium id's release: its observation fields in, ``action`` (the index) and the Q-values out."""
    from reservoir_dqn.release.card import Release
    from reservoir_dqn.tracking.registry import signature

    fields = {f"observation_{index}": 0.0 for index in range(4)}
    release = Release("CartPole-v1", "policy.onnx", "0" * 64, "action", "card", fields, [1.0, 1.0], None)
    found = signature(release)
    assert found.inputs.input_names() == list(fields) and found.outputs.input_names() == ["action", "q_values"]
    assert Release.from_json(json.loads(json.dumps(release.to_json()))) == release  # as the outbox keeps it


@pytest.mark.parametrize("persistent", [False, True])
def test_every_state_of_the_grid_lies_within_the_declared_bounds(persistent: bool) -> None:
    """The bounds the served model enforces admit every state the reservoir can be in, persistent inflow or not."""
    from tests.delaware import DELAWARE, PROFILE

    config: EnvConfig = DELAWARE if persistent else load_config(REPO / "params.yaml").env
    env_profile = PROFILE if persistent else profile(config)
    grid = env_profile.grid_observations(config)
    bounds = torch.tensor(env_profile.observation_bounds(config, grid.shape[-1]))
    assert len(bounds) == len(env_profile.observation_fields(config, grid.shape[-1])) == grid.shape[-1]
    assert bool(((grid >= bounds[:, 0]) & (grid <= bounds[:, 1])).all())
    assert grid.amin(dim=0).tolist() == pytest.approx(bounds[:, 0].tolist(), abs=0.1)  # tight, not merely wide


def test_infinite_bounds_are_written_as_null() -> None:
    assert json.loads(export.bounds_metadata([(0.0, 1.0), (-math.inf, math.inf), (-4.8, math.inf)])) == [
        [0.0, 1.0],
        [None, None],
        [-4.8, None],
    ]
