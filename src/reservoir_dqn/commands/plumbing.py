"""What every command shares: its failures as one line and an exit status, and its tracking connection.

:func:`run_stage` runs a command's body and turns the failures a user can cause into one
line on stderr and an exit status of the one table (:mod:`reservoir_dqn.commands.exits`): bad
parameters or input files, a run that could not complete (for example a diverging loss), a
signal, and an unexpected exception, which is a bug. The stages, ``compare``, ``tune``,
``promote`` and ``recipe`` all run through it.

This module imports neither torch nor MLflow: a command that never trains or tracks
(``compare``, ``recipe``) starts without them.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from reservoir_dqn.commands.exits import Exit
from reservoir_dqn.commands.failures import record_failure
from reservoir_dqn.commands.workspace import failed_experiment_hint
from reservoir_dqn.common.errors import ModelFileError, RunFailed, first_line
from reservoir_dqn.common.process import Terminated, interruption, signals_raise
from reservoir_dqn.config import DEFAULT_PARAMS, Config, ConfigError

if TYPE_CHECKING:
    from reservoir_dqn.tracking import Tracking


class StageFailed(RuntimeError):
    """A command could not complete; the message is one line for the user, ``status`` its exit status."""

    def __init__(self, message: str, status: Exit = Exit.FAILED) -> None:
        super().__init__(message)
        self.status = status


def connect_tracking(config: Config, experiment: str | None = None) -> Tracking:
    """The stage's tracking, checked before any work (``experiment``: instead of the environment's)."""
    from reservoir_dqn.tracking import Tracking, TrackingMisconfigured, TrackingUnavailable  # torch, MLflow

    try:
        return Tracking.connect(config, experiment)
    except TrackingMisconfigured as error:
        raise StageFailed(str(error), Exit.BAD_INPUT) from None
    except TrackingUnavailable as error:
        raise StageFailed(str(error)) from None


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
    committed params (:func:`reservoir_dqn.commands.workspace.failed_experiment_hint`). Run by
    ``reservoir-dqn dvc``, the failure is also recorded for it to repeat after DVC's lines
    (:mod:`reservoir_dqn.commands.failures`).
    """
    _console_logging()
    try:
        with signals_raise():
            return int(stage(argv) or Exit.OK)
    except (Exception, KeyboardInterrupt, Terminated) as error:  # noqa: BLE001 - each kind gets its status
        status, line = _failure(error)
    line += failed_experiment_hint(DEFAULT_PARAMS)
    print(line, file=sys.stderr)
    record_failure(status, line)
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
    if isinstance(error, RunFailed):
        return Exit.FAILED, f"error: {error}"
    if isinstance(error, StageFailed):
        return error.status, f"{'cannot judge' if error.status == Exit.CANNOT_JUDGE else 'error'}: {error}"
    if isinstance(error, OSError):  # the machine's fault, not ours: a full disk, a folder that cannot be written
        where = f" ({error.filename})" if error.filename else ""
        return Exit.FAILED, f"error: {error.strerror or first_line(error)}{where}"
    traceback.print_exception(error)  # a bug: its traceback, then one line
    return Exit.INTERNAL, f"internal error (a bug, please report it): {first_line(error)}"
