"""``reservoir-dqn dvc``: checks before DVC, and a failed stage's status and line after it.

The fast tests read the real dvc.yaml and DVC's own parsing of ``-S``; the slow ones run the
wrapper as a user types it, in a fresh clone after `make run` (tests/dvc_repo.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reservoir_dqn.commands import dvc_wrapper
from reservoir_dqn.commands.dvc_files import Pipeline, changed_files, visible
from reservoir_dqn.commands.dvc_wrapper import Invocation, attributed, dependency_problem, sweep_points
from reservoir_dqn.commands.exits import Exit
from reservoir_dqn.commands.failures import FAILURES_VARIABLE, StageFailure, read_failures, record_failure
from reservoir_dqn.common.errors import ConfigError
from reservoir_dqn.config import flatten, read_params
from tests.conftest import REPO, tree_digest
from tests.dvc_repo import baseline_repo, clean_env, clone_repo, dvc, run

WRAPPER = ".venv/bin/reservoir-dqn"
UNCHANGED = (".git", ".dvc/tmp", ".dvc/cache")  # DVC's own state; the rest must not move when nothing runs


def _invocation(root: Path, command: str = "exp run", copy: bool = True, copy_paths: list[str] | None = None):
    return Invocation(root, command, [], command == "exp run", copy, copy_paths or [], False)


def test_the_pipelines_outside_dependencies_are_the_record_and_the_code_never_an_output() -> None:
    values = flatten(read_params(REPO / "params.yaml"))
    pipeline = Pipeline.read(REPO, {**values, "env.reservoir.record.path": "data/mine.csv"})
    paths = {dependency.path for dependency in pipeline.dependencies}
    assert "data/mine.csv" in paths and "src/reservoir_dqn/commands/cli.py" in paths
    assert not paths & {"models/agents", "metrics/train.json", "logs/train"}  # written by a stage
    assert pipeline.writes("dvc.lock") and pipeline.writes("logs/train/progress.csv")
    assert not pipeline.writes("params.yaml") and not pipeline.writes("src/reservoir_dqn/commands/cli.py")


def test_a_file_is_visible_to_an_experiment_when_git_or_dvc_tracks_it_or_it_is_copied() -> None:
    tracked = {"data/a.csv", "src/pkg/mod.py", "big.dvc"}
    assert visible("data/a.csv", tracked) and visible("src/pkg", tracked)
    assert visible("big/inside.csv", tracked)  # big.dvc tracks the folder
    assert not visible("data/b.csv", tracked)
    assert visible("data/b.csv", tracked, ["data/"]) and visible("data/b.csv", tracked, ["data/b.csv"])


def test_an_untracked_or_missing_record_is_one_line_naming_the_file_and_the_command(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data/mine.csv").write_text("date,flow\n")
    record = Pipeline.read(REPO, {**flatten(read_params(REPO / "params.yaml")), "env.reservoir.record.path": "x"})
    declared = next(d.declared for d in record.dependencies if d.path == "x")
    mine = type(record.dependencies[0])(declared, "data/mine.csv")
    line = dependency_problem(_invocation(tmp_path), mine, tracked=set())
    assert line is not None and line.startswith("data/mine.csv (env.reservoir.record.path) is not tracked by git")
    assert "`git add data/mine.csv`" in line and "reservoir-dqn record add" in line and "\n" not in line
    assert dependency_problem(_invocation(tmp_path), mine, {"data/mine.csv"}) is None
    assert dependency_problem(_invocation(tmp_path, copy_paths=["data/mine.csv"]), mine, set()) is None
    assert dependency_problem(_invocation(tmp_path, "repro", copy=False), mine, set()) is None  # the workspace's
    missing = type(mine)(declared, "data/none.csv")
    line = dependency_problem(_invocation(tmp_path, "repro", copy=False), missing, set())
    assert line is not None and line.startswith("data/none.csv (env.reservoir.record.path) does not exist")


def test_set_params_are_read_as_dvc_reads_them_and_a_sweep_is_each_of_its_points() -> None:
    assert sweep_points([]) == [[]]
    assert sweep_points(["dqn.gamma=0.99,0.999", "train.seeds=3"]) == [
        ["dqn.gamma=0.99", "train.seeds=3"],
        ["dqn.gamma=0.999", "train.seeds=3"],
    ]
    with pytest.raises(ConfigError, match=r"^-S: DVC cannot read the values given"):
        sweep_points(["dqn.gamma=[0.9"])


def test_a_bad_value_is_said_of_the_set_param_that_gave_it(tmp_path: Path) -> None:
    copy = tmp_path / "params.yaml"
    message = f"{copy}: dqn.gamma = 5: Input should be less than or equal to 1"
    assert attributed(message, copy, ["train.seeds=3", "dqn.gamma=5"]) == "-S dqn.gamma=5: " + message.split(": ", 1)[1]
    assert attributed(message, copy, ["train.seeds=3"]).startswith("params.yaml: dqn.gamma = 5")
    with pytest.raises(ConfigError, match=r"^-S dqn\.gama=0\.9: unknown key 'dqn\.gama' \(did you mean 'dqn\.gamma'"):
        dvc_wrapper.overridden_config(REPO, ["dqn.gama=0.9"])
    with pytest.raises(ConfigError, match=r"^-S dqn\.gamma=5: dqn\.gamma = 5: "):
        dvc_wrapper.overridden_config(REPO, ["dqn.gamma=5"])


def test_a_stage_failure_is_recorded_only_for_the_wrapper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "failures.jsonl"
    monkeypatch.delenv(FAILURES_VARIABLE, raising=False)
    record_failure(Exit.FAILED, "error: not recorded")
    assert not path.exists()
    monkeypatch.setenv(FAILURES_VARIABLE, str(path))
    monkeypatch.setenv("DVC_STAGE", "train")
    record_failure(Exit.FAILED, 'error: a "quoted" line')
    with path.open("a") as file:
        file.write('{"stage": "evaluate", "sta')  # a stage killed while it wrote: skipped
    assert read_failures(path) == [StageFailure("train", 4, 'error: a "quoted" line')]


def test_tools_stage_records_that_it_cannot_start_python(tmp_path: Path) -> None:
    path = tmp_path / "failures.jsonl"
    env = {"PATH": "/usr/bin:/bin", FAILURES_VARIABLE: str(path), "DVC_STAGE": "train", "DVC_ROOT": str(tmp_path)}
    result = subprocess.run(["/bin/sh", str(REPO / "tools/stage"), "train"], env=env, capture_output=True, text=True)
    assert result.returncode == Exit.BAD_INPUT
    (failure,) = read_failures(path)
    assert failure.stage == "train" and failure.status == 2 and failure.line == result.stderr.strip()


def test_help_and_a_missing_command() -> None:
    with pytest.raises(SystemExit) as exited:
        dvc_wrapper.main(["--help"])
    assert exited.value.code == 0
    assert dvc_wrapper.main([]) == Exit.BAD_INPUT


def test_changed_files_lists_staged_and_unstaged_changes(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    for name in ("a", "b", "c"):
        (tmp_path / name).write_text(name)
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    (tmp_path / "a").write_text("changed")
    git("mv", "b", "d")
    (tmp_path / "untracked").write_text("")
    assert sorted(changed_files(tmp_path) or []) == ["a", "b", "d"]


# --------------------------------------------------------------------------- on a real DVC repository


@pytest.fixture
def repo(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """A copy of a fresh clone after `make run` (nothing committed after it)."""
    return clone_repo(baseline_repo(tmp_path_factory), tmp_path / "repo")


def wrapper(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(repo, WRAPPER, "dvc", *args, check=False, env=clean_env(repo))


def _experiments(repo: Path) -> str:
    return run(repo, "git", "for-each-ref", "refs/exps").stdout


@pytest.mark.slow
def test_a_bad_param_stops_before_dvc_in_one_line_and_changes_nothing(repo: Path) -> None:
    before = tree_digest(repo, exclude=UNCHANGED)
    for args in (["exp", "run", "-S", "dqn.gamma=5"], ["exp", "run", "--queue", "-S", "dqn.gamma=0.9,7"]):
        result = wrapper(repo, *args)
        assert result.returncode == Exit.BAD_INPUT, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("error: -S dqn.gamma="), result.stderr
        assert "Input should be less than or equal to 1" in result.stderr and "ERROR" not in result.stderr
    assert tree_digest(repo, exclude=UNCHANGED) == before and _experiments(repo) == ""
    assert "celery" not in run(repo, "git", "stash", "list").stdout


@pytest.mark.slow
def test_a_stage_failing_with_a_status_ends_the_wrapper_with_it_and_its_line_last(repo: Path) -> None:
    unreachable = ["-S", "tracking.uri=http://127.0.0.1:9", "-S", "tracking.connect_timeout_s=1"]
    plain = dvc(repo, "exp", "run", "--temp", *unreachable, check=False)
    assert plain.returncode == 255  # what DVC itself says of any failed stage

    result = wrapper(repo, "exp", "run", "--temp", *unreachable)
    assert result.returncode == Exit.FAILED, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: MLflow tracking server http://127.0.0.1:9 cannot be reached"), result.stderr
    assert "ERROR: failed to reproduce" in result.stdout + result.stderr  # DVC's own lines, shown before it

    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("  uri: ''", "  uri: 'file:///tmp/mlruns'", 1))
    bad = wrapper(repo, "repro", "--force", "train")  # a value only the stage can judge: its status is 2
    assert bad.returncode == Exit.BAD_INPUT, bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: MLflow tracking URI 'file:///tmp/mlruns' is a file")
    assert not list((repo / ".dvc/tmp/reservoir-dqn").iterdir())  # each wrapper's failure file is removed


@pytest.mark.slow
def test_an_untracked_record_stops_a_temp_experiment_before_dvc(repo: Path) -> None:
    """The refusal, and a missing file's. That a staged record runs in a ``--temp`` experiment is the README's river
    walk (``record add`` stages the file; tests/test_readme.py runs the experiment it prints), not run twice."""
    (repo / "data/mine.csv").write_bytes((repo / "data/delaware_monthly_hm3.csv").read_bytes())
    args = ("exp", "run", "--temp", "-S", "env.reservoir.record.path=data/mine.csv", "--name", "mine")
    before = tree_digest(repo, exclude=UNCHANGED)
    refused = wrapper(repo, *args)
    assert refused.returncode == Exit.BAD_INPUT, refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: data/mine.csv (env.reservoir.record.path) is not tracked by git"), line
    assert "`git add data/mine.csv`" in line
    assert tree_digest(repo, exclude=UNCHANGED) == before and _experiments(repo) == ""

    missing = wrapper(repo, "exp", "run", "--temp", "-S", "env.reservoir.record.path=data/none.csv")
    assert missing.returncode == Exit.BAD_INPUT and "data/none.csv (env.reservoir.record.path) does not exist" in (
        missing.stderr
    )
    assert tree_digest(repo, exclude=UNCHANGED) == before and _experiments(repo) == ""


def test_the_wrapper_runs_the_dvc_beside_its_python() -> None:
    assert dvc_wrapper.dvc_command() in ([str(Path(sys.executable).parent / "dvc")], [sys.executable, "-m", "dvc"])
