"""The DQN update: the loss, the target network, the optimiser and the averaged weights of N agents trained together.

This is the algorithm (CleanRL's habit: read it here; the rest of the package is plumbing).
:func:`make_agent` assembles TorchRL parts: the stacked Q-networks (:mod:`.network`), a
:class:`~torchrl.modules.QValueActor` picking the greedy action, per-agent epsilon-greedy
exploration (:mod:`.exploration`), :class:`~torchrl.objectives.DQNLoss` computing the TD loss
per transition and a soft or hard updater moving the target weights. :func:`update` is one
optimiser step.

The agents stay independent where it matters: each loss is averaged over its own replay
rows and the per-agent losses are summed, so each agent's gradient is what it would be
alone; gradients are clipped per agent; Adam is element-wise, so one Adam over the stacked
weights is N optimisers; the target and averaged weights are element-wise too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictSequential
from torchrl.data import Categorical
from torchrl.modules import QValueActor
from torchrl.objectives import DQNLoss, HardUpdate, SoftUpdate
from torchrl.objectives.utils import TargetNetUpdater

from reservoir_dqn.agent.exploration import PerAgentEGreedy
from reservoir_dqn.agent.network import NetworkSpec, make_q_network
from reservoir_dqn.config import DQNConfig
from reservoir_dqn.streams import EXPLORATION, generators


class FusedSoftUpdate(SoftUpdate):
    """TorchRL's :class:`~torchrl.objectives.SoftUpdate`, its per-parameter loop fused into one call.

    The arithmetic is the same, ``target.lerp_(source, tau)`` for every parameter, and so are
    the results bit for bit; TorchRL walks nested TensorDicts once per parameter and step.
    The pairs are looked up once: optimiser steps and checkpoint loads update tensors in place.
    """

    def step(self) -> None:
        pairs = self.__dict__.get("_fused_pairs")
        if pairs is None:
            targets, sources = [], []
            for key, source in self._sources.items(True, True):
                path = key if isinstance(key, tuple) else (key,)
                targets.append(self._targets.get(("target_" + path[0], *path[1:])).data)
                sources.append(source.data)
            pairs = self.__dict__["_fused_pairs"] = (targets, sources)
        torch._foreach_lerp_(pairs[0], pairs[1], 1.0 - self.eps)


@dataclass
class Agent:
    """The parts of the DQN agents that training touches, in the order the algorithm uses them."""

    agents: int
    q_network: QValueActor  # observation -> action_value, chosen_action_value, greedy action (online weights)
    exploration: PerAgentEGreedy  # replaces the greedy action with a random one with probability eps
    policy: TensorDictSequential  # q_network then exploration: what collection runs
    loss: DQNLoss  # per-transition TD loss; owns the online and the target parameters
    compute_loss: Callable[[TensorDictBase], torch.Tensor]  # batch -> per-transition loss (compiled if asked)
    target_updater: TargetNetUpdater  # HardUpdate or SoftUpdate of the target parameters
    optimizer: torch.optim.Optimizer
    averaged_network: QValueActor  # Polyak average of the online weights: what is validated, evaluated, shipped
    averaging: float  # its Polyak rate (0: it is a copy of the online network, refreshed after each update)
    config: DQNConfig

    @property
    def online_parameters(self) -> list[torch.Tensor]:
        return list(self.q_network.parameters())


def make_agent(
    config: DQNConfig,
    spec: NetworkSpec,
    device: torch.device | str = "cpu",
    seeds: Sequence[int] | None = None,
    compile_loss: bool = False,
) -> Agent:
    """Build networks, exploration, loss, target updater and optimiser from the ``dqn`` section.

    :param seeds: one per agent: each agent's network starts from its own generator, and
        explores with another of its own (``None``: seeds 0, 1, ...).
    :param compile_loss: ``torch.compile`` the loss computation.
    """
    q_network = make_q_network(spec, device, seeds)
    exploration = PerAgentEGreedy(
        Categorical(spec.num_actions, device=device),
        generators(seeds, spec.agents, EXPLORATION),
        eps_init=float(config.eps_start),
        eps_end=float(config.eps_end),
        annealing_num_steps=config.eps_decay_frames,
        device=device,
    )
    policy = TensorDictSequential(q_network, exploration)
    loss = DQNLoss(
        q_network,
        loss_function="smooth_l1" if config.loss == "huber" else "l2",
        delay_value=True,
        double_dqn=config.double_dqn,
        action_space=q_network.spec,
        reduction="none",
    )
    loss.make_value_estimator(gamma=config.gamma)
    target_updater: TargetNetUpdater
    if config.target_update == "hard":
        target_updater = HardUpdate(loss, value_network_update_interval=config.target_update_interval)
    else:
        target_updater = FusedSoftUpdate(loss, tau=config.tau)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=config.lr, fused=True)

    def compute_loss(batch: TensorDictBase) -> torch.Tensor:
        value: torch.Tensor = loss(batch)["loss"]
        return value

    compute = torch.compile(compute_loss) if compile_loss else compute_loss
    averaged = copy.deepcopy(q_network).requires_grad_(False)
    return Agent(
        spec.agents,
        q_network,
        exploration,
        policy,
        loss,
        compute,
        target_updater,
        optimizer,
        averaged,
        config.policy_averaging,
        config,
    )


def clip_grad_norm_per_agent(parameters: Sequence[torch.Tensor], max_norm: float, agents: int) -> torch.Tensor:
    """Clip each agent's gradient to ``max_norm`` as ``clip_grad_norm_`` would alone; return the norms ``[agents]``."""
    grads = [parameter.grad for parameter in parameters if parameter.grad is not None]
    squares = torch.stack([grad.reshape(agents, -1).pow(2).sum(dim=1) for grad in grads]).sum(dim=0)
    norms = squares.sqrt()
    factors = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(factors.view(agents, *([1] * (grad.dim() - 1))))
    return norms


def update(agent: Agent, batch: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step for every agent on its own replay rows; returns per-agent loss and gradient norm.

    ``batch`` holds ``agents * batch_size`` transitions, agent-major. DQNLoss writes each
    transition's squared TD error into ``batch["td_error"]`` for prioritized replay.
    """
    per_transition = agent.compute_loss(batch).reshape(agent.agents, -1)
    per_agent = per_transition.mean(dim=1)
    agent.optimizer.zero_grad(set_to_none=True)
    per_agent.sum().backward()  # type: ignore[no-untyped-call]
    grad_norms = clip_grad_norm_per_agent(agent.online_parameters, agent.config.max_grad_norm, agent.agents)
    agent.optimizer.step()
    agent.target_updater.step()
    average_weights(agent)
    return per_agent.detach(), grad_norms.detach()


def average_weights(agent: Agent) -> None:
    """Move the averaged weights toward the online ones by the Polyak rate (copy them when it is 0)."""
    averaged = [parameter.data for parameter in agent.averaged_network.parameters()]
    online = [parameter.data for parameter in agent.q_network.parameters()]
    if agent.averaging:
        torch._foreach_lerp_(averaged, online, agent.averaging)
    else:
        torch._foreach_copy_(averaged, online)
