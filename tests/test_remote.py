"""Models and figures on a DVC remote: a teammate's `dvc pull` gets what `dvc push` sent, over a folder or SSH."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.dvc_repo import baseline_repo, clone_repo, commit, dvc, run
from tests.servers import SshServer

pytestmark = pytest.mark.slow
SHARED = ("models/model.pt", "models/agents/final.pt", "models/agents/best.pt", "plots/training_curves.png")


def _digests(repo: Path) -> dict[str, str]:
    return {name: hashlib.sha256((repo / name).read_bytes()).hexdigest() for name in SHARED}


def _teammate(origin: Path, folder: Path) -> Path:
    """A fresh `git clone` of the project, set up as `make setup` would (its .venv)."""
    run(origin.parent, "git", "clone", "-q", str(origin), str(folder))
    (folder / ".venv").symlink_to((origin / ".venv").resolve())
    return folder


@pytest.fixture
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny project as a user has it after `make run` on a fresh clone (each test works on a copy)."""
    return baseline_repo(tmp_path_factory)


def _push_then_pull(origin: Path, remote: list[str], tmp_path: Path) -> None:
    dvc(origin, "remote", "add", "--default", "team", *remote[:1])
    for option in remote[1:]:
        dvc(origin, "remote", "modify", "team", *option.split("=", 1))
    commit(origin, "results, and the team's remote")
    pushed = dvc(origin, "push")
    assert "pushed" in pushed.stdout + pushed.stderr
    mate = _teammate(origin, tmp_path / "teammate")
    assert not (mate / "models/model.pt").exists()  # in git: only the pointers (dvc.lock)
    dvc(mate, "pull")
    assert _digests(mate) == _digests(origin)
    status = dvc(mate, "status")
    assert "up to date" in status.stdout  # the pulled outputs are exactly what dvc.lock records


def test_push_and_pull_through_a_folder_remote(reproduced: Path, tmp_path: Path) -> None:
    origin = clone_repo(reproduced, tmp_path / "origin")
    _push_then_pull(origin, [str(tmp_path / "remote")], tmp_path)


def test_push_and_pull_through_an_ssh_remote(reproduced: Path, tmp_path: Path) -> None:
    try:
        server = SshServer(tmp_path / "sshd").start()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    try:
        origin = clone_repo(reproduced, tmp_path / "origin")
        url = f"ssh://{server.user}@127.0.0.1:{server.port}{tmp_path / 'ssh-remote'}"
        _push_then_pull(origin, [url, f"keyfile={server.client_key}"], tmp_path)
    finally:
        server.stop()
