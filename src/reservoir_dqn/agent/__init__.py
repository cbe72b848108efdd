"""The DQN agents, from TorchRL parts: N independent agents trained together, one module per concern.

- :mod:`.network`: the Q-networks, N MLPs stacked into one module of batched matmuls, built
  from a :class:`NetworkSpec` that names the architecture (hidden sizes and output head);
- :mod:`.head` and :mod:`.dueling`: the output heads, each registered once by its name in
  ``dqn.head`` (:func:`register_head`: a DQN variant's network is one module and one name);
- :mod:`.exploration`: epsilon-greedy with each agent's own random stream;
- :mod:`.schedules`: epsilon and the learning rate over the frames collected;
- :mod:`.dqn`: the algorithm, top to bottom: n-step transitions, loss, optimiser, target and
  averaged weights;
- :mod:`.streams`: each agent's own random streams;
- :mod:`.table`: a solved policy's Q-table in a network's place (a front point that ships);
- :mod:`.model_file`: the weights and their spec on disk.

Batches are laid out agent-major (agent 0's rows, then agent 1's, ...) everywhere:
environments, replay samples, losses.

May import: envs, config, common (``tests/test_house.py`` checks every layer).
"""

from reservoir_dqn.agent.dqn import Agent, clip_grad_norm_per_agent, make_agent, update
from reservoir_dqn.agent.head import HEADS, register_head
from reservoir_dqn.agent.model_file import check_table, load_model, save_model, select_agents
from reservoir_dqn.agent.network import (
    OBSERVATION_KEY,
    NetworkSpec,
    StackedMLP,
    make_q_network,
    q_module,
    stacked_mlp,
)
from reservoir_dqn.agent.schedules import anneal
from reservoir_dqn.agent.table import Axis, PolicyTable, TableSpec

__all__ = [
    "HEADS",
    "OBSERVATION_KEY",
    "Agent",
    "Axis",
    "NetworkSpec",
    "PolicyTable",
    "StackedMLP",
    "TableSpec",
    "anneal",
    "check_table",
    "clip_grad_norm_per_agent",
    "load_model",
    "make_agent",
    "make_q_network",
    "q_module",
    "register_head",
    "save_model",
    "select_agents",
    "stacked_mlp",
    "update",
]
