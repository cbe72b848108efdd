"""Each agent's own random streams: exploration noise and replay indices never come from a shared generator.

An agent's draws depend only on its seed, never on how many agents train beside it (a
global generator would hand agent 0 different numbers when ``train.seeds`` changes). Each
agent ``k`` has one ``torch.Generator`` per purpose, seeded from ``(agent seed, purpose)``
through NumPy's ``SeedSequence``; :class:`RandomStreams` carries their states in checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

EXPLORATION = 1
REPLAY = 2


def generators(seeds: Sequence[int] | None, agents: int, purpose: int) -> list[torch.Generator]:
    """One generator per agent for ``purpose``, from the agents' seeds (``None``: seeds 0, 1, ...)."""
    chosen = list(range(agents)) if seeds is None else list(seeds)
    if len(chosen) != agents:
        raise ValueError(f"{len(chosen)} seeds for {agents} agents")
    return [
        torch.Generator().manual_seed(int(np.random.SeedSequence([seed, purpose]).generate_state(1, np.uint64)[0]))
        for seed in chosen
    ]


class RandomStreams:
    """Named lists of generators, saved and restored together (a checkpoint component)."""

    def __init__(self, **streams: Sequence[torch.Generator]) -> None:
        self.streams = {name: list(stream) for name, stream in streams.items()}

    def state_dict(self) -> dict[str, Any]:
        return {name: [generator.get_state() for generator in stream] for name, stream in self.streams.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, stream in self.streams.items():
            for generator, saved in zip(stream, state[name], strict=True):
                generator.set_state(torch.as_tensor(saved, dtype=torch.uint8))
