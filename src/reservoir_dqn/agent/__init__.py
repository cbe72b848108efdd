"""The DQN agents, from TorchRL parts: N independent agents trained together, one module per concern.

- :mod:`.network`: the Q-networks, N MLPs stacked into one module of batched matmuls, built
  from a :class:`NetworkSpec` that names the architecture (hidden sizes and output head);
- :mod:`.head` and :mod:`.dueling`: the output heads besides the plain linear one (a DQN
  variant's network is one module and one name in ``dqn.head``);
- :mod:`.exploration`: epsilon-greedy with each agent's own random stream;
- :mod:`.schedules`: epsilon and the learning rate over the frames collected;
- :mod:`.update`: the algorithm: loss, target network, optimiser, averaged weights;
- :mod:`.model_file`: the weights and their spec on disk.

Batches are laid out agent-major (agent 0's rows, then agent 1's, ...) everywhere:
environments, replay samples, losses.
"""

from reservoir_dqn.agent.model_file import load_model, save_model, select_agents
from reservoir_dqn.agent.network import HEADS, OBSERVATION_KEY, NetworkSpec, StackedMLP, make_q_network, stacked_mlp
from reservoir_dqn.agent.schedules import anneal
from reservoir_dqn.agent.update import Agent, clip_grad_norm_per_agent, make_agent, update

__all__ = [
    "HEADS",
    "OBSERVATION_KEY",
    "Agent",
    "NetworkSpec",
    "StackedMLP",
    "anneal",
    "clip_grad_norm_per_agent",
    "load_model",
    "make_agent",
    "make_q_network",
    "save_model",
    "select_agents",
    "stacked_mlp",
    "update",
]
