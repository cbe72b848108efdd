"""Metric groups: the names of every training curve, declared once.

A :class:`MetricGroup` is a set of metrics emitted together at one step: one CSV file of
the training log (``logs/train/<group>.csv``), one namespace in MLflow and TensorBoard
(``<group>/<field>``). The training loop and the environment profiles declare their groups
here or beside their code; every sink derives its names from the group, and a value whose
name the group does not declare, or a declared one that is missing, fails loudly instead
of vanishing from one sink.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class MetricGroup:
    """Metrics emitted together.

    :param name: the namespace (``episode``) and the training-log file name (``episode.csv``).
    :param fields: metric names inside the namespace, in column order.
    :param per_agent: one value per agent (a CSV row and an MLflow child run per agent), or
        one value for the whole run (the parent run).
    :param description: what a row means, for the reader of the CSV and the metrics reference.
    """

    name: str
    fields: tuple[str, ...]
    per_agent: bool = True
    description: str = ""

    def key(self, field: str) -> str:
        """The namespaced name of one field, as MLflow and TensorBoard show it."""
        return f"{self.name}/{field}"

    @property
    def file(self) -> str:
        """The training log's CSV file of this group (``dvc.yaml``'s plots read its columns)."""
        return f"{self.name}.csv"

    def columns(self) -> list[str]:
        """Training-log CSV columns: the step, the agent (when per agent), then the fields."""
        return ["frames", *(["seed"] if self.per_agent else []), *self.fields]

    def check(self, values: Mapping[str, object]) -> None:
        """Raise ValueError unless ``values`` holds exactly this group's fields."""
        unknown = set(values) - set(self.fields)
        missing = set(self.fields) - set(values)
        if unknown or missing:
            raise ValueError(
                f"metric group '{self.name}': "
                + "; ".join(
                    part
                    for part in (
                        f"unknown {sorted(unknown)}" if unknown else "",
                        f"missing {sorted(missing)}" if missing else "",
                    )
                    if part
                )
            )


@dataclass(frozen=True)
class Record:
    """One emission of a group at a step: a row per agent that has something to report.

    NaN means "nothing this time" (no episode of that agent ended in the interval): such an
    agent has no row. A row is either all NaN or all finite; anything else is a bug and raises.
    """

    group: MetricGroup
    step: int
    rows: tuple[tuple[int | None, dict[str, float]], ...]  # (agent index, or None for a per-run group; values)

    @classmethod
    def of(cls, group: MetricGroup, step: int, values: Mapping[str, torch.Tensor | float]) -> Record:
        """Build a record from per-agent tensors (``[agents]``) or plain numbers; checks the names."""
        group.check(values)
        columns = {name: torch.as_tensor(value, dtype=torch.float64).reshape(-1) for name, value in values.items()}
        count = max(len(column) for column in columns.values())
        if not group.per_agent and count != 1:
            raise ValueError(f"metric group '{group.name}' holds one value per run, got {count}")
        rows: list[tuple[int | None, dict[str, float]]] = []
        for index in range(count):
            row = {name: float(column[index] if len(column) > 1 else column[0]) for name, column in columns.items()}
            missing = [name for name, value in row.items() if math.isnan(value)]
            if len(missing) == len(row):
                continue
            bad = missing + [name for name, value in row.items() if math.isinf(value)]
            if bad:
                raise ValueError(f"metric group '{group.name}' at step {step}: non-finite {sorted(bad)}")
            rows.append((index if group.per_agent else None, row))
        return cls(group, step, tuple(rows))


class Sink(Protocol):
    """Where the training curves go: the CSV log, TensorBoard, MLflow."""

    def emit(self, records: Sequence[Record], histograms: Sequence[torch.Tensor]) -> None:
        """Record a point: every group's rows at one step, and each agent's actions since the previous point."""

    def close(self) -> None:
        """Write out what is pending."""
