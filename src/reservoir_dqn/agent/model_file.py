"""Model files: the Q-networks' weights beside their :class:`~.network.NetworkSpec`, saved atomically, loaded safely.

Format ``reservoir_dqn.model`` version 3: ``{"format", "version", "spec", "state_dict"}``
written by ``torch.save`` and read with ``weights_only=True``. A spec without ``head``
(written before heads were named) is a plain network. Version 4 is the same with a solved
policy's Q-table (the spec's ``table``, :mod:`.table`) in place of the network: a network's
file stays version 3, so a reader that knows only networks refuses a table in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torchrl.modules import QValueActor

from reservoir_dqn.agent.network import NetworkSpec, make_q_network
from reservoir_dqn.agent.table import TableSpec
from reservoir_dqn.common.errors import ModelFileError, first_line
from reservoir_dqn.common.files import write_atomic

MODEL_FORMAT = "reservoir_dqn.model"
MODEL_FORMAT_VERSION = 3
TABLE_FORMAT_VERSION = 4  # a file holding a Q-table (NetworkSpec.table)


def select_agents(q_network: QValueActor, spec: NetworkSpec, indices: Sequence[int]) -> tuple[QValueActor, NetworkSpec]:
    """A network holding only the agents ``indices`` of a stacked one (weights copied)."""
    rows = torch.tensor(list(indices))
    subset = replace(spec, agents=len(indices))
    # Every parameter carries the agent dimension first and keeps ``rows``; buffers (the input scale) are shared.
    per_agent = {name for name, _ in q_network.named_parameters()}
    state = {
        name: tensor.detach()[rows] if name in per_agent else tensor for name, tensor in q_network.state_dict().items()
    }
    network = make_q_network(subset, next(q_network.parameters()).device)
    network.load_state_dict(state)
    return network, subset


def save_model(q_network: QValueActor, spec: NetworkSpec, path: Path) -> None:
    """Write weights and network description to ``path`` atomically."""
    payload = {
        "format": MODEL_FORMAT,
        "version": MODEL_FORMAT_VERSION if spec.table is None else TABLE_FORMAT_VERSION,
        "spec": spec.as_dict(),
        "state_dict": {name: tensor.detach().cpu() for name, tensor in q_network.state_dict().items()},
    }
    write_atomic(path, lambda temporary: _save(payload, temporary))


def _save(payload: dict[str, object], path: Path) -> None:
    """``torch.save`` through an open file: given a path, torch names the archive's folder after the file (here a
    temporary name with the process id), so equal weights would give files that differ run to run (and DVC
    would see a new model each time)."""
    with path.open("wb") as file:
        torch.save(payload, file)


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
    if payload.get("version") not in (MODEL_FORMAT_VERSION, TABLE_FORMAT_VERSION):
        raise ModelFileError(
            f"{path}: model file format {payload.get('version')}, expected {MODEL_FORMAT_VERSION} (a network) or "
            f"{TABLE_FORMAT_VERSION} (a Q-table)"
        )
    try:
        spec = NetworkSpec.from_dict(payload["spec"])
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: model file's network description is unusable ({first_line(error)})") from None
    if (spec.table is None) != (payload["version"] == MODEL_FORMAT_VERSION):
        raise ModelFileError(f"{path}: model file format {payload['version']} does not match what it holds")
    q_network = make_q_network(spec, device)
    try:
        q_network.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError) as error:
        raise ModelFileError(f"{path}: model file's weights do not fit its description ({first_line(error)})") from None
    return q_network, spec


def check_table(spec: NetworkSpec, expected: TableSpec | None, path: Path) -> None:
    """Refuse (:class:`ModelFileError`) a model file holding a Q-table other than ``expected``, the one the states of
    the environment in use read as (a table's indices mean other states under another horizon or start month); a
    network passes."""
    if spec.table is not None and spec.table != expected:
        here = f" ({expected.grid})" if expected is not None else ""
        raise ModelFileError(
            f"{path}: a Q-table solved on another grid ({spec.table.grid or 'not described'}), not this one's{here}"
        )
