"""A Q-table read off a grid of observations: a policy that was solved, not learned, in the shape of a Q-network.

An exact solver (the reservoir's SDP) gives an action value for every state of a finite grid.
:class:`PolicyTable` holds those values and reads the state from the observation the
environment gives (each axis of the table from one feature, rounded to the nearest grid point),
so the solved policy goes wherever a trained network goes: a model file, the exact account,
ONNX, ``advise``. :class:`TableSpec` is what rebuilds it, stored in the model file's
:class:`~.network.NetworkSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Axis:
    """One axis of the table: ``size`` grid points, read from observation feature ``feature`` as
    ``round(feature * scale + offset)`` clamped to ``[0, size - 1]``; ``feature`` ``None``: one point (index 0)."""

    size: int
    feature: int | None = None
    scale: float = 1.0
    offset: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"size": self.size, "feature": self.feature, "scale": self.scale, "offset": self.offset}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Axis:
        feature = None if raw["feature"] is None else int(raw["feature"])
        return cls(int(raw["size"]), feature, float(raw["scale"]), float(raw["offset"]))


@dataclass(frozen=True)
class TableSpec:
    """The table's state axes, in the table's order (the actions are the last dimension), and ``grid``: the solver's
    words for the grid it solved on, which a user of the table compares with its own (an axis reads indices, not
    what they mean: the same indices under another horizon or start month are other states)."""

    axes: tuple[Axis, ...]
    grid: str = ""

    @property
    def states(self) -> int:
        count = 1
        for axis in self.axes:
            count *= axis.size
        return count

    def as_dict(self) -> dict[str, Any]:
        return {"axes": [axis.as_dict() for axis in self.axes], "grid": self.grid}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], obs_dim: int) -> TableSpec:
        axes = tuple(Axis.from_dict(axis) for axis in raw["axes"])
        if not axes or any(axis.size < 1 for axis in axes):
            raise ValueError("a Q-table needs at least one axis, each of at least one point")
        if any(axis.feature is not None and not 0 <= axis.feature < obs_dim for axis in axes):
            raise ValueError(f"a Q-table's axis reads a feature outside the {obs_dim} observed")
        return cls(axes, str(raw.get("grid", "")))


class PolicyTable(torch.nn.Module):
    """``[observations, obs_dim]`` to ``[observations, actions]``: the values of the grid state each observation
    reads as (:class:`Axis`). Plain tensor arithmetic (round, clamp, gather), so it exports to ONNX as it is."""

    values: torch.Tensor
    strides: torch.Tensor

    def __init__(self, spec: TableSpec, num_actions: int, obs_dim: int) -> None:
        super().__init__()
        self.spec = spec
        self.obs_dim = obs_dim
        self.register_buffer("values", torch.zeros(spec.states, num_actions))
        strides, stride = [], 1
        for axis in reversed(spec.axes):
            strides.append(stride)
            stride *= axis.size
        self.register_buffer("strides", torch.tensor(strides[::-1]), persistent=False)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        index = torch.zeros(observation.shape[:-1], dtype=torch.long, device=observation.device)
        for axis, stride in zip(self.spec.axes, self.strides, strict=True):
            if axis.feature is None:
                continue
            point = torch.round(observation[..., axis.feature] * axis.scale + axis.offset)
            index = index + point.clamp(0, axis.size - 1).long() * stride
        return self.values[index]
