"""Pipeline stages, one small module each: ``train`` -> ``evaluate`` -> ``plot``.

Each stage has a thin ``main()`` that reads the parameters and its paths from the command
line and calls pure functions of the package. :func:`run_stage` turns the failures a user
can cause into one line on stderr and an exit status: 2 for bad parameters or input
files, 1 for a run that failed (for example a diverging loss).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reservoir_dqn.agent import ModelFileError
from reservoir_dqn.config import Config, ConfigError, add_config_arguments, config_from_args
from reservoir_dqn.files import read_json
from reservoir_dqn.tracking import Tracking, TrackingUnavailable

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class StageFailed(RuntimeError):
    """A stage could not complete; the message is one line for the user."""


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
    return config_from_args(args)


def connect_tracking(config: Config) -> Tracking:
    """The stage's tracking, checked before any work."""
    try:
        return Tracking.connect(config)
    except TrackingUnavailable as error:
        raise StageFailed(str(error)) from None


def training_summary(config: Config) -> dict[str, Any]:
    """What the train stage wrote to ``paths.train_metrics`` (the later stages read it)."""
    path = Path(config.paths.train_metrics)
    try:
        return read_json(path)
    except FileNotFoundError:
        raise StageFailed(f"{path} is missing: run the train stage first") from None
    except ValueError as error:
        raise StageFailed(f"{path} cannot be read ({error})") from None


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


def run_stage(stage: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Run a stage's body, mapping the failures a user can cause to one line and an exit status."""
    _console_logging()
    try:
        stage(argv)
    except (ConfigError, ModelFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StageFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted: the newest checkpoint is kept; run the stage again to resume", file=sys.stderr)
        return 130
    return 0
