"""Real servers for the tests: an MLflow tracking server, PostgreSQL and an SSH server, on 127.0.0.1.

PostgreSQL and OpenSSH come from Debian's packages, which the set-up installs
(``make system``, run by ``make test``); where they are missing the tests that need them
are skipped with the reason.
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


def serves(url: str) -> bool:
    """Whether ``url`` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


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
            "1",
            "--backend-store-uri",
            self.backend,
            "--artifacts-destination",
            str(self.folder / "artifacts"),
        ]
        log = (self.folder / "server.log").open("ab")
        # No job runner: its three Huey consumer processes serve GenAI jobs these tests never submit.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
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
    """The folder of PostgreSQL's server binaries; or why there is none."""
    found = _postgres_bin()
    return (found, "") if found is not None else (None, "PostgreSQL is not installed (make system installs it)")


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with a database ``mlflow`` (trust authentication)."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.port = free_port()
        # A world-traversable folder: as root, the server runs as the 'postgres' user.
        self.folder = Path(tempfile.mkdtemp(prefix="reservoir-dqn-pg-"))
        self.folder.chmod(0o755)
        self.uri = f"postgresql+psycopg2://mlflow@127.0.0.1:{self.port}/mlflow"
        self.url = f"postgresql://mlflow@127.0.0.1:{self.port}"  # + /<database>

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
        self.create_database("mlflow")
        return self

    def create_database(self, name: str) -> str:
        """A new database on this server; its SQLAlchemy URL."""
        self._run(str(self.binaries / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "mlflow", name)
        return f"{self.url}/{name}"

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


class SshServer:
    """OpenSSH's sshd on 127.0.0.1, accepting one generated key for the current user (a DVC remote's host)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.client_key = folder / "client_key"
        self.user = (
            os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SshServer:
        sshd = Path("/usr/sbin/sshd")
        if not sshd.exists():
            raise FileNotFoundError("OpenSSH's server is not installed (make system installs it)")
        self.folder.mkdir(parents=True, exist_ok=True)
        for key in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.folder / key)], check=True)
        (self.folder / "authorized_keys").write_text((self.folder / "client_key.pub").read_text())
        config = self.folder / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.folder / 'host_key'}\n"
            f"AuthorizedKeysFile {self.folder / 'authorized_keys'}\nPasswordAuthentication no\n"
            f"KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {self.folder / 'sshd.pid'}\n"
            "Subsystem sftp internal-sftp\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
        log = (self.folder / "sshd.log").open("ab")
        self.process = subprocess.Popen(
            [str(sshd), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.2)
        raise RuntimeError(f"sshd did not listen on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
