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

from reservoir_dqn.agent import ModelFileError
from reservoir_dqn.config import ConfigError, add_config_arguments

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class StageFailed(RuntimeError):
    """A stage could not complete; the message is one line for the user."""


def stage_parser(name: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the common parameter options (--params, --set, shortcuts)."""
    parser = argparse.ArgumentParser(prog=f"reservoir-dqn {name}", description=description)
    add_config_arguments(parser)
    return parser


def path_overrides(args: argparse.Namespace, names: Sequence[str]) -> None:
    """Turn ``--<name> PATH`` options into ``paths.<name>=PATH`` overrides, validated like params."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            args.overrides.append(f"paths.{name}={value}")


def run_stage(stage: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Run a stage's body, mapping the failures a user can cause to one line and an exit status."""
    logging.getLogger("torchrl").setLevel(logging.WARNING)  # its INFO lines drown the progress bar
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
