"""The one place metrics are emitted: a :class:`Tracker` fans out to every sink.

Metric names carry namespaces (``train/loss``, ``episode/return_mean``, ``eval/...``) and
the step is always the number of environment frames collected.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol


class MetricSink(Protocol):
    """Something that records metrics against a step."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class CsvLog:
    """The training log: one CSV row per call, ``frames`` first, a fixed set of columns.

    Later stages plot it and DVC renders it with ``dvc plots``. On resume the rows written
    after the checkpoint are dropped, so the file matches an uninterrupted run's.

    :param path: the CSV file.
    :param columns: metric names, in column order; a metric missing from a row stays empty.
    :param resume_from: keep existing rows up to and including this step; ``None`` starts a new file.
    """

    def __init__(self, path: Path, columns: Sequence[str], resume_from: int | None = None) -> None:
        self.path = path
        self.columns = ["frames", *columns]
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = self._rows_up_to(resume_from) if resume_from is not None else []
        self._file = path.open("w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="ignore")
        self._writer.writeheader()
        self._writer.writerows(kept)
        self._file.flush()

    def _rows_up_to(self, step: int) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            if reader.fieldnames != self.columns:
                return []
            return [row for row in reader if row["frames"] and int(row["frames"]) <= step]

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._writer.writerow({"frames": step, **{key: _format(value) for key, value in metrics.items()}})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _format(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))


class Tracker:
    """Fans every metric out to all sinks; the single emission point of the pipeline."""

    def __init__(self, sinks: Iterable[MetricSink] = ()) -> None:
        self.sinks = list(sinks)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record ``metrics`` (namespaced names to numbers) at ``step`` frames in every sink."""
        for sink in self.sinks:
            sink.log_metrics(metrics, step)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def read_csv_log(path: Path) -> dict[str, list[float]]:
    """Read a training log back as columns of floats (empty cells become NaN)."""
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        return {}
    return {key: [float(row[key]) if row[key] else math.nan for row in rows] for key in rows[0]}
