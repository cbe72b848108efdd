"""A trained agent as it leaves the pipeline: plain tensors in, greedy actions out.

What the MLflow model registry holds (:mod:`reservoir_dqn.tracking.registry` logs it), free
of TorchRL's TensorDict plumbing and of the training's stacked agents.
"""

from __future__ import annotations

import copy

import torch
from torchrl.modules import QValueActor

from reservoir_dqn.agent import stacked_mlp


class GreedyPolicy(torch.nn.Module):
    """One trained agent as a plain-tensor module: a batch of observations in, greedy actions out.

    This is what goes to the MLflow model registry: ``mlflow.pytorch.load_model`` returns it
    and it acts without TorchRL's TensorDict plumbing. ``q_values`` gives the action values.
    An observation that is not floating point, not ``observation_size`` wide, or not finite
    is refused with a ValueError saying so, rather than answered with an arbitrary action. In
    the exported graph MLflow registers, NaN and infinity fail the graph's assertion with the
    same words and a wrong width the exported program's input check; its dtype check is fixed
    when the graph is traced, so integers are promoted to float there, not refused.
    """

    def __init__(self, q_network: QValueActor) -> None:
        super().__init__()
        self.q_values = copy.deepcopy(stacked_mlp(q_network)).cpu().eval()
        self.observation_size = int(self.q_values.weights[0].shape[1])

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        check_observation(observation, self.observation_size)
        action_values: torch.Tensor = self.q_values(observation)
        return action_values.argmax(dim=-1)


class OperatorPolicy(torch.nn.Module):
    """One trained agent as an operator runs it: raw observations in; its action's value and the Q-values out.

    ``action_values[a]`` is what action ``a`` means in the environment's own units (the
    reservoir's release target in hm3 per month; elsewhere the action's index), so the output
    needs no table to read. What :mod:`reservoir_dqn.stages.export` writes as ONNX.
    """

    action_values: torch.Tensor

    def __init__(self, q_network: QValueActor, action_values: torch.Tensor) -> None:
        super().__init__()
        self.q_values = copy.deepcopy(stacked_mlp(q_network)).cpu().eval()
        self.register_buffer("action_values", action_values.detach().float().cpu())
        self.eval()

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        action_values: torch.Tensor = self.q_values(observation)
        return self.action_values[action_values.argmax(dim=-1)], action_values


def check_observation(observation: torch.Tensor, size: int) -> None:
    """Raise ValueError unless ``observation`` is a finite floating-point tensor ``[..., size]``."""
    if not isinstance(observation, torch.Tensor) or not observation.is_floating_point():
        what = observation.dtype if isinstance(observation, torch.Tensor) else type(observation).__name__
        raise ValueError(f"observations must be a floating-point tensor, got {what}")
    if observation.dim() == 0 or observation.shape[-1] != size:
        raise ValueError(f"observations must be {size} wide (shape [..., {size}]), got shape {list(observation.shape)}")
    finite = torch.isfinite(observation).all()
    if torch.compiler.is_exporting():  # MLflow saves the policy as a torch.export graph: it asserts, not branches
        torch._assert_async(finite, "observations hold NaN or infinite values")
    elif not bool(finite):
        rows = torch.nonzero(~torch.isfinite(observation).reshape(-1, size).all(dim=-1)).flatten().tolist()
        more = ", ..." if len(rows) > 5 else ""
        raise ValueError(f"observations hold NaN or infinite values (rows {rows[:5]}{more})")
