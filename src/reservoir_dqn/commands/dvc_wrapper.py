"""``reservoir-dqn dvc``: run DVC, checking params and records first and ending with a failed stage's status and line.

    .venv/bin/reservoir-dqn dvc repro
    .venv/bin/reservoir-dqn dvc exp run --temp -S dqn.gamma=0.95 --name gamma-095

Runs the ``dvc`` installed beside this Python with the same arguments, its output passed
through. Plain ``dvc`` works as before; what the wrapper adds, decided once for every stage:

- **Before** ``repro`` and ``exp run``, it checks what DVC finds out only inside a stage,
  or never says in a line of ours. params.yaml, with the experiment's ``-S`` values applied
  as DVC applies them (each point of a ``--queue`` sweep), must be valid, and the
  environment usable. Every file a stage depends on outside the pipeline (the record
  ``env.reservoir.record.path``, the code) must exist and, for an experiment, be one it
  sees: tracked or staged by git, tracked by DVC (a ``.dvc`` file) or copied with ``-C``.
  A ``--temp`` or queued experiment runs in a copy holding only those files, and DVC
  checks a stage's dependencies before the stage can explain anything (its raw
  ``[Errno 2]``, exit 255). Either failure is one line, exit status 2, and nothing runs:
  params.yaml is not touched.
- **After**: DVC ends with status 255 whatever a stage failed with, and prints its ``ERROR``
  lines after the stage's. When a stage failed, its own line
  (:mod:`reservoir_dqn.commands.failures`) is printed last and the exit status is the
  stage's, from the one table (:mod:`reservoir_dqn.commands.exits`: 2 bad input, 4 could
  not complete, ...); otherwise DVC's own.

Any other DVC command (``exp show``, ``queue start``, ...) is passed through unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from reservoir_dqn.commands.dvc_files import Dependency, Pipeline, tracked_files, visible
from reservoir_dqn.commands.exits import Exit
from reservoir_dqn.commands.failures import FAILURES_VARIABLE, read_failures
from reservoir_dqn.commands.plumbing import StageFailed, run_stage
from reservoir_dqn.common.errors import ConfigError, first_line
from reservoir_dqn.common.process import exit_process
from reservoir_dqn.config import Config, flatten, load_config, read_params

USAGE = "%(prog)s DVC_COMMAND [DVC options], e.g. `repro` or `exp run --temp -S dqn.gamma=0.95 --name NAME`"
HELP = (
    "Runs the dvc beside this Python with the same arguments, its output passed through. Before `repro` and `exp run` "
    "it checks params.yaml with the -S values applied, and that every file the pipeline reads exists and, for an "
    "experiment, is tracked by git or DVC (a --temp or queued experiment sees nothing else): otherwise one line, exit "
    "status 2, and nothing runs. When a stage fails, its own line is printed last and the exit status is the stage's "
    "(2 bad input, 4 could not complete, ...), not DVC's 255. Any other DVC command is passed through."
)
PARAMS = "params.yaml"  # the file DVC's `-S key=value` writes, and the one dvc.yaml interpolates
RECORD_KEY = "env.reservoir.record.path"
MAKE_RECORD = "`reservoir-dqn record add FILE --name NAME`"  # writes the record under data/ and stages it


@dataclass(frozen=True)
class Invocation:
    """What the wrapper needs of DVC's command line: which command, in which folder, with which options."""

    root: Path  # the DVC repository's root
    command: str  # "repro", "exp run" or "" (anything else: passed through)
    set_params: list[str]  # exp run's -S/--set-param values
    experiment: bool  # an experiment: its commit holds only what git tracks
    copy: bool  # --temp or --queue: it runs in a copy of the repository
    copy_paths: list[str]  # -C/--copy-paths: untracked paths copied into that copy
    run_all: bool  # --run-all: runs what is queued, whose params were checked when queued


def parse(argv: Sequence[str]) -> Invocation | None:
    """DVC's reading of ``argv`` (its own parser), or ``None`` when it is not ``repro``/``exp run`` in a DVC repository.

    A command line DVC's parser refuses, or help, is left for DVC to answer.
    """
    from dvc.cli.parser import get_main_parser
    from dvc.commands.experiments.run import CmdExperimentsRun
    from dvc.commands.repro import CmdRepro

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args = get_main_parser().parse_args(list(argv))  # its help and errors are DVC's to print
    except SystemExit:
        return None
    func = getattr(args, "func", None)
    if func is CmdExperimentsRun:
        command = "exp run"
    elif func is CmdRepro:
        command = "repro"
    else:
        return None
    root = _dvc_root(Path(getattr(args, "cd", ".") or "."))
    if root is None:
        return None
    experiment = command == "exp run"
    return Invocation(
        root=root,
        command=command,
        set_params=list(getattr(args, "set_param", []) or []),
        experiment=experiment,
        copy=experiment and bool(getattr(args, "tmp_dir", False) or getattr(args, "queue", False)),
        copy_paths=list(getattr(args, "copy_paths", []) or []),
        run_all=bool(getattr(args, "run_all", False)),
    )


def _dvc_root(start: Path) -> Path | None:
    folder = start.resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / ".dvc").is_dir():
            return candidate
    return None


# --------------------------------------------------------------------------- params


def sweep_points(set_params: Sequence[str]) -> list[list[str]]:
    """params.yaml's overrides of each experiment the ``-S`` values make (several for a ``--queue`` sweep).

    Read with DVC's own functions, so a value means what it will mean to DVC; a value DVC
    cannot read is one line.
    """
    if not set_params:
        return [[]]
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps
    from hydra.errors import HydraException

    try:
        points = get_hydra_sweeps(to_path_overrides(set_params))
    except (HydraException, InvalidArgumentError) as error:
        raise ConfigError(f"-S: DVC cannot read the values given ({first_line(error)})") from None
    return [list(point.get(PARAMS, [])) for point in points]


def overridden_params(root: Path, overrides: Sequence[str], folder: Path) -> Path:
    """A copy of params.yaml in ``folder`` with ``overrides`` applied as ``dvc exp run -S`` applies them."""
    copy = folder / PARAMS
    copy.write_bytes((root / PARAMS).read_bytes())
    if not overrides:
        return copy
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    try:
        apply_overrides(copy, list(overrides))
    except InvalidArgumentError as error:
        # DVC refuses a key that params.yaml does not have; the config's own check names it (and a close one).
        try:
            load_config(root / PARAMS, [override.lstrip("+~") for override in overrides])
        except ConfigError as refusal:
            raise ConfigError(str(refusal).replace("--set ", "-S ", 1)) from None
        cause = error.__cause__ or error
        raise ConfigError(f"-S {' -S '.join(overrides)}: DVC cannot apply it ({first_line(cause)})") from None
    return copy


def attributed(message: str, copy: Path, overrides: Sequence[str]) -> str:
    """A config error read from the overridden copy, said of the ``-S`` that set the key (else of params.yaml)."""
    prefix = f"{copy}: "
    if not message.startswith(prefix):
        return message
    rest = message.removeprefix(prefix)
    for override in reversed(overrides):
        key = override.partition("=")[0].strip().lstrip("+~")
        if re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", rest):
            return f"-S {override}: {rest}"
    return f"{PARAMS}: {rest}"


def overridden_config(root: Path, overrides: Sequence[str]) -> tuple[Config, dict[str, Any]]:
    """The config an experiment with ``overrides`` runs with, validated, and its params as dotted plain values."""
    import reservoir_dqn.envs  # noqa: F401 - registers the environments' settings, which load_config validates

    with tempfile.TemporaryDirectory(prefix="reservoir-dqn-") as folder:
        copy = overridden_params(root, overrides, Path(folder))
        try:
            return load_config(copy), flatten(read_params(copy))
        except ConfigError as error:
            raise ConfigError(attributed(str(error), copy, overrides)) from None


# --------------------------------------------------------------------------- dependencies


def dependency_problem(invocation: Invocation, dependency: Dependency, tracked: set[str] | None) -> str | None:
    """The one line to refuse with when a dependency is missing, or not visible to the experiment; else ``None``."""
    record = RECORD_KEY in dependency.declared
    what = f"{dependency.path} ({RECORD_KEY})" if record else dependency.path
    if not (invocation.root / dependency.path).exists():
        if record:
            return f"{what} does not exist: make the record with {MAKE_RECORD}, or set {RECORD_KEY} to one that does"
        return f"{what}, which the pipeline reads, does not exist: restore it"
    if not invocation.experiment or tracked is None or visible(dependency.path, tracked, invocation.copy_paths):
        return None
    holder = (
        "a --temp or queued experiment runs in a copy holding" if invocation.copy else "an experiment's commit holds"
    )
    remedy = f"`git add {dependency.path}`"
    if record:
        remedy += f" (or make the record with {MAKE_RECORD}, which stages it)"
    return f"{what} is not tracked by git, and {holder} only what git or DVC track: {remedy}"


def check(invocation: Invocation) -> None:
    """Refuse, in one line (:class:`ConfigError`), what would fail inside DVC: bad params, a missing or unseen file,
    an environment no stage can make. Paths are the repository root's, as the stages see them."""
    if invocation.run_all or not (invocation.root / PARAMS).exists():
        return
    from reservoir_dqn.envs import profile

    tracked = tracked_files(invocation.root) if invocation.experiment else None
    for overrides in sweep_points(invocation.set_params):
        config, values = overridden_config(invocation.root, overrides)
        for dependency in Pipeline.read(invocation.root, values).dependencies:
            problem = dependency_problem(invocation, dependency, tracked)
            if problem is not None:
                raise ConfigError(problem)
        with contextlib.chdir(invocation.root):  # the record is read relative to the root
            profile(config.env)  # its line names the setting, as the stages' does


# --------------------------------------------------------------------------- running DVC


def dvc_command() -> list[str]:
    """The ``dvc`` of this environment: the script beside this Python, else its module."""
    script = Path(sys.executable).parent / "dvc"
    return [str(script)] if script.exists() else [sys.executable, "-m", "dvc"]


@contextmanager
def failures_file(root: Path) -> Iterator[Path]:
    """A new, empty file for this run's stage failures (``.dvc/tmp/reservoir-dqn/``), removed afterwards."""
    folder = root / ".dvc" / "tmp" / "reservoir-dqn"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix="failures-", suffix=".jsonl", dir=folder)
    except OSError:
        handle, name = tempfile.mkstemp(prefix="reservoir-dqn-failures-", suffix=".jsonl")
    os.close(handle)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def run_dvc(argv: Sequence[str], failures: Path) -> int:
    """Run DVC with ``argv``, its output passed through, and return its status.

    Ctrl-C reaches DVC from the terminal (it stops its stage, which records that it was
    interrupted), so the wrapper waits for it; SIGTERM, which only the wrapper receives, is
    passed on.
    """
    process = subprocess.Popen([*dvc_command(), *argv], env={**os.environ, FAILURES_VARIABLE: str(failures)})

    def forward(signum: int, frame: FrameType | None) -> None:
        process.send_signal(signum)

    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, forward)
    try:
        return process.wait()
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)


def run(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        parser = argparse.ArgumentParser(prog="reservoir-dqn dvc", usage=USAGE, description=HELP)
        if args:
            parser.parse_args(args)  # prints the help and exits 0
        raise StageFailed(f"give a DVC command: {USAGE.removeprefix('%(prog)s ')}", Exit.BAD_INPUT)
    invocation = parse(args)
    if invocation is not None:
        check(invocation)
    root = invocation.root if invocation is not None else _dvc_root(Path.cwd()) or Path.cwd()
    with failures_file(root) as path:
        status = run_dvc(args, path)
        failed = read_failures(path)
    if status == 0 or not failed:
        return status
    for failure in failed:
        print(failure.line, file=sys.stderr)
    return failed[0].status


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)


if __name__ == "__main__":
    exit_process(main())
