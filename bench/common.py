"""Helpers shared by the benchmarks: the machine, repeated timings, training runs in a subprocess."""

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
QUIET = ["tracking.enabled=false", "tracking.tensorboard=false"]
# Flat Brook (01440000), a hundredth of the Delaware, sized as `record add` sizes it, its drought of record held out.
FLATBROOK = [
    "env.name=reservoir-flatbrook",
    "env.reservoir.record.column=01440000",
    "env.reservoir.record.last_year=null",
    "env.reservoir.record.held_out=[1961,1972]",
    "env.reservoir.unit_hm3=1.04",
    "env.reservoir.weight_energy=9.62",
]


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import gymnasium
    import mlflow
    import optuna
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
        "optuna": optuna.__version__,
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
class Run:
    """One training (and optionally evaluation) in a fresh folder, each stage in its own process."""

    train: dict[str, Any]  # metrics/train.json
    eval: dict[str, Any] | None  # metrics/eval.json
    wall_s: float  # the train process, start to exit
    peak_rss_mb: float  # of the train process


def run_pipeline(overrides: Sequence[str], evaluate: bool = True) -> Run:
    """Train (and evaluate) with the repository's params.yaml plus ``overrides``, as a user runs the stages.

    Measures the train process's wall time and peak resident memory (``ru_maxrss``).
    """
    folder = Path(tempfile.mkdtemp(prefix="reservoir-dqn-bench-"))
    shutil.copy(REPO / "params.yaml", folder / "params.yaml")
    (folder / "data").symlink_to(REPO / "data")  # the records a reservoir's params name
    sets = [argument for override in overrides for argument in ("--set", override)]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    try:
        started = time.perf_counter()
        with (folder / "train.out").open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "reservoir_dqn.commands.cli", "train", *sets],
                cwd=folder,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
            _, status, usage = os.wait4(process.pid, 0)  # the resource usage of this process alone
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"training failed: {(folder / 'train.out').read_text()[-2000:]}")
        evaluation = None
        if evaluate:
            subprocess.run(
                [sys.executable, "-m", "reservoir_dqn.commands.cli", "evaluate", *sets],
                cwd=folder,
                env=env,
                check=True,
                capture_output=True,
            )
            evaluation = json.loads((folder / "metrics/eval.json").read_text())
        train = json.loads((folder / "metrics/train.json").read_text())
        return Run(train, evaluation, wall, usage.ru_maxrss / 1024)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
