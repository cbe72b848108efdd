"""A real DVC project for the tests: a copy of this repository, made a git repository, tiny budget."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from filelock import FileLock

from tests.conftest import copy_repo, wait_for, write_params

VENV_BIN = str(Path(sys.executable).parent)
OUTPUTS = ("models", "logs", "metrics", "plots", "checkpoints", "mlflow.db", "mlartifacts", "runs", "dvc.lock")

# The baseline's params on top of the tiny budget: tracking on, as a user has it; a champion
# budget this run meets (so the README's `models:/...@champion` finds one); a tuning study of
# three short trials; a replay warm-up as large as the largest batch size a trial may draw, so
# that the best trial's params are valid in the pipeline too.
BASELINE = {
    "tracking.enabled": True,
    "tracking.tensorboard": True,
    "tracking.champion_budget.reservoir.total_frames": 800,
    "tracking.champion_budget.reservoir.seeds": 2,
    "tune.trials": 3,
    "tune.startup_trials": 1,
    "train.min_replay_size": 256,
    "tune.overrides": ["train.total_frames=800", "train.seeds=2"],
}


def clean_env(repo: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment a user's shell gives DVC: no activated venv, no leaked DVC/MLflow state.

    The repository's ``.venv`` links to this one, whose package is installed in editable mode
    from *this* checkout; ``PYTHONPATH`` makes the stages import the copy's own ``src``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(part for part in env.get("PATH", "").split(os.pathsep) if part != VENV_BIN)
    env["DVC_NO_ANALYTICS"] = "1"
    if repo is not None:
        env["PYTHONPATH"] = str(repo / "src")
    return {**env, **extra}


def run(
    repo: Path, *command: str, check: bool = True, timeout: int = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in ``repo``; its output is captured in files, not pipes.

    ``dvc queue start`` leaves workers behind that inherit its output: read through pipes,
    the output would only end when the last of them exits (an idle one hung a run for 10 minutes).
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        status = subprocess.run(
            command, cwd=repo, env=env or clean_env(repo), stdout=out, stderr=err, text=True, timeout=timeout
        ).returncode
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(command, status, out.read(), err.read())
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def dvc(repo: Path, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return run(repo, sys.executable, "-m", "dvc", *args, **kwargs)


def commit(repo: Path, message: str) -> None:
    run(repo, "git", "add", "-A")
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


# `dvc queue status` takes about 0.6 s of CPU: polled every 3 s it took a fifth of a core
# from the experiments it waits for.
QUEUE_POLL_S = 10.0


def run_queue(repo: Path, jobs: int, timeout: float) -> str:
    """``dvc queue start -j jobs``, wait until no experiment is queued or running; the final ``dvc queue status``.

    DVC's queue starts its workers as ``dvc`` found on PATH, so the README's command puts the
    project's ``.venv/bin`` first on PATH for that one command, and so does this.
    """
    env = clean_env(repo)
    env["PATH"] = f"{repo / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
    dvc(repo, "queue", "start", "-j", str(jobs), env=env)

    def finished() -> bool:
        # DVC can fail to read a task's state file while a worker writes it ("Expecting value"): ask again.
        status = dvc(repo, "queue", "status", check=False)
        return status.returncode == 0 and "Queued" not in status.stdout and "Running" not in status.stdout

    done = wait_for(finished, timeout=timeout, interval=QUEUE_POLL_S)
    status = dvc(repo, "queue", "status").stdout
    assert done, f"the queue did not finish in {timeout:.0f} s:\n{status}"
    return status


def queue_logs(repo: Path, status: str) -> str:
    """The output of every task that ``dvc queue status`` lists."""
    return "".join(
        dvc(repo, "queue", "logs", line.split()[0], check=False).stdout
        for line in status.splitlines()[1:]
        if line.strip()
    )


def make_repo(destination: Path, **params: object) -> Path:
    """This project at ``destination`` with the tiny budget (plus ``params``), committed on branch main.

    Its ``.venv`` is this one (a link), as ``make setup`` would have made it, so that
    ``tools/stage`` finds the project's Python without any activated environment.
    """
    root = copy_repo(destination)
    (root / ".venv").symlink_to(Path(VENV_BIN).parent)
    write_params(root / "params.yaml", **params)
    for name in OUTPUTS:
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    run(root, "git", "init", "-q", "-b", "main")
    commit(root, "tiny baseline")
    return root


def setup_prerequisites(root: Path) -> list[str]:
    """The files ``make setup`` rebuilds the .venv after (its stamp's prerequisites in the Makefile)."""
    rule = re.search(r"^\$\(STAMP\):(.*)$", (root / "Makefile").read_text(), flags=re.MULTILINE)
    assert rule is not None, "the Makefile has no $(STAMP) rule"
    return rule[1].split()


def fresh_clone(origin: Path, destination: Path) -> Path:
    """A user's ``git clone`` of ``origin``: what git holds (no DVC cache, MLflow store, models or checkpoints), with
    the ``.venv`` that ``make setup`` makes (a link to this one, as :func:`make_repo`'s).

    git gives every file the clone's time, which would make ``make run`` rebuild the .venv; the files the
    .venv is built from keep the origin's times, as if ``make setup`` had run after the clone.
    """
    run(origin.parent, "git", "clone", "-q", str(origin), str(destination))
    (destination / ".venv").symlink_to(Path(VENV_BIN).parent)
    for name in setup_prerequisites(origin):
        times = (origin / name).stat()
        os.utime(destination / name, ns=(times.st_atime_ns, times.st_mtime_ns))
    return destination


def baseline_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's fresh clone of the tiny project after the README's first command (`make run`), and nothing more.

    Its origin is what the project's main holds: the tiny params with the results of their `make run` committed, as
    the maintainers commit the default params' results. The clone holds what git gives a user; its `make run`
    rebuilds the models, registers its own model version and leaves its results uncommitted, as a user's are (new
    MLflow run ids and times: ``git status`` shows them and dvc.lock staged). Nothing is committed after it: a
    command the README gives next must work in exactly this state.

    Built once per test session: under pytest-xdist the first worker builds it under a file
    lock in the session's shared temporary folder and the others use it. Tests work on a
    ``clone_repo`` of it, never on it.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    shared = tmp_path_factory.getbasetemp().parent if worker else tmp_path_factory.getbasetemp()
    folder = shared / "baseline"
    root, built = folder / "repo", folder / "built"
    with FileLock(str(shared / "baseline.lock")):
        if not built.exists():
            if folder.exists():
                shutil.rmtree(folder)  # a build that failed half-way
            origin = make_repo(folder / "origin", **BASELINE)
            setup = run(origin, "make", "--question", "setup", check=False)
            assert setup.returncode == 0, "the .venv is older than requirements.lock: run `make setup` first"
            run(origin, "make", "run")
            commit(origin, "the tiny baseline's results, as main holds the default's")
            fresh_clone(origin, root)
            assert run(root, "make", "--question", "setup", check=False).returncode == 0
            run(root, "make", "run")
            built.touch()
    return root


def clone_repo(source: Path, destination: Path) -> Path:
    """A full copy of a test repository (git history, DVC cache and outputs included)."""
    shutil.copytree(source, destination, symlinks=True)
    return destination
