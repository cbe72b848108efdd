"""The agent's TorchRL parts: shapes, exploration schedule, loss options, target updates."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.objectives import HardUpdate, SoftUpdate

from reservoir_dqn.agent import NetworkSpec, anneal_exploration, make_agent, make_q_network, update
from reservoir_dqn.config import load_config
from tests.conftest import REPO

SPEC = NetworkSpec(obs_dim=4, num_actions=2, hidden_sizes=(32, 16), env_name="CartPole-v1")


def _batch(size: int = 32) -> TensorDict:
    return TensorDict(
        {
            "observation": torch.randn(size, 4),
            "action": torch.randint(0, 2, (size,)),
            ("next", "observation"): torch.randn(size, 4),
            ("next", "reward"): torch.ones(size, 1),
            ("next", "done"): torch.zeros(size, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(size, 1, dtype=torch.bool),
        },
        batch_size=[size],
    )


def _dqn(**overrides: object):
    return load_config(REPO / "params.yaml", [f"dqn.{key}={value}" for key, value in overrides.items()]).dqn


def test_q_network_shapes_and_greedy_action() -> None:
    network = make_q_network(SPEC)
    out = network(TensorDict(observation=torch.randn(7, 4), batch_size=[7]))
    assert out["action_value"].shape == (7, 2)
    assert out["action"].shape == (7,)
    assert torch.equal(out["action"], out["action_value"].argmax(-1))
    layers = [m for m in network.modules() if isinstance(m, torch.nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in layers] == [(4, 32), (32, 16), (16, 2)]


def test_the_network_scales_raw_observations_first() -> None:
    scaled = NetworkSpec(obs_dim=4, num_actions=2, hidden_sizes=(8,), env_name="CartPole-v1", obs_scale=(2.0,) * 4)
    plain = NetworkSpec(obs_dim=4, num_actions=2, hidden_sizes=(8,), env_name="CartPole-v1")
    torch.manual_seed(0)
    a = make_q_network(scaled)
    torch.manual_seed(0)
    b = make_q_network(plain)
    observation = torch.randn(3, 4)
    out_a = a(TensorDict(observation=observation, batch_size=[3]))["action_value"]
    out_b = b(TensorDict(observation=2 * observation, batch_size=[3]))["action_value"]
    assert torch.allclose(out_a, out_b)


def test_epsilon_anneals_linearly_by_frames() -> None:
    agent = make_agent(_dqn(eps_start=1.0, eps_end=0.1, eps_decay_frames=100), SPEC)
    assert float(agent.exploration.eps) == pytest.approx(1.0)
    anneal_exploration(agent.exploration, 50)
    assert float(agent.exploration.eps) == pytest.approx(0.55, abs=1e-6)
    anneal_exploration(agent.exploration, 550)
    assert float(agent.exploration.eps) == pytest.approx(0.1)
    # The same schedule as TorchRL's own frame-by-frame step, up to float rounding.
    stepped = make_agent(_dqn(eps_start=1.0, eps_end=0.1, eps_decay_frames=100), SPEC).exploration
    stepped.step(37)
    anneal_exploration(agent.exploration, 37)
    assert float(agent.exploration.eps) == pytest.approx(float(stepped.eps), abs=1e-5)


@pytest.mark.parametrize(("loss", "expected"), [("huber", "smooth_l1"), ("l2", "l2")])
def test_loss_function_is_selectable(loss: str, expected: str) -> None:
    assert make_agent(_dqn(loss=loss), SPEC).loss.loss_function == expected


@pytest.mark.parametrize("double", [True, False])
def test_double_dqn_is_selectable(double: bool) -> None:
    assert make_agent(_dqn(double_dqn=str(double).lower()), SPEC).loss.double_dqn is double


def _target(agent) -> torch.Tensor:
    return agent.loss.target_value_network_params.flatten_keys()["module.0.module.1.0.weight"].clone()


def _online(agent) -> torch.Tensor:
    return agent.loss.value_network_params.flatten_keys()["module.0.module.1.0.weight"].clone()


def test_hard_update_copies_only_every_interval() -> None:
    torch.manual_seed(0)
    agent = make_agent(_dqn(target_update="hard", target_update_interval=3), SPEC)
    assert isinstance(agent.target_updater, HardUpdate)
    start = _target(agent)
    for _ in range(3):
        update(agent, _batch())
        assert torch.equal(_target(agent), start)
    update(agent, _batch())
    assert torch.equal(_target(agent), _online(agent))


def test_soft_update_moves_target_by_tau() -> None:
    torch.manual_seed(0)
    agent = make_agent(_dqn(target_update="soft", tau=0.25), SPEC)
    assert isinstance(agent.target_updater, SoftUpdate)
    before = _target(agent)
    update(agent, _batch())
    expected = 0.75 * before + 0.25 * _online(agent)
    assert torch.allclose(_target(agent), expected, atol=1e-6)


def test_update_reduces_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    agent = make_agent(_dqn(lr=0.01, target_update_interval=1000), SPEC)
    batch = _batch(64)
    first, _ = update(agent, batch.clone())
    for _ in range(50):
        last, _ = update(agent, batch.clone())
    assert float(last) < float(first)


def test_update_writes_td_error_for_prioritized_replay() -> None:
    agent = make_agent(_dqn(), SPEC)
    batch = _batch(16)
    update(agent, batch)
    assert batch["td_error"].shape[0] == 16 and bool((batch["td_error"] >= 0).all())
