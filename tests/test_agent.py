"""The agents' TorchRL parts: stacked networks that stay independent, loss options, schedules, target updates."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from tensordict import TensorDict
from torchrl.objectives import DQNLoss, HardUpdate, SoftUpdate

from reservoir_dqn.agent import (
    NetworkSpec,
    anneal,
    clip_grad_norm_per_agent,
    make_agent,
    make_q_network,
    select_agents,
    stacked_mlp,
    update,
)
from reservoir_dqn.config import load_config
from tests.conftest import REPO

SPEC = NetworkSpec(obs_dim=4, num_actions=2, hidden_sizes=(32, 16), env_name="CartPole-v1", agents=3)


def _batch(size: int = 32, reward: float = 1.0, terminated: bool = False) -> TensorDict:
    return TensorDict(
        {
            "observation": torch.randn(size, 4),
            "action": torch.randint(0, 2, (size,)),
            ("next", "observation"): torch.randn(size, 4),
            ("next", "reward"): torch.full((size, 1), reward),
            ("next", "done"): torch.full((size, 1), terminated),
            ("next", "terminated"): torch.full((size, 1), terminated),
        },
        batch_size=[size],
    )


def _dqn(**overrides: object):
    return load_config(REPO / "params.yaml", [f"dqn.{key}={value}" for key, value in overrides.items()]).dqn


def _values(network, observation: torch.Tensor) -> torch.Tensor:
    return network(TensorDict(observation=observation, batch_size=observation.shape[:1]))["action_value"]


def test_stacked_network_shapes_and_greedy_action() -> None:
    network = make_q_network(SPEC, seeds=[1, 2, 3])
    out = network(TensorDict(observation=torch.randn(3 * 7, 4), batch_size=[21]))
    assert out["action_value"].shape == (21, 2) and out["action"].shape == (21,)
    assert torch.equal(out["action"], out["action_value"].argmax(-1))
    assert [tuple(w.shape) for w in stacked_mlp(network).weights] == [(3, 4, 32), (3, 32, 16), (3, 16, 2)]


def test_each_agent_sees_only_its_own_rows_and_weights() -> None:
    network = make_q_network(SPEC, seeds=[1, 2, 3])
    observation = torch.randn(3 * 5, 4)
    before = _values(network, observation)
    with torch.no_grad():
        for weight in stacked_mlp(network).weights:
            weight[1].mul_(-3.0)  # change agent 1 only
    after = _values(network, observation)
    assert torch.equal(before[:5], after[:5]) and torch.equal(before[10:], after[10:])
    assert not torch.allclose(before[5:10], after[5:10])


def test_agents_start_from_their_own_seeds() -> None:
    a, b = make_q_network(SPEC, seeds=[1, 2, 3]), make_q_network(SPEC, seeds=[1, 9, 3])
    first_a, first_b = stacked_mlp(a).weights[0], stacked_mlp(b).weights[0]
    assert torch.equal(first_a[0], first_b[0]) and torch.equal(first_a[2], first_b[2])
    assert not torch.equal(first_a[1], first_b[1])


def test_one_agent_of_a_stack_is_the_same_network_alone() -> None:
    network = make_q_network(SPEC, seeds=[1, 2, 3])
    alone, spec = select_agents(network, SPEC, [1])
    assert spec.agents == 1
    observation = torch.randn(6, 4)
    stacked_input = torch.cat([torch.zeros(6, 4), observation, torch.zeros(6, 4)])
    assert torch.allclose(_values(network, stacked_input)[6:12], _values(alone, observation), atol=1e-6)


def test_the_network_scales_raw_observations_first() -> None:
    scaled = replace(SPEC, agents=1, obs_scale=(2.0,) * 4)
    plain = replace(SPEC, agents=1)
    observation = torch.randn(3, 4)
    a, b = make_q_network(scaled, seeds=[0]), make_q_network(plain, seeds=[0])
    assert torch.allclose(_values(a, observation), _values(b, 2 * observation))


def test_epsilon_and_learning_rate_anneal_linearly_by_frames() -> None:
    agent = make_agent(
        _dqn(eps_start=1.0, eps_end=0.1, eps_decay_frames=100, lr=0.01, lr_end_factor=0.1, lr_decay_frames=200), SPEC
    )
    anneal(agent, 50)
    assert float(agent.exploration.eps) == pytest.approx(0.55, abs=1e-6)
    assert agent.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 - 0.009 * 0.25)
    anneal(agent, 10_000)
    assert float(agent.exploration.eps) == pytest.approx(0.1)
    assert agent.optimizer.param_groups[0]["lr"] == pytest.approx(0.001)
    # The same epsilon schedule as TorchRL's own frame-by-frame step, up to float rounding.
    stepped = make_agent(_dqn(eps_start=1.0, eps_end=0.1, eps_decay_frames=100), SPEC).exploration
    stepped.step(37)
    anneal(agent, 37)
    assert float(agent.exploration.eps) == pytest.approx(float(stepped.eps), abs=1e-5)


def _constant_values(network, values: list[float]) -> None:
    """Make every agent's Q-values the constants ``values``, whatever the observation."""
    mlp = stacked_mlp(network)
    with torch.no_grad():
        for weight, bias in zip(mlp.weights, mlp.biases, strict=True):
            weight.zero_()
            bias.zero_()
        mlp.biases[-1].copy_(torch.tensor(values).expand_as(mlp.biases[-1]))


@pytest.mark.parametrize(("loss", "expected"), [("huber", 10.0 - 0.5), ("l2", 100.0)])
def test_loss_function_is_selectable(loss: str, expected: float) -> None:
    """A TD error of 10 (terminal reward 10, prediction 0) costs 9.5 with Huber and 100 with L2."""
    agent = make_agent(_dqn(loss=loss), replace(SPEC, agents=1))
    _constant_values(agent.q_network, [0.0, 0.0])
    per_transition = agent.compute_loss(_batch(8, reward=10.0, terminated=True))
    assert torch.allclose(per_transition, torch.full((8,), expected))


def _online_and_target(agent, online: list[float], target: list[float]) -> None:
    """The online network answers ``online`` in every state, the target network ``target``."""
    _constant_values(agent.q_network, online)
    target_network = copy.deepcopy(agent.q_network)
    _constant_values(target_network, target)
    targets = agent.loss.target_value_network_params.flatten_keys(".")
    for name, source in target_network.named_parameters():
        targets[name].data.copy_(source.detach())


@pytest.mark.parametrize(("double", "target"), [(False, 5.0), (True, 3.0)])
def test_double_dqn_values_the_online_networks_choice_with_the_target_network(double: bool, target: float) -> None:
    """Online Q = [1, 2] prefers action 1; target Q = [5, 3]. DQN bootstraps max = 5, double DQN Q_target(1) = 3."""
    agent = make_agent(_dqn(double_dqn=str(double).lower(), loss="l2", gamma=1.0), replace(SPEC, agents=1))
    _online_and_target(agent, [1.0, 2.0], [5.0, 3.0])
    batch = _batch(4, reward=0.0)
    batch["action"] = torch.zeros(4, dtype=torch.long)  # prediction Q_online(s, 0) = 1
    per_transition = agent.compute_loss(batch)
    assert torch.allclose(per_transition, torch.full((4,), (1.0 - target) ** 2))


@pytest.mark.parametrize(("action", "target"), [(0, 5.0), (1, 5.0 - 0.5 * (5.0 - 3.0))])
def test_advantage_learning_lowers_the_target_by_alpha_times_the_actions_gap(action: int, target: float) -> None:
    """Target Q = [5, 3] in s_t and s_t+1: the DQN target is 5; advantage learning at alpha 0.5 takes off half of the
    taken action's gap to the best under the target network (0 for action 0, 2 for action 1)."""
    agent = make_agent(_dqn(advantage_learning=0.5, loss="l2", gamma=1.0), replace(SPEC, agents=1))
    _online_and_target(agent, [1.0, 2.0], [5.0, 3.0])
    batch = _batch(4, reward=0.0)
    batch["action"] = torch.full((4,), action, dtype=torch.long)
    per_transition = agent.compute_loss(batch)
    assert torch.allclose(per_transition, torch.full((4,), (1.0 + action - target) ** 2))


@pytest.mark.parametrize(
    "variant",
    [{}, {"double_dqn": "true"}, {"loss": "l2"}, {"head": "dueling"}, {"prioritized": "true"}, {"n_steps": 1}],
)
def test_the_loss_is_torchrls_dqn_loss_bit_for_bit(variant: dict[str, object]) -> None:
    """StackedDQNLoss skips DQNLoss's TensorDict plumbing: its losses, td_error and gradients are DQNLoss's exactly."""
    head = str(variant.pop("head", "plain"))
    config = _dqn(**variant)
    agent = make_agent(config, replace(SPEC, agents=3, head=head), seeds=[1, 2, 3])
    reference = DQNLoss(
        agent.q_network,
        loss_function=agent.loss.loss_function,
        delay_value=True,
        double_dqn=config.double_dqn,
        action_space=agent.q_network.spec,
        reduction="none",
    )
    reference.make_value_estimator(gamma=config.gamma)
    torch.manual_seed(0)
    for target in agent.loss.target_value_network_params.values(True, True):  # targets apart from the online weights
        target.data.add_(torch.randn_like(target) * 0.1)
    reference.target_value_network_params.update_(agent.loss.target_value_network_params)
    batch = torch.cat([_batch(16, terminated=bool(i % 2)) for i in range(3)])
    batch["next", "reward"] = torch.randn(48, 1)
    batch["steps_to_next_obs"] = torch.randint(1, 4, (48, 1))
    if config.prioritized:
        batch["priority_weight"] = torch.rand(48)
    results = []
    for loss in (agent.loss, reference):
        sample = batch.clone()
        agent.optimizer.zero_grad(set_to_none=True)
        per_transition = loss(sample)["loss"]
        per_transition.sum().backward()
        results.append((per_transition, sample["td_error"], [p.grad.clone() for p in agent.q_network.parameters()]))
    (ours, our_errors, our_grads), (theirs, their_errors, their_grads) = results
    assert torch.equal(ours, theirs) and torch.equal(our_errors, their_errors)
    assert all(torch.equal(mine, yours) for mine, yours in zip(our_grads, their_grads, strict=True))


def test_gradients_are_clipped_per_agent_as_each_would_be_alone() -> None:
    torch.manual_seed(0)
    parameters = [torch.nn.Parameter(torch.randn(3, 4, 5)), torch.nn.Parameter(torch.randn(3, 1, 5))]
    for parameter, scale in zip(parameters, (1.0, 50.0), strict=True):
        parameter.grad = torch.randn_like(parameter) * scale
    alone = []
    for agent in range(3):
        copies = [torch.nn.Parameter(parameter[agent].detach().clone()) for parameter in parameters]
        for copied, parameter in zip(copies, parameters, strict=True):
            copied.grad = parameter.grad[agent].clone()
        norm = torch.nn.utils.clip_grad_norm_(copies, 10.0)
        alone.append((norm, [copied.grad for copied in copies]))
    norms = clip_grad_norm_per_agent(parameters, 10.0, agents=3)
    for agent, (norm, grads) in enumerate(alone):
        assert torch.allclose(norms[agent], norm)
        for parameter, grad in zip(parameters, grads, strict=True):
            assert torch.allclose(parameter.grad[agent], grad)


@pytest.mark.parametrize("head", ["plain", "dueling"])
def test_an_update_of_the_stack_moves_each_agent_as_if_it_trained_alone(head: str) -> None:
    """Agent 0 of a two-agent stack updated on (its rows, other rows) equals agent 0 trained alone on its rows."""
    config = _dqn(lr=0.01, lr_end_factor=1.0, max_grad_norm=0.5)  # small clip: clipping must stay per agent
    pair = make_agent(config, replace(SPEC, agents=2, head=head), seeds=[4, 5])
    single = make_agent(config, replace(SPEC, agents=1, head=head), seeds=[4])
    torch.manual_seed(0)
    mine, theirs = _batch(16), _batch(16, reward=100.0)
    for _ in range(3):
        update(pair, torch.cat([mine, theirs]))
        update(single, mine.clone())
    stacked_parameters, alone_parameters = list(pair.q_network.parameters()), list(single.q_network.parameters())
    assert len(stacked_parameters) == len(alone_parameters) == (6 if head == "plain" else 8)
    for stacked, alone in zip(stacked_parameters, alone_parameters, strict=True):
        assert torch.allclose(stacked[0], alone[0], atol=1e-5)


def test_the_dueling_head_is_a_state_value_plus_centred_advantages_per_agent() -> None:
    spec = replace(SPEC, num_actions=5, head="dueling")
    network = stacked_mlp(make_q_network(spec, seeds=[1, 2, 3]))
    assert network.head is not None and [tuple(w.shape) for w in network.weights] == [(3, 4, 32), (3, 32, 16)]
    observation = torch.randn(3 * 7, 4)
    with torch.no_grad():
        q_values = network(observation).reshape(3, 7, 5)
        hidden = observation.reshape(3, 7, 4)
        for weight, bias in zip(network.weights, network.biases, strict=True):
            hidden = torch.relu(torch.baddbmm(bias, hidden, weight))
        value = torch.baddbmm(network.head.value_bias, hidden, network.head.value_weight)
    # Q(s, a) = V(s) + A(s, a) - mean A(s, .): the mean over actions is the state value (Wang et al., eq. 9).
    assert torch.allclose(q_values.mean(dim=-1, keepdim=True), value, atol=1e-6)
    before = q_values.reshape(21, 5)
    with torch.no_grad():
        network.head.advantage_weight[1].mul_(-3.0)  # agent 1's head only
    after = network(observation)
    assert torch.equal(before[:7], after[:7]) and torch.equal(before[14:], after[14:])
    assert not torch.allclose(before[7:14], after[7:14])


def test_a_dueling_agent_of_a_stack_is_the_same_network_alone() -> None:
    spec = replace(SPEC, head="dueling")
    network = make_q_network(spec, seeds=[1, 2, 3])
    alone, subset = select_agents(network, spec, [2])
    assert subset.head == "dueling" and subset.agents == 1
    observation = torch.randn(6, 4)
    stacked_input = torch.cat([torch.zeros(6, 4), torch.zeros(6, 4), observation])
    assert torch.allclose(_values(network, stacked_input)[12:], _values(alone, observation), atol=1e-6)


FIRST_LAYER = "module.0.module.weights.0"


def _target(agent) -> torch.Tensor:
    return agent.loss.target_value_network_params.flatten_keys(".")[FIRST_LAYER].detach().clone()


def _online(agent) -> torch.Tensor:
    return agent.loss.value_network_params.flatten_keys(".")[FIRST_LAYER].detach().clone()


def test_hard_update_copies_only_every_interval() -> None:
    agent = make_agent(_dqn(target_update="hard", target_update_interval=3), SPEC, seeds=[0, 1, 2])
    assert isinstance(agent.target_updater, HardUpdate)
    start = _target(agent)
    for _ in range(3):
        update(agent, _batch(3 * 8))
        assert torch.equal(_target(agent), start)
    update(agent, _batch(3 * 8))
    assert torch.equal(_target(agent), _online(agent))


def test_soft_update_moves_target_and_averaged_weights_by_their_rates() -> None:
    agent = make_agent(_dqn(target_update="soft", tau=0.25, policy_averaging=0.1), SPEC, seeds=[0, 1, 2])
    assert isinstance(agent.target_updater, SoftUpdate)
    target_before = _target(agent)
    averaged_before = next(agent.averaged_network.parameters()).clone()
    update(agent, _batch(3 * 8))
    online = _online(agent)
    assert torch.allclose(_target(agent), 0.75 * target_before + 0.25 * online, atol=1e-6)
    assert torch.allclose(next(agent.averaged_network.parameters()), 0.9 * averaged_before + 0.1 * online, atol=1e-6)


def test_update_reduces_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    agent = make_agent(_dqn(lr=0.01, lr_end_factor=1.0), SPEC, seeds=[0, 1, 2])
    batch = _batch(3 * 64)
    first, _ = update(agent, batch.clone())
    for _ in range(50):
        last, _ = update(agent, batch.clone())
    assert bool((last < first).all())


def test_update_writes_td_error_for_prioritized_replay() -> None:
    agent = make_agent(_dqn(), SPEC)
    batch = _batch(3 * 16)
    update(agent, batch)
    assert batch["td_error"].shape[0] == 48 and bool((batch["td_error"] >= 0).all())
