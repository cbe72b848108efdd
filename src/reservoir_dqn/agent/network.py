"""The Q-networks: ``agents`` independent MLPs stacked into one module, their architecture named in a spec.

:class:`NetworkSpec` is everything needed to rebuild them (a model file stores it beside the
weights), the architecture included: ``hidden_sizes`` and ``head``, the output head by name.
``plain`` is the MLP's last linear layer (Mnih et al., 2015); each other head is a module of
its own (a :class:`~.head.StackedHead`) registered in :data:`~.head.HEADS`, so a DQN variant's
network is one module and one name (:mod:`.dueling`). A spec with a ``table`` describes a solved
policy's Q-table instead (:mod:`.table`), which goes wherever a network goes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchrl.data import Categorical
from torchrl.modules import QValueActor

import reservoir_dqn.agent.dueling  # noqa: F401 - registers the dueling head
from reservoir_dqn.agent.head import HEADS, PLAIN, Layer
from reservoir_dqn.agent.table import PolicyTable, TableSpec

OBSERVATION_KEY = "observation"


@dataclass(frozen=True)
class NetworkSpec:
    """Everything needed to rebuild the Q-networks, stored beside their weights in a model file.

    ``obs_scale`` multiplies each observation entry before the first layer (the environment
    profile's observation scale), so the network takes raw observations. ``head`` names the
    output head (``plain`` or one of :data:`HEADS`); files written before it existed hold
    plain networks. ``table``: not a network but a solved policy's Q-table (:class:`~.table.PolicyTable`,
    one agent, no hidden layers).
    """

    obs_dim: int
    num_actions: int
    hidden_sizes: tuple[int, ...]
    env_name: str
    obs_scale: tuple[float, ...] | None = None
    agents: int = 1
    head: str = PLAIN
    table: TableSpec | None = None

    def as_dict(self) -> dict[str, Any]:
        table = {} if self.table is None else {"table": self.table.as_dict()}  # a network's spec is as it always was
        return {
            "obs_dim": self.obs_dim,
            "num_actions": self.num_actions,
            "hidden_sizes": list(self.hidden_sizes),
            "env_name": self.env_name,
            "obs_scale": None if self.obs_scale is None else list(self.obs_scale),
            "agents": self.agents,
            "head": self.head,
        } | table

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NetworkSpec:
        scale = raw.get("obs_scale")
        head = str(raw.get("head", PLAIN))
        table = raw.get("table")
        if head not in HEADS:
            raise ValueError(f"unknown Q-network head {head!r} (registered: {', '.join(HEADS.names())})")
        return cls(
            obs_dim=int(raw["obs_dim"]),
            num_actions=int(raw["num_actions"]),
            hidden_sizes=tuple(int(size) for size in raw["hidden_sizes"]),
            env_name=str(raw["env_name"]),
            obs_scale=None if scale is None else tuple(float(value) for value in scale),
            agents=int(raw["agents"]),
            head=head,
            table=None if table is None else TableSpec.from_dict(table, int(raw["obs_dim"])),
        )


class StackedMLP(torch.nn.Module):
    """``agents`` independent MLPs (ReLU hidden layers) and their head, evaluated together with batched matmuls.

    Input ``[agents * k, obs_dim]`` (agent-major), output ``[agents * k, num_actions]``. Each
    agent's layers start as PyTorch's ``nn.Linear`` would (weights and biases uniform in
    ``+-1/sqrt(fan_in)``), drawn from that agent's own generator: the hidden layers first,
    then the head's. With the ``plain`` head the last of ``weights`` is the output layer.
    """

    scale: torch.Tensor

    def __init__(self, spec: NetworkSpec, generators: Sequence[torch.Generator] | None = None) -> None:
        super().__init__()
        self.agents = spec.agents
        self.obs_dim = spec.obs_dim
        head = HEADS.get(spec.head)
        plain = head is None
        sizes = [spec.obs_dim, *spec.hidden_sizes, *([spec.num_actions] if plain else [])]
        self.register_buffer("scale", torch.tensor(spec.obs_scale or (1.0,) * spec.obs_dim, dtype=torch.float32))
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(sizes):
            self.weights.append(torch.nn.Parameter(torch.empty(self.agents, fan_in, fan_out)))
            self.biases.append(torch.nn.Parameter(torch.empty(self.agents, 1, fan_out)))
        self.head = None if head is None else head(self.agents, sizes[-1], spec.num_actions)
        layers: list[Layer] = list(zip(self.weights, self.biases, sizes[:-1], strict=True))
        if self.head is not None:
            layers += self.head.layers()
        with torch.no_grad():
            for agent in range(self.agents):
                generator = generators[agent] if generators is not None else None
                for weight, bias, fan_in in layers:
                    bound = 1.0 / math.sqrt(fan_in)
                    weight[agent].uniform_(-bound, bound, generator=generator)
                    bias[agent].uniform_(-bound, bound, generator=generator)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        leading = observation.shape[:-1]
        hidden = (observation * self.scale).reshape(self.agents, -1, observation.shape[-1])
        last = len(self.weights) - 1 if self.head is None else len(self.weights)  # no ReLU after the output layer
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            hidden = torch.baddbmm(bias, hidden, weight)
            if index < last:
                hidden = torch.relu(hidden)
        if self.head is not None:
            hidden = self.head(hidden)
        return hidden.reshape(*leading, hidden.shape[-1])


def make_q_network(
    spec: NetworkSpec, device: torch.device | str = "cpu", seeds: Sequence[int] | None = None
) -> QValueActor:
    """The agents' Q-networks as one greedy :class:`QValueActor`; agent ``i`` initialised from ``seeds[i]``.
    A spec with a ``table`` gives its :class:`~.table.PolicyTable` (all zeros until its values are loaded)."""
    network: torch.nn.Module
    if spec.table is not None:
        network = PolicyTable(spec.table, spec.num_actions, spec.obs_dim).to(device)
    else:
        generators = None if seeds is None else [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        network = StackedMLP(spec, generators).to(device)
    return QValueActor(network, in_keys=[OBSERVATION_KEY], spec=Categorical(spec.num_actions, device=device))


def q_module(q_network: QValueActor) -> StackedMLP | PolicyTable:
    """The module inside a Q-network actor: observations to Q-values, a trained network's or a solved table's."""
    module = q_network.module[0].module
    assert isinstance(module, StackedMLP | PolicyTable)
    return module


def stacked_mlp(q_network: QValueActor) -> StackedMLP:
    """The :class:`StackedMLP` inside a Q-network actor (what training updates)."""
    module = q_module(q_network)
    assert isinstance(module, StackedMLP)
    return module
