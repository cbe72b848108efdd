"""Soak benchmark: a long reservoir training run, sampling resident memory over time.

Usage: ``.venv/bin/python -m bench.soak [--frames 1000000]`` (``make soak``; about 12 minutes).

Trains the default reservoir agent for ``--frames`` frames in a subprocess, samples its
resident set size (``VmRSS``) every second together with the frames collected so far,
and writes ``bench/results/soak.json`` and ``soak.png``. Once the replay buffer is full,
memory must stop growing: the report gives the growth from the buffer-full point to the
end and the slope of a line fitted to the second half of the run.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from bench.common import REPO, RESULTS, machine, write_results


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def frames_so_far(log: Path) -> int:
    try:
        with log.open() as file:
            rows = list(csv.reader(file))
        return int(rows[-1][0]) if len(rows) > 1 else 0
    except (OSError, ValueError, IndexError):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="reservoir-dqn-soak-"))
    shutil.copy(REPO / "params.yaml", folder / "params.yaml")
    params = yaml.safe_load((folder / "params.yaml").read_text())
    buffer_size = int(params["dqn"]["buffer_size"])
    overrides = [
        f"train.total_frames={args.frames}",
        "tracking.enabled=false",
        "tracking.tensorboard=false",
        "train.checkpoint_interval_frames=100000",
        "train.eval_interval_frames=10000",  # memory is the point here, not a fine learning curve
        "train.seeds=1",
    ]
    command = [
        sys.executable,
        "-m",
        "reservoir_dqn.commands.cli",
        "train",
        *[a for o in overrides for a in ("--set", o)],
    ]
    samples: list[tuple[float, int, float]] = []
    started = time.perf_counter()
    with (folder / "train.out").open("wb") as output:
        process = subprocess.Popen(
            command, cwd=folder, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, "DVC_NO_ANALYTICS": "1"}
        )
        while process.poll() is None:
            memory = rss_mb(process.pid)
            if memory is not None:
                frames = frames_so_far(folder / "logs/train/progress.csv")
                samples.append((time.perf_counter() - started, frames, memory))
            time.sleep(1.0)
    if process.returncode != 0:
        raise SystemExit(f"training failed: {(folder / 'train.out').read_text()[-2000:]}")
    times, frames, memory = (np.array(column, dtype=float) for column in zip(*samples, strict=True))
    full = frames >= buffer_size
    after = memory[full]
    half = frames >= frames.max() / 2
    slope = float(np.polyfit(frames[half], memory[half], 1)[0]) * 100_000 if half.sum() > 2 else float("nan")
    report = {
        "machine": machine(),
        "frames": args.frames,
        "wall_s": float(times[-1]),
        "buffer_size": buffer_size,
        "peak_rss_mb": float(memory.max()),
        "rss_when_buffer_full_mb": float(after[0]) if len(after) else None,
        "rss_at_end_mb": float(memory[-1]),
        "growth_after_buffer_full_mb": float(after.max() - after[0]) if len(after) else None,
        "slope_second_half_mb_per_100k_frames": slope,
        "samples": [{"t": t, "frames": int(f), "rss_mb": m} for t, f, m in samples],
    }
    write_results("soak", report)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(9, 4), layout="constrained")
    ax.plot(frames, memory)
    ax.axvline(buffer_size, color="gray", linestyle="--", label="replay buffer full")
    ax.set(
        title=f"Resident memory over a {args.frames:,}-frame reservoir run",
        xlabel="frames collected",
        ylabel="RSS (MiB)",
    )
    ax.legend()
    figure.savefig(RESULTS / "soak.png", dpi=110)
    shutil.rmtree(folder, ignore_errors=True)
    print({key: value for key, value in report.items() if key != "samples"})


if __name__ == "__main__":
    main()
