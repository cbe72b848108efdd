"""Bookkeeping under faults: each fault ends in one line and an exit status of the one table, nothing half-written.

The README's fault table names these tests (and the older ones of tests/test_faults.py,
tests/test_checkpoint.py and tests/test_tracking.py); tests/test_readme.py checks that
every test it names exists.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mlflow import MlflowClient
from tensordict import TensorDictBase

from reservoir_dqn.commands import evaluate, train
from reservoir_dqn.commands.exits import Exit
from reservoir_dqn.commands.plumbing import run_stage
from reservoir_dqn.commands.workspace import trained_params
from reservoir_dqn.common.files import OutputSet
from reservoir_dqn.common.process import Terminated
from reservoir_dqn.config import load_config
from reservoir_dqn.training.checkpoints import Checkpointer
from reservoir_dqn.training.curves import Interval
from tests.conftest import training_json, tree_digest, wait_for, write_params
from tests.dvc_repo import baseline_repo, clean_env, clone_repo, dvc, run

TRACKED = {"tracking.enabled": True, "tracking.tensorboard": False}
PREVIOUS = {  # outputs of an earlier run, which a failing stage must leave as they are
    "models/model.pt": b"the previous model",
    "models/agents/final.pt": b"the previous final networks",
    "models/agents/best.pt": b"the previous best networks",
    "logs/train/validation.csv": b"frames,seed,score\n",
    "metrics/train.json": b'{"frames": 1}',
}


def _outputs(root: Path) -> dict[str, str]:
    """The digest of every output (not the tracking store, the checkpoints or the params)."""
    return tree_digest(root, exclude=("mlflow.db", "mlartifacts", ".mlflow", "checkpoints", "params.yaml"))


def _previous_outputs(root: Path) -> dict[str, str]:
    for name, content in PREVIOUS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return _outputs(root)


def _default_signals() -> None:
    """A child's SIGINT as in a terminal: a suite started in the background (``make test &``) ignores it,
    and a child inherits that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """``folder`` cannot be written, even by root (whom permission bits do not stop: the immutable flag does)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root where `chattr +i` is not permitted: no way to make a folder read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_an_output_set_replaces_all_outputs_or_none(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "model.pt", tmp_path / "b" / "folder"
    first.parent.mkdir()
    first.write_text("old model")
    with OutputSet([first, second]) as outputs:
        outputs.path(first).write_text("new model")
        (outputs.path(second) / "x.csv").parent.mkdir(parents=True)
        (outputs.path(second) / "x.csv").write_text("new")
    assert first.read_text() == "new model" and (second / "x.csv").read_text() == "new"

    def fail_half_way() -> None:
        with OutputSet([first, second]) as outputs:
            outputs.path(first).write_text("half")
            raise RuntimeError("the stage failed before its second output")

    with pytest.raises(RuntimeError):
        fail_half_way()
    assert first.read_text() == "new model" and (second / "x.csv").read_text() == "new"
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["a", "b", "folder", "model.pt", "x.csv"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sent", "status", "said"),
    [
        (signal.SIGTERM, Exit.TERMINATED, "terminated (SIGTERM): the newest checkpoint is kept"),
        (signal.SIGINT, Exit.INTERRUPTED, "interrupted: the newest checkpoint is kept"),
    ],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_signal_mid_training_ends_the_runs_killed_keeps_the_checkpoint_and_exits_128_plus_it(
    project: Path, sent: signal.Signals, status: Exit, said: str
) -> None:
    write_params(
        project / "params.yaml",
        **TRACKED,
        **{"train.total_frames": 40000, "train.seeds": 1, "train.eval_interval_frames": 0},
    )
    before = _previous_outputs(project)
    command = [sys.executable, "-m", "reservoir_dqn.commands.cli", "train"]
    process = subprocess.Popen(
        command, cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_default_signals
    )
    assert wait_for(lambda: list((project / "checkpoints").glob("checkpoint-*.torchrl")), timeout=240, interval=0.2)
    process.send_signal(sent)
    _, err = process.communicate(timeout=120)
    assert process.returncode == status == 128 + sent, err.decode()
    last = err.decode().strip().splitlines()[-1]  # after MLflow's notices and the progress bar
    assert last.startswith(said), last
    assert list((project / "checkpoints").glob("checkpoint-*.torchrl"))
    assert _outputs(project) == before
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and {run.info.status for run in runs if "reference_key" not in run.data.tags} == {"KILLED"}


@pytest.mark.parametrize(
    ("sent", "status"),
    [(signal.SIGINT, Exit.INTERRUPTED), (signal.SIGTERM, Exit.TERMINATED)],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_whose_exception_a_library_swallows_still_ends_the_training(
    project: Path, monkeypatch: pytest.MonkeyPatch, sent: signal.Signals, status: Exit
) -> None:
    """A bare ``except`` in a library's callback catches the signal's exception: the loop raises it again."""
    before = _previous_outputs(project)
    original, swallowed = Interval.add_batch, []

    def add_batch_swallowing_a_signal(self: Interval, batch: TensorDictBase) -> None:
        if not swallowed:
            try:
                os.kill(os.getpid(), sent)
                time.sleep(5)  # the handler raises in here
            except BaseException as error:  # noqa: BLE001 - what the library does
                swallowed.append(error)
        original(self, batch)

    monkeypatch.setattr(Interval, "add_batch", add_batch_swallowing_a_signal)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whoever started pytest
    try:
        assert train.main([]) == status
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(swallowed) == 1 and isinstance(swallowed[0], (KeyboardInterrupt, Terminated))
    assert _outputs(project) == before


@pytest.mark.parametrize(
    ("signal_error", "status", "said"),
    [(KeyboardInterrupt, Exit.INTERRUPTED, "interrupted: "), (Terminated, Exit.TERMINATED, "terminated (SIGTERM): ")],
)
def test_a_signal_whose_unwinding_breaks_a_librarys_clean_up_is_still_the_signal(
    capsys, signal_error: type[BaseException], status: Exit, said: str
) -> None:
    """A signal inside a library's context manager whose exit then fails on its own (tensordict's did, on SIGINT)."""

    def stage(argv: object) -> None:
        try:
            raise signal_error()
        except BaseException:  # noqa: BLE001 - what the library's exit did
            raise RuntimeError("Converting a tensordict to boolean value is not permitted") from None

    assert run_stage(stage, []) == status
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(said)


@pytest.mark.slow
def test_a_read_only_metrics_folder_fails_in_one_line_before_any_output_is_replaced(project: Path, capsys) -> None:
    before = _previous_outputs(project)
    with _read_only(project / "metrics"):
        status = train.main([])
    assert status == Exit.FAILED
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("error: ") and "metrics" in line, line
    assert _outputs(project) == before


def test_a_corrupt_mlflow_db_fails_in_one_line_and_is_left_as_it_is(project: Path, capsys) -> None:
    write_params(project / "params.yaml", **TRACKED)
    (project / "mlflow.db").write_bytes(b"this is no database")
    before = _previous_outputs(project)
    assert train.main([]) == Exit.FAILED
    line = _one_line(capsys.readouterr().err)
    assert "mlflow.db is not an SQLite database" in line and "move it aside" in line, line
    assert (project / "mlflow.db").read_bytes() == b"this is no database"
    assert _outputs(project) == before


@pytest.mark.parametrize(
    ("uri", "status", "fragment"),
    [
        ("foo://somewhere", Exit.BAD_INPUT, "unknown scheme 'foo'"),
        ("mlruns", Exit.BAD_INPUT, "file store"),
        ("postgresql://user@127.0.0.1:9/db", Exit.FAILED, "127.0.0.1:9 cannot be reached"),
    ],
)
def test_a_bad_tracking_uri_fails_in_one_line_naming_the_setting(
    project: Path, capsys, uri: str, status: Exit, fragment: str
) -> None:
    write_params(project / "params.yaml", **TRACKED, **{"tracking.connect_timeout_s": 2.0})
    before = _previous_outputs(project)
    assert train.main(["--set", f"tracking.uri={uri}"]) == status
    line = _one_line(capsys.readouterr().err)
    assert fragment in line and "tracking.uri" in line, line
    assert _outputs(project) == before


def test_evaluate_refuses_a_training_made_with_other_parameters(project: Path, capsys) -> None:
    (project / "metrics").mkdir()
    recorded = trained_params(load_config(project / "params.yaml")) | {"env.reservoir.capacity": 30}
    (project / "metrics/train.json").write_text(json.dumps(training_json(params=recorded)))
    before = tree_digest(project)
    assert evaluate.main([]) == Exit.FAILED
    line = _one_line(capsys.readouterr().err)
    assert "env.reservoir.capacity: 30 -> 40" in line and "run the train stage again" in line, line
    assert tree_digest(project) == before


def test_a_training_summary_of_another_layout_fails_in_one_line_naming_the_key(project: Path, capsys) -> None:
    (project / "metrics").mkdir()
    renamed = training_json()
    renamed["shipped"] = renamed.pop("shipped_agent")  # a key renamed by another version
    (project / "metrics/train.json").write_text(json.dumps(renamed))
    before = tree_digest(project)
    assert evaluate.main([]) == Exit.FAILED
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("error: metrics/train.json cannot be read (shipped_agent: field required"), line
    assert "run the train stage again" in line
    assert tree_digest(project) == before


def test_only_the_newest_corrupt_checkpoint_is_kept(tmp_path: Path) -> None:
    checkpointer = Checkpointer(tmp_path, "key", keep=3)
    for frames in (200, 400, 600):
        path = tmp_path / f"checkpoint-{frames:012d}.torchrl"
        path.write_bytes(b"damaged")
        checkpointer.set_aside(path, "damaged")
    assert [path.name for path in tmp_path.iterdir()] == ["checkpoint-000000000600.torchrl.corrupt"]


@pytest.fixture
def repo(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """A copy of the tiny project as a user has it after `make run` on a fresh clone (tests/test_pipeline.py's)."""
    return clone_repo(baseline_repo(tmp_path_factory), tmp_path / "repo")


@pytest.mark.slow
def test_a_failed_workspace_experiment_shows_in_git_status_and_says_how_to_restore(repo: Path) -> None:
    failed = dvc(repo, "exp", "run", "-S", "dqn.gamma=5", check=False)
    assert failed.returncode != 0
    line = next(line for line in failed.stderr.splitlines() if line.startswith("error: params.yaml"))
    assert "dqn.gamma = 5" in line and "`git checkout params.yaml` restores the committed ones" in line, line
    assert run(repo, "git", "status", "--porcelain", "params.yaml").stdout.strip() == "M params.yaml"
    run(repo, "git", "checkout", "params.yaml")
    assert "gamma: 5 " not in (repo / "params.yaml").read_text()


@pytest.mark.slow
def test_two_workspace_experiments_at_once_the_second_is_refused_and_the_first_writes_nothing_mixed(
    repo: Path,
) -> None:
    """DVC refuses the second, after writing its -S value under the first; the first notices and writes nothing."""
    outputs = ("models", "metrics", "logs/train")
    before = {name: tree_digest(repo / name) for name in outputs}
    env = clean_env(repo)
    first = subprocess.Popen(
        [sys.executable, "-m", "dvc", "exp", "run", "-S", "train.total_frames=8000"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # DVC passes the stage's output on
        text=True,
    )
    assert wait_for(lambda: list((repo / "checkpoints").glob("checkpoint-000000001000*")), timeout=240, interval=0.2)
    second = dvc(repo, "exp", "run", "-S", "dqn.gamma=0.8", check=False)
    assert second.returncode != 0 and "is busy" in second.stderr and "train.total_frames=8000" in second.stderr
    err, _ = first.communicate(timeout=600)
    assert first.returncode != 0, err[-3000:]
    line = next((line for line in err.splitlines() if line.startswith("error: ")), err[-6000:])
    assert "params.yaml changed while train ran (dqn.gamma: 0.995 -> 0.8)" in line and "Nothing was written" in line, (
        line
    )
    assert {name: tree_digest(repo / name) for name in outputs} == before
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    versions = client.search_model_versions("name = 'reservoir-dqn-reservoir'")
    assert len(versions) == 1  # the baseline's; the disturbed run registered nothing
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    statuses = {run.info.run_name: run.info.status for run in client.search_runs(experiments)}
    # Named for what trained them (the checkpoints it continued are the baseline's), the parent and its seeds
    # ended FAILED; the baseline's runs keep their name and status.
    assert [status for name, status in statuses.items() if "total_frames=8000" in name] == ["FAILED"] * 3, statuses
    assert statuses["baseline"] == "FINISHED", statuses
    shutil.rmtree(repo / "checkpoints", ignore_errors=True)
