"""The DQN algorithm, top to bottom: the n-step transitions, the loss, the optimiser step, the target and averaged
weights, for N agents trained together.

This is the algorithm (CleanRL's habit: read it here; the rest of the package is plumbing).
:func:`make_agent` assembles TorchRL parts: the stacked Q-networks (:mod:`.network`), a
:class:`~torchrl.modules.QValueActor` picking the greedy action, per-agent epsilon-greedy
exploration (:mod:`.exploration`), :class:`~torchrl.objectives.DQNLoss` computing the TD loss
per transition (:class:`StackedDQNLoss`: the same loss, its network calls made on tensors) and a
soft or hard updater moving the target weights. Then, in the order
the training loop (:mod:`reservoir_dqn.training.loop`) runs them:

1. :class:`TransitionWriter` stores each collected step as an n-step transition: TorchRL's
   :class:`~torchrl.envs.MultiStepTransform` turns ``(s_t, a_t, r_t, s_t+1)`` into
   ``(s_t, a_t, R_t, s_t+k)`` with ``R_t = sum_{i<k} gamma^i r_t+i`` and ``k = n`` (fewer at an
   episode's end), recorded as ``steps_to_next_obs``;
2. :func:`learn` samples each agent's own rows of the replay buffer;
3. :func:`update`: ``DQNLoss`` computes the target ``y = R_t + gamma^k (1 - terminated)
   Q_target(s_t+k, a*)``, with ``a*`` the target network's greedy action (or, with
   ``dqn.double_dqn``, the online network's), less ``alpha`` times the taken action's gap to the
   best (``dqn.advantage_learning``), and the Huber or squared TD loss per transition;
4. one Adam step on the sum of the agents' mean losses, each agent's gradient clipped alone;
5. the target weights follow (a hard copy every ``target_update_interval`` updates, or
   Polyak averaging at ``tau``) and so do the averaged weights that are validated and shipped;
6. with prioritized replay, each sampled transition's priority becomes ``|delta|``.

The agents stay independent where it matters: each loss is averaged over its own replay
rows and the per-agent losses are summed, so each agent's gradient is what it would be
alone; gradients are clipped per agent; Adam is element-wise, so one Adam over the stacked
weights is N optimisers; the target and averaged weights are element-wise too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictSequential
from torchrl.data import Categorical, TensorDictReplayBuffer
from torchrl.envs import MultiStepTransform
from torchrl.modules import QValueActor
from torchrl.objectives import DQNLoss, HardUpdate, SoftUpdate
from torchrl.objectives.utils import TargetNetUpdater, distance_loss

from reservoir_dqn.agent.exploration import PerAgentEGreedy
from reservoir_dqn.agent.network import NetworkSpec, make_q_network, stacked_mlp
from reservoir_dqn.agent.streams import EXPLORATION, generators
from reservoir_dqn.config import DQNConfig

# What DQN needs from a collected frame; everything else the rollout records (Q-values,
# running episode return, environment diagnostics, ...) stays out of the buffer.
TRANSITION_KEYS = (
    "observation",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "done"),
    ("next", "terminated"),
)


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


class StackedDQNLoss(DQNLoss):
    """TorchRL's :class:`~torchrl.objectives.DQNLoss` with its network calls made on tensors.

    The arithmetic is ``DQNLoss.forward``'s, step for step, and so are its results bit for
    bit (``tests/test_dqn.py`` holds them against it): the online ``Q(s_t, a_t)``; the target
    ``R_t + gamma^k (1 - terminated) Q_target(s_t+k, a*)`` from the value estimator's ``gamma``,
    ``a*`` greedy under the target network (or, with ``double_dqn``, the online one); TorchRL's
    ``distance_loss``; ``delta ** 2`` written as ``td_error``; the importance weights through
    ``_reduce_loss``. TorchRL still owns the online and target parameters, the value estimator
    and the target updates. What it leaves out is the TensorDict plumbing around each of the
    two or three network calls (a copy of the batch, ``step_mdp``, the parameters swapped into
    the module and back): on the default batch a call takes 0.97 ms against ``DQNLoss``'s 1.54
    (``bench/results/speed.md``).

    With ``advantage_learning`` ``alpha > 0`` (``dqn.advantage_learning``) the target is advantage learning's
    (Baird, 1999; Bellemare et al., 2016): ``y - alpha (max_b Q_target(s_t, b) - Q_target(s_t, a_t))``.
    """

    advantage_learning: float = 0.0

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        network = stacked_mlp(self.value_network)
        keys = self.tensor_keys
        action = tensordict.get(keys.action).unsqueeze(-1)
        predicted = network(tensordict.get("observation")).gather(-1, action).squeeze(-1)
        next_observation = tensordict.get(("next", "observation"))
        with torch.no_grad():
            target_values = torch.func.functional_call(network, self._target_tensors(), (next_observation,))
            chooser = network(next_observation) if self.double_dqn else target_values
            next_value = target_values.gather(-1, chooser.argmax(-1, keepdim=True))
            estimator = self.value_estimator
            reward = tensordict.get(("next", estimator.tensor_keys.reward))
            gamma = estimator.gamma.to(reward.device)
            steps = tensordict.get(estimator.tensor_keys.steps_to_next_obs, None)
            if steps is not None:
                gamma = gamma ** steps.view_as(reward)
            not_terminated = (~tensordict.get(("next", estimator.tensor_keys.terminated))).int()
            target = (reward + gamma * not_terminated * next_value).squeeze(-1)
            if self.advantage_learning:  # widen the gaps: less alpha times the taken action's gap, target network's
                here = torch.func.functional_call(network, self._target_tensors(), (tensordict.get("observation"),))
                target = target - self.advantage_learning * (here.max(-1).values - here.gather(-1, action).squeeze(-1))
            tensordict.set(keys.priority, (predicted - target).pow(2).unsqueeze(-1), inplace=True)
        loss = distance_loss(predicted, target, self.loss_function)
        weights = None
        if self.use_prioritized_weights in (True, "auto") and keys.priority_weight in tensordict.keys():  # noqa: SIM118 - a TensorDict
            weights = tensordict.get(keys.priority_weight)
        return TensorDict(loss=self._reduce_loss(loss, tensordict=tensordict, weights=weights))

    def _target_tensors(self) -> dict[str, torch.Tensor]:
        """The target network's tensors, named as the stacked MLP names its own.

        Read anew at each call: a checkpoint's restore may replace them.
        """
        prefix = self.__dict__.get("_target_prefix")
        if prefix is None:
            names = [name for name, _ in self.value_network.named_parameters()]
            prefix = self.__dict__["_target_prefix"] = names[0][: names[0].index("weights.")].rstrip(".").split(".")
        params = self.target_value_network_params.get(tuple(prefix))
        return {".".join(key) if isinstance(key, tuple) else key: value for key, value in params.items(True, True)}


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
    loss = StackedDQNLoss(
        q_network,
        loss_function="smooth_l1" if config.loss == "huber" else "l2",
        delay_value=True,
        double_dqn=config.double_dqn,
        action_space=q_network.spec,
        reduction="none",
    )
    loss.make_value_estimator(gamma=config.gamma)
    loss.advantage_learning = config.advantage_learning
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


# ----------------------------------------------------------------------- 1. n-step transitions


class TransitionWriter:
    """Turns collected batches (``[agents * envs, time]``, agent-major) into stored transitions.

    With ``n_steps == 1`` a transition is one step. With more, TorchRL's
    :class:`~torchrl.envs.MultiStepTransform` replaces reward and next observation by the
    discounted ``n``-step return and the observation ``n`` steps ahead (fewer at an
    episode's end) and records ``steps_to_next_obs``, which ``DQNLoss`` uses to discount
    the bootstrap by ``gamma ** steps``. The end flags (``done``, ``terminated``,
    ``truncated``) follow the next observation: left as they are (TorchRL's default keeps
    them at step ``t``), a window that reaches a termination would bootstrap from the
    terminal observation. The transform holds the last ``n`` frames of each environment
    until their future is known; :meth:`state_dict` carries them into checkpoints. Rewards
    are multiplied by ``reward_scale`` on the way in.
    """

    def __init__(
        self, buffer: TensorDictReplayBuffer, agents: int, n_steps: int, gamma: float, reward_scale: float = 1.0
    ) -> None:
        self.buffer = buffer
        self.agents = agents
        self.reward_scale = reward_scale
        self.keys = (*TRANSITION_KEYS, "steps_to_next_obs") if n_steps > 1 else TRANSITION_KEYS
        self._multi_step: MultiStepTransform | None = None
        if n_steps > 1:
            # done_keys=[]: gather the end flags at t + steps like every other ("next", ...) entry.
            self._multi_step = MultiStepTransform(n_steps, gamma, done_keys=[])

    def write(self, batch: TensorDictBase) -> int:
        """Store the transitions a batch completes; return how many per agent."""
        batch = batch.select(*self.keys, strict=False)
        if self.reward_scale != 1.0:
            batch.set(("next", "reward"), batch["next", "reward"] * self.reward_scale)
        if self._multi_step is not None:
            batch = self._multi_step.inv(batch)
            if batch is None:
                return 0
        per_agent = batch.select(*self.keys).reshape(self.agents, -1)
        self.buffer.extend(per_agent.transpose(0, 1).contiguous())
        return int(per_agent.shape[1])

    def state_dict(self) -> dict[str, Any]:
        """The frames held back for n-step returns (TorchRL keeps them in the transform's ``_buffer``)."""
        pending = None if self._multi_step is None else self._multi_step._buffer
        if pending is None:
            return {"pending": None}
        return {"pending": pending.to_dict(), "batch_size": list(pending.batch_size)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._multi_step is None or state["pending"] is None:
            return
        self._multi_step._buffer = TensorDict(state["pending"], batch_size=state["batch_size"])


# ----------------------------------------------------------------------- 2-6. one update


def learn(agent: Agent, buffer: TensorDictReplayBuffer) -> tuple[torch.Tensor, torch.Tensor]:
    """One DQN update of every agent, top to bottom; returns per-agent loss and gradient norm.

    2. A sample holds ``agents * batch_size`` n-step transitions, agent-major, each agent's from its own
       replay column (:mod:`reservoir_dqn.training.replay`); with prioritized replay, DQNLoss weighs
       each by its importance-sampling weight.
    3-5. :func:`update`: the targets and the loss, the optimiser step, the target and averaged weights.
    6. Prioritized replay: the sampled transitions' new priorities, from the TD errors DQNLoss wrote.
    """
    batch = buffer.sample()
    loss, grad_norm = update(agent, batch)
    if agent.config.prioritized:
        buffer.update_priority(batch["index"], priorities(batch["td_error"]))
    return loss, grad_norm


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


def priorities(td_error: torch.Tensor) -> torch.Tensor:
    """Schaul et al.'s priority ``|delta|`` from the ``td_error`` TorchRL's ``DQNLoss`` writes (``delta ** 2``)."""
    return td_error.detach().sqrt()
