"""The DQN agents, assembled from TorchRL parts: N independent agents, trained together.

Every experiment trains ``train.seeds`` agents. Their Q-networks are one
:class:`StackedMLP` whose weights carry a leading agent dimension and run as batched
matrix products, so N agents cost about one agent's Python overhead. Batches are laid out
agent-major (agent 0's rows, then agent 1's, ...) everywhere: environments, replay samples,
losses. TorchRL does the rest unchanged: a :class:`~torchrl.modules.QValueActor` picks the
greedy action, :class:`PerAgentEGreedy` (TorchRL's ``EGreedyModule`` with each agent's own
generator) explores, :class:`~torchrl.objectives.DQNLoss` computes the
TD loss per transition and a soft or hard updater moves the target weights.

The agents stay independent where it matters: each loss is averaged over its own replay
rows and the per-agent losses are summed, so each agent's gradient is what it would be
alone; gradients are clipped per agent; Adam is element-wise, so one Adam over the stacked
weights is N optimisers; the target and averaged weights are element-wise too.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictSequential
from torchrl.data import Categorical
from torchrl.envs.utils import ExplorationType, exploration_type
from torchrl.modules import EGreedyModule, QValueActor
from torchrl.objectives import DQNLoss, HardUpdate, SoftUpdate
from torchrl.objectives.utils import TargetNetUpdater

from reservoir_dqn.config import DQNConfig
from reservoir_dqn.errors import ModelFileError, first_line
from reservoir_dqn.files import write_atomic
from reservoir_dqn.streams import EXPLORATION, generators

OBSERVATION_KEY = "observation"
MODEL_FORMAT = "reservoir_dqn.model"
MODEL_FORMAT_VERSION = 3


@dataclass(frozen=True)
class NetworkSpec:
    """Everything needed to rebuild the Q-networks, stored beside their weights in a model file.

    ``obs_scale`` multiplies each observation entry before the first layer (the environment
    profile's observation scale), so the network takes raw observations.
    """

    obs_dim: int
    num_actions: int
    hidden_sizes: tuple[int, ...]
    env_name: str
    obs_scale: tuple[float, ...] | None = None
    agents: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "obs_dim": self.obs_dim,
            "num_actions": self.num_actions,
            "hidden_sizes": list(self.hidden_sizes),
            "env_name": self.env_name,
            "obs_scale": None if self.obs_scale is None else list(self.obs_scale),
            "agents": self.agents,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NetworkSpec:
        scale = raw.get("obs_scale")
        return cls(
            obs_dim=int(raw["obs_dim"]),
            num_actions=int(raw["num_actions"]),
            hidden_sizes=tuple(int(size) for size in raw["hidden_sizes"]),
            env_name=str(raw["env_name"]),
            obs_scale=None if scale is None else tuple(float(value) for value in scale),
            agents=int(raw["agents"]),
        )


class StackedMLP(torch.nn.Module):
    """``agents`` independent MLPs (ReLU hidden layers), evaluated together with batched matmuls.

    Input ``[agents * k, obs_dim]`` (agent-major), output ``[agents * k, num_actions]``. Each
    agent's layers start as PyTorch's ``nn.Linear`` would (weights and biases uniform in
    ``+-1/sqrt(fan_in)``), drawn from that agent's own generator.
    """

    scale: torch.Tensor

    def __init__(self, spec: NetworkSpec, generators: Sequence[torch.Generator] | None = None) -> None:
        super().__init__()
        self.agents = spec.agents
        sizes = [spec.obs_dim, *spec.hidden_sizes, spec.num_actions]
        self.register_buffer("scale", torch.tensor(spec.obs_scale or (1.0,) * spec.obs_dim, dtype=torch.float32))
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(sizes):
            self.weights.append(torch.nn.Parameter(torch.empty(self.agents, fan_in, fan_out)))
            self.biases.append(torch.nn.Parameter(torch.empty(self.agents, 1, fan_out)))
        bound_layers = list(zip(self.weights, self.biases, sizes[:-1], strict=True))
        with torch.no_grad():
            for agent in range(self.agents):
                generator = generators[agent] if generators is not None else None
                for weight, bias, fan_in in bound_layers:
                    bound = 1.0 / math.sqrt(fan_in)
                    weight[agent].uniform_(-bound, bound, generator=generator)
                    bias[agent].uniform_(-bound, bound, generator=generator)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        leading = observation.shape[:-1]
        hidden = (observation * self.scale).reshape(self.agents, -1, observation.shape[-1])
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            hidden = torch.baddbmm(bias, hidden, weight)
            if index < last:
                hidden = torch.relu(hidden)
        return hidden.reshape(*leading, hidden.shape[-1])


def make_q_network(
    spec: NetworkSpec, device: torch.device | str = "cpu", seeds: Sequence[int] | None = None
) -> QValueActor:
    """The agents' Q-networks as one greedy :class:`QValueActor`; agent ``i`` initialised from ``seeds[i]``."""
    generators = None if seeds is None else [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    network = StackedMLP(spec, generators).to(device)
    return QValueActor(network, in_keys=[OBSERVATION_KEY], spec=Categorical(spec.num_actions, device=device))


def stacked_mlp(q_network: QValueActor) -> StackedMLP:
    """The :class:`StackedMLP` inside a Q-network actor."""
    module = q_network.module[0].module
    assert isinstance(module, StackedMLP)
    return module


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


class PerAgentEGreedy(EGreedyModule):
    """Epsilon-greedy exploration whose noise each agent draws from its own generator.

    TorchRL's :class:`~torchrl.modules.EGreedyModule` draws from the global generator, so
    agent ``k``'s noise would change with the number of agents. Here the batch (agent-major,
    ``agents x envs``) is split by agent, and agent ``k`` draws its uniforms, then its random
    actions, from ``generators[k]``. Epsilon and its annealing are the parent's.
    """

    def __init__(self, spec: Categorical, agent_generators: Sequence[torch.Generator], **kwargs: Any) -> None:
        super().__init__(spec, **kwargs)
        self.generators = list(agent_generators)
        self.num_actions = int(spec.space.n)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if exploration_type() not in (ExplorationType.RANDOM, None):
            return tensordict
        action: torch.Tensor = tensordict.get(self.action_key)
        envs, remainder = divmod(action.shape[0], len(self.generators))
        if remainder:
            raise ValueError(f"a batch of {action.shape[0]} is not {len(self.generators)} agents' environments")
        uniforms, randoms = [], []
        for generator in self.generators:
            uniforms.append(torch.rand(envs, generator=generator))
            randoms.append(torch.randint(self.num_actions, (envs,), generator=generator))
        explore = torch.cat(uniforms).to(action.device) < self.eps
        random_actions = torch.cat(randoms).to(device=action.device, dtype=action.dtype)
        tensordict.set(self.action_key, torch.where(explore, random_actions, action))
        return tensordict


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


def anneal(agent: Agent, frames: int) -> None:
    """Set epsilon and the learning rate for ``frames`` collected (each linear, then constant).

    Closed forms rather than ``EGreedyModule.step(frames)``, which loops once per frame in
    Python; the values land in the module's ``eps`` buffer and the optimiser's param group,
    so checkpoints keep them.
    """
    exploration, config = agent.exploration, agent.config
    progress = min(frames / exploration.annealing_num_steps, 1.0)
    exploration.eps.copy_(exploration.eps_init + (exploration.eps_end - exploration.eps_init) * progress)
    progress = min(frames / config.lr_decay_frames, 1.0)
    for group in agent.optimizer.param_groups:
        group["lr"] = config.lr * (1.0 + (config.lr_end_factor - 1.0) * progress)


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


# --------------------------------------------------------------------------- model files


def select_agents(q_network: QValueActor, spec: NetworkSpec, indices: Sequence[int]) -> tuple[QValueActor, NetworkSpec]:
    """A network holding only the agents ``indices`` of a stacked one (weights copied)."""
    rows = torch.tensor(list(indices))
    subset = replace(spec, agents=len(indices))
    # Per-agent tensors (weights and biases) keep ``rows``; the shared input scale stays whole.
    state = {
        name: tensor.detach()[rows] if ".weights." in name or ".biases." in name else tensor
        for name, tensor in q_network.state_dict().items()
    }
    network = make_q_network(subset, next(q_network.parameters()).device)
    network.load_state_dict(state)
    return network, subset


def save_model(q_network: QValueActor, spec: NetworkSpec, path: Path) -> None:
    """Write weights and network description to ``path`` atomically."""
    payload = {
        "format": MODEL_FORMAT,
        "version": MODEL_FORMAT_VERSION,
        "spec": spec.as_dict(),
        "state_dict": {name: tensor.detach().cpu() for name, tensor in q_network.state_dict().items()},
    }
    write_atomic(path, lambda temporary: torch.save(payload, temporary))


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[QValueActor, NetworkSpec]:
    """Rebuild the greedy Q-networks from a model file written by :func:`save_model`.

    The file is read with ``torch.load(weights_only=True)``: a file carrying a pickled
    object other than tensors and plain containers is refused without running it.
    """
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: model file not found") from None
    except Exception as error:  # noqa: BLE001 - any unpickling failure means "refuse this file"
        raise ModelFileError(f"{path}: refused to load model file ({first_line(error)})") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path}: not a reservoir_dqn model file")
    if payload.get("version") != MODEL_FORMAT_VERSION:
        raise ModelFileError(f"{path}: model file format {payload.get('version')}, expected {MODEL_FORMAT_VERSION}")
    spec = NetworkSpec.from_dict(payload["spec"])
    q_network = make_q_network(spec, device)
    q_network.load_state_dict(payload["state_dict"])
    return q_network, spec
