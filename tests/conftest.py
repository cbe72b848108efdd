"""Shared fixtures: a project folder with a tiny-budget params.yaml, and helpers to run stages."""

from __future__ import annotations

import gc

# Importing torch, tensordict, MLflow, DVC and Optuna makes over half a million long-lived objects;
# collecting garbage while they are made, and traversing them in every later full collection,
# cost each test process about a fifth of its CPU. Collection resumes, the imports frozen,
# once the tests are collected (pytest_runtestloop), as src/reservoir_dqn/common/process.py
# does for a command.
gc.disable()

import hashlib
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import torch
import yaml
from dvc.utils.serialize import modify_yaml

from reservoir_dqn.agent import load_model
from reservoir_dqn.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]

# Overrides that shrink every budget so that a whole train + evaluate takes seconds.
TINY = {
    "env.num_envs": 4,
    "dqn.hidden_sizes": [32, 32],
    "dqn.batch_size": 32,
    "dqn.buffer_size": 2000,
    "dqn.eps_decay_frames": 400,
    "dqn.lr_decay_frames": 800,
    "dqn.target_update_interval": 20,
    "train.seeds": 2,
    "train.total_frames": 800,
    "train.frames_per_batch": 40,
    "train.min_replay_size": 64,
    "train.updates_per_batch": 2,
    "train.eval_interval_frames": 400,
    "train.eval_episodes": 2,
    "train.checkpoint_interval_frames": 200,
    "evaluate.episodes": 3,
    "evaluate.trajectory_episodes": 1,
    # Most tests leave tracking out; tests/test_tracking.py turns it on against real stores.
    "tracking.enabled": False,
    "tracking.tensorboard": False,
    "tracking.log_interval_frames": 40,  # a point per batch
}


def dotted(params: dict, key: str) -> tuple[dict, str]:
    """The mapping that holds a dotted params key (``dqn.gamma``), and the key's last part."""
    *parents, leaf = key.split(".")
    for part in parents:
        params = params[part]
    return params, leaf


def tiny_params(**overrides: object) -> dict:
    """The repository's params.yaml with the TINY budget and ``overrides`` (dotted keys) applied."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in {**TINY, **overrides}.items():
        node, leaf = dotted(params, key)
        node[leaf] = value
    return params


@pytest.fixture(autouse=True)
def _profiles_kept() -> Iterator[None]:
    """The environment registry as the package left it: what a test registers (or first asks for) goes after it."""
    from reservoir_dqn.envs import PROFILES

    saved = dict(PROFILES)
    yield
    PROFILES.clear()
    PROFILES.update(saved)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder holding a tiny-budget params.yaml; the test runs inside it."""
    write_params(tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tiny_config(project: Path) -> Config:
    """The validated tiny configuration of the ``project`` fixture."""
    return load_config(project / "params.yaml")


def training_json(**fields: object) -> dict:
    """A hand-made, complete ``metrics/train.json`` (one agent, 800 frames), with ``fields`` replaced."""
    from reservoir_dqn.training.summary import Training

    agent = {
        "seed_index": 0,
        "final_validation_return": 1.0,
        "final_validation_score": 0.9,
        "best_validation_return": 1.0,
        "best_validation_score": 0.9,
        "best_validation_frames": 800,
        "stopped_at_frames": None,
        "stopped_after_seconds": None,
        "solved_at_frames": None,
        "solved_after_seconds": None,
    }
    data = {
        "env": "reservoir",
        "seeds": 1,
        "frames": 800,
        "updates": 100,
        "train_time_s": 1.0,
        "validation_time_s": 0.1,
        "frames_per_second": 800.0,
        "resumed_from_frames": 0,
        "exact_resume": True,
        "resumed_without_buffer_at_frames": [],
        "resumed_at_episode_boundary_at_frames": [],
        "solved_return": None,
        "shipped_agent": 0,
        "shipped_network": "final",
        "validation_reference": {"random_return": 0.0, "optimum_return": 1.0},
        "agents": [agent],
        "run_ids": {},
    } | fields
    return Training.from_json(data).to_json()


def evaluation_json(
    scores: Sequence[float] = (0.9, 0.92),
    env: str = "reservoir",
    settings: dict | None = None,
    reliability: Sequence[float] | None = None,
) -> dict:
    """A hand-made ``metrics/eval.json`` of the reservoir as the evaluate stage writes it, with these scores.

    :param settings: the environment's settings its conditions record (default: the name alone).
    :param reliability: each seed's reliability (default: 0.99 each), its interval clipped to [0, 1] as evaluate's.
    """
    from reservoir_dqn.evaluation.results import Evaluation
    from reservoir_dqn.evaluation.scoring import Reference

    reliabilities = reliability or [0.99] * len(scores)
    rows = [
        {"score": s, "return": 394.1 + s * (2019.4 - 394.1), "reliability": r}
        for s, r in zip(scores, reliabilities, strict=True)
    ]
    return Evaluation.assemble(
        env=env,
        first_seed=2_000_000_000,
        reference=Reference(394.1, 2019.4),
        optimum_label="the SDP optimum",
        headline=("score", "return", "reliability"),
        per_agent={"final": rows, "best": rows},
        baselines={"sdp": {"score": 1.0}},
        shipped=(0, "final"),
        episodes=100,
        settings=settings or {"env.name": env},
        ranges={"reliability": (0.0, 1.0)},
    ).to_json()


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    """The Q-network weights of a model file, to compare two trainings bit for bit."""
    return load_model(path)[0].state_dict()


def wait_for(condition: Callable[[], object], timeout: float = 300.0, interval: float = 0.01) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def run_command(
    capsys: pytest.CaptureFixture[str], main: Callable[[list[str]], int], *args: str
) -> tuple[int, str, str]:
    """A command's ``main`` run in this process on the repository's params.yaml (the imports are paid once): its
    status, output and errors. The console scripts themselves are run by tests/test_first_hour.py."""
    status = main([*args, "--params", str(REPO / "params.yaml")])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def write_params(path: Path, **overrides: object) -> None:
    """The repository's params.yaml, its layout and comments kept, with TINY and ``overrides`` set.

    Values are set with DVC's own YAML round trip (what ``dvc exp run -S`` does), so every
    test project's params.yaml looks like the real one.
    """
    shutil.copyfile(REPO / "params.yaml", path)
    with modify_yaml(path) as params:
        for key, value in {**TINY, **overrides}.items():
            node, leaf = dotted(params, key)
            node[leaf] = value


def tree_digest(root: Path, exclude: Sequence[str] = ()) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (relative path -> digest), to prove nothing changed."""
    digests = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not any(relative.startswith(prefix) for prefix in exclude):
            digests[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def copy_repo(destination: Path) -> Path:
    """Copy the tracked project files (not .venv or outputs) to ``destination``."""
    ignore = shutil.ignore_patterns(
        ".venv",
        ".git",
        "__pycache__",
        "*.egg-info",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".hypothesis",
        "mlflow.db",
        "mlartifacts",
        "runs",
        "checkpoints",
        "dvc_plots",
        "dvc_plots_diff",
        "optuna.db",
        ".mlflow-outbox",
    )

    def ignore_state(folder: str, names: list[str]) -> set[str]:
        # DVC's own state (cache, queue, experiment temp dirs) belongs to this checkout's runs.
        local = {"tmp", "cache"} if Path(folder) == REPO / ".dvc" else set()
        return set(ignore(folder, names)) | (local & set(names))

    shutil.copytree(REPO, destination, ignore=ignore_state)
    return destination


# The longest tests (a minute or more on 2 cores with 3 workers), first. `make test` runs
# pytest-xdist with --maxschedchunk 1, which starts worker k on items 2k and 2k + 1: pairs of
# a long and a shorter test, and in the first of each pair only one test that needs the
# shared baseline project (tests.dvc_repo.baseline_repo), so that one worker builds it while
# the others work. A scheduling hint only: tests not named here follow, slow before fast.
LONGEST = (
    "test_a_sweep_goes_through_the_queue",
    "test_three_parallel_experiments",
    "test_sigkill_at_random_points",
    "test_the_best_trial_goes_through_the_pipeline",
    "test_tracking_server_lost_mid_run",
    "test_the_stages_run_one_by_one",
    "test_a_change_is_tried_and_compared",
    "test_a_killed_workers_trial_is_retried",
    "test_compare_passes_unchanged",
    "test_two_workers_share_one_study",
    "test_two_workspace_experiments_at_once",
)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Every test module is imported (xdist's controller imports none): freeze the imports, collect again."""
    gc.freeze()
    gc.enable()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        for index, name in enumerate(LONGEST):
            if item.name.startswith(name):
                return index
        return len(LONGEST) + (0 if item.get_closest_marker("slow") else 1)

    items.sort(key=rank)
