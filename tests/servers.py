"""Real servers for the tests: an MLflow tracking server and a PostgreSQL database, on 127.0.0.1.

PostgreSQL comes from Debian's packages. When its binaries are missing the set-up installs
them with apt-get (as root); where that is impossible the tests that need it are skipped
with the reason.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_healthy(uri: str, process: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server at {uri} exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the server at {uri} did not become healthy in {timeout:.0f} s")


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with its own backend store and proxied artifacts; restartable."""

    def __init__(self, folder: Path, backend: str | None = None, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.backend = backend or f"sqlite:///{folder}/server.db"
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> MlflowServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "2",
            "--backend-store-uri",
            self.backend,
            "--artifacts-destination",
            str(self.folder / "artifacts"),
        ]
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_healthy(self.uri, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 9)  # the whole group: uvicorn workers too
            self.process.wait(timeout=30)
        self.process = None


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def postgres_binaries() -> tuple[Path | None, str]:
    """The folder of PostgreSQL's server binaries, installing Debian's package if needed; or why not."""
    found = _postgres_bin()
    if found is not None:
        return found, ""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, "PostgreSQL is not installed and cannot be installed here (needs root and apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
    result = subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], env=env, capture_output=True, text=True)
    found = _postgres_bin()
    if found is None:
        return None, f"apt-get install postgresql failed: {(result.stderr or result.stdout).strip()[-200:]}"
    return found, ""


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with a database ``mlflow`` (trust authentication)."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.port = free_port()
        # A world-traversable folder: as root, the server runs as the 'postgres' user.
        self.folder = Path(tempfile.mkdtemp(prefix="reservoir-dqn-pg-"))
        self.folder.chmod(0o755)
        self.uri = f"postgresql+psycopg2://mlflow@127.0.0.1:{self.port}/mlflow"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, text=True)

    def start(self) -> PostgresServer:
        data = self.folder / "data"
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        self._run(str(self.binaries / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8")
        self._run(
            str(self.binaries / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.folder / "server.log"),
            "-w",
            "start",
            "-o",
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1",
        )
        self._run(str(self.binaries / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "mlflow", "mlflow")
        return self

    def stop(self) -> None:
        subprocess.run(
            [
                *(["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []),
                str(self.binaries / "pg_ctl"),
                "-D",
                str(self.folder / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
        )
        shutil.rmtree(self.folder, ignore_errors=True)
