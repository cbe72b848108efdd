"""Pipeline stages, one small module each: ``train`` -> ``evaluate`` -> ``plot``.

Each stage has a thin ``main()`` that reads the parameters and its paths from the command
line and calls pure functions of the package. :func:`run_stage` turns the failures a user
can cause into one line on stderr and an exit status of the one table
(:mod:`reservoir_dqn.exits`): bad parameters or input files, a run that could not complete
(for example a diverging loss), and an unexpected exception, which is a bug.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from reservoir_dqn.config import DEFAULT_PARAMS, Config, ConfigError, add_config_arguments, config_from_args
from reservoir_dqn.envs import profile
from reservoir_dqn.errors import ModelFileError, first_line
from reservoir_dqn.exits import Exit
from reservoir_dqn.files import read_json
from reservoir_dqn.process import Terminated, interruption, signals_raise
from reservoir_dqn.summary import Training
from reservoir_dqn.tracking import Tracking, TrackingMisconfigured, TrackingUnavailable
from reservoir_dqn.workspace import failed_experiment_hint, reveal_params_change


class StageFailed(RuntimeError):
    """A command could not complete; the message is one line for the user, ``status`` its exit status."""

    def __init__(self, message: str, status: Exit = Exit.FAILED) -> None:
        super().__init__(message)
        self.status = status


# The command-line option of each output path: ``--<flag> PATH`` overrides ``paths.<name>``.
PATH_OPTIONS = {
    "model": ("--model", "shipped model file"),
    "agents": ("--agents", "folder of every agent's networks"),
    "checkpoints": ("--checkpoints", "checkpoint folder"),
    "train_log": ("--train-log", "training-log folder (a CSV per metric group)"),
    "train_metrics": ("--train-metrics", "training summary JSON (names the MLflow runs)"),
    "eval_metrics": ("--eval-metrics", "evaluation detail JSON"),
    "summary": ("--summary", "headline metrics JSON (what DVC tracks)"),
    "eval_episodes": ("--episodes-csv", "per-episode evaluation CSV"),
    "trajectories": ("--trajectories", "per-step evaluation trajectories CSV"),
    "plots": ("--plots", "folder of PNG figures"),
}


def stage_config(name: str, description: str, paths: Sequence[str], argv: Sequence[str] | None) -> Config:
    """Parse a stage's command line: the parameter options plus its ``paths``; return the validated config.

    A path given on the command line becomes a ``paths.<name>`` override, so it is checked
    like any parameter (relative, inside the repository).
    """
    parser = argparse.ArgumentParser(prog=f"reservoir-dqn {name}", description=description)
    add_config_arguments(parser)
    group = parser.add_argument_group("paths")
    for path in paths:
        flag, what = PATH_OPTIONS[path]
        group.add_argument(flag, dest=path, metavar="PATH", help=f"{what} (default: paths.{path})")
    args = parser.parse_args(argv)
    args.overrides += [f"paths.{path}={getattr(args, path)}" for path in paths if getattr(args, path) is not None]
    if os.environ.get("DVC_EXP_NAME"):  # values `dvc exp run -S` wrote, which git's stat cache may hide
        reveal_params_change(Path(args.params))
    config = config_from_args(args)
    profile(config.env)  # an unknown or unsupported environment is refused before any work
    return config


def connect_tracking(config: Config, experiment: str | None = None) -> Tracking:
    """The stage's tracking, checked before any work (``experiment``: instead of the environment's)."""
    try:
        return Tracking.connect(config, experiment)
    except TrackingMisconfigured as error:
        raise StageFailed(str(error), Exit.BAD_INPUT) from None
    except TrackingUnavailable as error:
        raise StageFailed(str(error)) from None


def training_summary(config: Config) -> Training:
    """What the train stage wrote to ``paths.train_metrics`` (the later stages read it)."""
    path = Path(config.paths.train_metrics)
    try:
        return Training.from_json(read_json(path))
    except FileNotFoundError:
        raise StageFailed(f"{path} is missing: run the train stage first") from None
    except ValueError as error:
        raise StageFailed(f"{path} cannot be read ({error}): run the train stage again") from None


class _Console(logging.Handler):
    """Notices of the package, one line each on stdout (resolved at each line, so redirection works)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stdout, flush=True)


def _console_logging() -> None:
    package = logging.getLogger("reservoir_dqn")
    if not any(isinstance(handler, _Console) for handler in package.handlers):
        package.addHandler(_Console())
    package.setLevel(logging.INFO)
    package.propagate = False
    logging.getLogger("torchrl").setLevel(logging.WARNING)  # its INFO lines drown the progress bar


def run_stage(stage: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a command's body, mapping every failure to one line and a status of :class:`Exit`.

    The body returns its own status (``None``: :attr:`Exit.OK`). An unexpected exception is a
    bug: its traceback is printed, then one line, and the status is :attr:`Exit.INTERNAL`.
    Inside a failed ``dvc exp run`` in the workspace, the line also says how to restore the
    committed params (:func:`reservoir_dqn.workspace.failed_experiment_hint`).
    """
    _console_logging()
    try:
        with signals_raise():
            return int(stage(argv) or Exit.OK)
    except (Exception, KeyboardInterrupt, Terminated) as error:  # noqa: BLE001 - each kind gets its status
        status, line = _failure(error)
    print(line + failed_experiment_hint(DEFAULT_PARAMS), file=sys.stderr)
    return status


def _failure(error: BaseException) -> tuple[Exit, str]:
    """The status and the one line for a stage's failure (a signal first, even when clean-up failed under it)."""
    signal = interruption(error)
    if isinstance(signal, KeyboardInterrupt):
        return Exit.INTERRUPTED, "interrupted: the newest checkpoint is kept; run the command again to resume"
    if isinstance(signal, Terminated):
        return Exit.TERMINATED, "terminated (SIGTERM): the newest checkpoint is kept; run the command again to resume"
    if isinstance(error, (ConfigError, ModelFileError)):
        return Exit.BAD_INPUT, f"error: {error}"
    if isinstance(error, StageFailed):
        return error.status, f"{'cannot judge' if error.status == Exit.CANNOT_JUDGE else 'error'}: {error}"
    if isinstance(error, OSError):  # the machine's fault, not ours: a full disk, a folder that cannot be written
        where = f" ({error.filename})" if error.filename else ""
        return Exit.FAILED, f"error: {error.strerror or first_line(error)}{where}"
    traceback.print_exception(error)  # a bug: its traceback, then one line
    return Exit.INTERNAL, f"internal error (a bug, please report it): {first_line(error)}"
