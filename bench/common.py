"""Helpers shared by the benchmarks: the machine, repeated timings, pipeline runs in a subprocess."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reservoir_dqn.config import load_config

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import gymnasium
    import mlflow
    import tensordict
    import torch
    import torchrl

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": load_config(REPO / "params.yaml").train.torch_threads or os.cpu_count(),  # training's
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchrl": torchrl.__version__,
        "tensordict": tensordict.__version__,
        "gymnasium": gymnasium.__version__,
        "mlflow": mlflow.__version__,
        "cuda": torch.cuda.is_available(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and count of repeated measurements (never a single timing alone)."""
    data = [float(v) for v in values]
    return {"median": statistics.median(data), "min": min(data), "max": max(data), "n": len(data)}


def repeat(measure: Callable[[], float], times: int) -> dict[str, float]:
    return spread([measure() for _ in range(times)])


@dataclass
class PipelineRun:
    """One training (and optionally evaluation) in a fresh folder, in its own process."""

    folder: Path
    train: dict[str, Any]
    eval: dict[str, Any] | None
    wall_s: float
    peak_rss_mb: float
    log: list[dict[str, str]]


def run_pipeline(overrides: Sequence[str], evaluate: bool = True, keep: Path | None = None) -> PipelineRun:
    """Train (and evaluate) with the repository's params.yaml plus ``overrides``, as a user would.

    Runs ``reservoir-dqn train`` in a subprocess and measures its wall time and peak resident
    memory (``ru_maxrss`` of that process).
    """
    folder = Path(tempfile.mkdtemp(prefix="reservoir-dqn-bench-"))
    shutil.copy(REPO / "params.yaml", folder / "params.yaml")
    sets = [argument for override in overrides for argument in ("--set", override)]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    started = time.perf_counter()
    with (folder / "train.out").open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "reservoir_dqn.cli", "train", *sets],
            cwd=folder,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(process.pid, 0)  # the resource usage of this process alone
    wall = time.perf_counter() - started
    peak = usage.ru_maxrss / 1024  # KiB -> MiB
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"training failed: {(folder / 'train.out').read_text()[-2000:]}")
    evaluation = None
    if evaluate:
        subprocess.run(
            [sys.executable, "-m", "reservoir_dqn.cli", "evaluate", *sets],
            cwd=folder,
            env=env,
            check=True,
            capture_output=True,
        )
        evaluation = json.loads((folder / "metrics/eval.json").read_text())
    import csv

    with (folder / "logs/train_log.csv").open() as file:
        log = list(csv.DictReader(file))
    result = PipelineRun(folder, json.loads((folder / "metrics/train.json").read_text()), evaluation, wall, peak, log)
    if keep is None:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
