"""Screenshots of every view a user opens, taken with headless Chromium (Debian's ``chromium``).

Starts the MLflow UI (on the embedded store) and TensorBoard on 127.0.0.1, renders
``dvc plots show`` (and ``dvc plots diff REV`` with ``--diff REV``), and writes a PNG per
page into ``--out`` (outside the repository by default). Not a test: it is how a person
checks what the views look like. Run it in the repository after ``dvc repro`` and a
``dvc exp run`` of a change:

    .venv/bin/python tools/screenshots.py [--diff main] [--out /tmp/reservoir-dqn-screenshots]

Chromium is driven over its DevTools protocol (with aiohttp, which DVC installs), so that a
page can be shot the way a user sees it after closing what MLflow opens on a first visit
(its "Assistant" side panel and announcement dialogs): a fresh browser profile would show
them on every page.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
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
from typing import Any

import aiohttp
from mlflow import MlflowClient

from reservoir_dqn.tracking.views import key_view_link

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


# Run in the page before the shot: close MLflow's Assistant panel and first-visit dialogs, as a user would.
DISMISS = """
(() => {
  const closed = [];
  for (const button of document.querySelectorAll('button')) {
    const id = button.getAttribute('data-component-id') || '';
    const label = (button.getAttribute('aria-label') || '').toLowerCase();
    const inDialog = button.closest('[role="dialog"]') !== null;
    if (id.startsWith('mlflow.assistant.chat_panel.close') || (inDialog && label === 'close')) {
      button.click();
      closed.push(id || label);
    }
  }
  return closed.join(', ');
})()
"""


class Browser:
    """One headless Chromium, driven over the DevTools protocol (one page, one websocket)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer (events in between are skipped)."""
        call_id = next(self.ids)
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json(timeout=120)
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    async def shoot(self, url: str, path: Path, size: tuple[int, int], wait_s: float) -> str:
        await self.call(
            "Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1, mobile=False
        )
        await self.call("Page.enable")
        await self.call("Page.navigate", url=url)
        await asyncio.sleep(wait_s)
        closed = await self.call("Runtime.evaluate", expression=DISMISS, returnByValue=True)
        await asyncio.sleep(2)
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))
        return str(closed.get("result", {}).get("value") or "")


async def _screenshot(url: str, path: Path, size: tuple[int, int], wait_s: float) -> str:
    # Chromium's helper processes may still be writing the profile as it exits: leave what they left.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 60
            while not (port_file.exists() and port_file.read_text().strip()):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("chromium did not open its DevTools port")
                await asyncio.sleep(0.2)
            port = int(port_file.read_text().split()[0])
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                    page = next(target for target in await response.json() if target["type"] == "page")
                async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    return await Browser(ws).shoot(url, path, size, wait_s)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def screenshot(url: str, path: Path, size: tuple[int, int] = (1600, 1000), wait_s: float = 10) -> None:
    """Load ``url`` in headless Chromium, let it run ``wait_s`` seconds, close first-visit panels, save a PNG."""
    closed = asyncio.run(_screenshot(url, path, size, wait_s))
    print(f"{path}  <-  {url}" + (f"  (closed: {closed})" if closed else ""))


def mlflow_pages(client: MlflowClient, base: str) -> dict[str, str]:
    """The experiments list; per experiment: its runs table as it opens, the key-metrics view its description
    links to, the comparison of the newest change with the newest baseline, and that change's run; then the
    registry."""
    pages = {"mlflow-experiments": f"{base}/#/experiments"}
    for experiment in client.search_experiments():
        if experiment.name == "Default":
            continue
        slug = experiment.name.replace("/", "_")
        pages[f"mlflow-{slug}-runs"] = f"{base}/#/experiments/{experiment.experiment_id}/runs"
        pages[f"mlflow-{slug}-key-view"] = f"{base}/{key_view_link(experiment.experiment_id)}"
        parents = client.search_runs(
            [experiment.experiment_id], "tags.run_kind = 'pipeline'", order_by=["attributes.start_time DESC"]
        )
        changes = [run for run in parents if run.data.tags.get("changed", "nothing") != "nothing"]
        baselines = [run for run in parents if run.data.tags.get("changed") == "nothing"]
        if changes and baselines:
            runs = urllib.parse.quote(json.dumps([baselines[0].info.run_id, changes[0].info.run_id]))
            experiments = urllib.parse.quote(json.dumps([experiment.experiment_id]))
            pages[f"mlflow-{slug}-compare"] = f"{base}/#/compare-runs?runs={runs}&experiments={experiments}"
        if parents:
            run = (changes or parents)[0].info
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
        for index, (name, url) in enumerate(mlflow_pages(MlflowClient(store), base).items()):
            screenshot(url, args.out / f"{name}.png", wait_s=30 if index == 0 else 10)  # the first load is cold
    port = free_port()
    with server(
        [str(BIN / "tensorboard"), "--logdir", "runs", "--host", "127.0.0.1", "--port", str(port)],
        f"http://127.0.0.1:{port}/",
    ) as base:
        screenshot(f"{base}#timeseries", args.out / "tensorboard-scalars.png", wait_s=15)
        screenshot(f"{base}#hparams", args.out / "tensorboard-hparams.png", wait_s=15)


if __name__ == "__main__":
    main()
