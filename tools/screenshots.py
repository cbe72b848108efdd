"""Screenshots of every view a user opens, taken with headless Chromium (Debian's ``chromium``).

Starts the MLflow UI (on the embedded store) and TensorBoard on 127.0.0.1, renders
``dvc plots show`` (and ``dvc plots diff REV`` with ``--diff REV``), and writes a PNG per
page into ``--out`` (outside the repository by default). Not a test: it is how a person
checks what the views look like. Run it in the repository after ``dvc repro``:

    .venv/bin/python tools/screenshots.py [--diff main] [--out /tmp/reservoir-dqn-screenshots]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server(command: list[str], url: str) -> Iterator[str]:
    """Run a server until the block ends; yield its URL once it answers."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"{command[0]} did not answer at {url}") from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def screenshot(url: str, path: Path, size: tuple[int, int] = (1600, 1000), wait_ms: int = 12_000) -> None:
    """Load ``url`` in headless Chromium, let its scripts run for ``wait_ms`` of virtual time, save a PNG."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                "chromium",
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={size[0]},{size[1]}",
                f"--virtual-time-budget={wait_ms}",
                f"--screenshot={path}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    print(f"{path}  <-  {url}")


def mlflow_pages(client: MlflowClient, base: str) -> dict[str, str]:
    """The runs table of each experiment, the comparison of its two newest parent runs, and the registry."""
    pages = {}
    for experiment in client.search_experiments():
        if experiment.name == "Default":
            continue
        slug = experiment.name.replace("/", "_")
        pages[f"mlflow-{slug}-runs"] = f"{base}/#/experiments/{experiment.experiment_id}/runs"
        parents = client.search_runs(
            [experiment.experiment_id], "tags.run_kind = 'pipeline'", order_by=["attributes.start_time DESC"]
        )[:2]
        if len(parents) == 2:
            runs = urllib.parse.quote(json.dumps([run.info.run_id for run in parents]))
            experiments = urllib.parse.quote(json.dumps([experiment.experiment_id]))
            pages[f"mlflow-{slug}-compare"] = f"{base}/#/compare-runs?runs={runs}&experiments={experiments}"
        if parents:
            run = parents[0].info
            pages[f"mlflow-{slug}-run"] = f"{base}/#/experiments/{experiment.experiment_id}/runs/{run.run_id}"
    pages["mlflow-models"] = f"{base}/#/models"
    return pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "reservoir-dqn-screenshots")
    parser.add_argument("--diff", metavar="REV", help="also render `dvc plots diff REV`")
    args = parser.parse_args()
    if shutil.which("chromium") is None:
        raise SystemExit("chromium is not installed (Debian: apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    pages_dir = args.out / "dvc"
    pages_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([BIN / "dvc", "plots", "show", "--out", pages_dir / "show"], cwd=ROOT, check=True)
    screenshot((pages_dir / "show" / "index.html").as_uri(), args.out / "dvc-plots-show.png", (1500, 2300))
    if args.diff:
        subprocess.run([BIN / "dvc", "plots", "diff", args.diff, "--out", pages_dir / "diff"], cwd=ROOT, check=True)
        screenshot((pages_dir / "diff" / "index.html").as_uri(), args.out / "dvc-plots-diff.png", (1500, 2300))
    store = f"sqlite:///{ROOT / 'mlflow.db'}"
    port = free_port()
    with server(
        [str(BIN / "mlflow"), "ui", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port)],
        f"http://127.0.0.1:{port}/health",
    ) as health:
        base = health.removesuffix("/health")
        for name, url in mlflow_pages(MlflowClient(store), base).items():
            screenshot(url, args.out / f"{name}.png")
    port = free_port()
    with server(
        [str(BIN / "tensorboard"), "--logdir", "runs", "--host", "127.0.0.1", "--port", str(port)],
        f"http://127.0.0.1:{port}/",
    ) as base:
        screenshot(f"{base}#timeseries", args.out / "tensorboard-scalars.png", wait_ms=20_000)
        screenshot(f"{base}#hparams", args.out / "tensorboard-hparams.png", wait_ms=20_000)


if __name__ == "__main__":
    main()
