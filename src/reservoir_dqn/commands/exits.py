"""The one table of exit statuses of every ``reservoir-dqn`` command (the exit-statuses reference is made from it).

A script or CI job can tell every outcome apart: a verdict of the gate (0, 1, 3) is never
confused with an error (2, 4, 70), and an error never looks like a regression. New
commands and faults extend this table; none invents a status of its own.
"""

from __future__ import annotations

import signal
from enum import IntEnum


class Exit(IntEnum):
    """Exit statuses: the value is what the process returns (:data:`MEANINGS` says when)."""

    OK = 0
    REGRESSION = 1
    BAD_INPUT = 2
    CANNOT_JUDGE = 3
    FAILED = 4
    INTERNAL = 70  # BSD's EX_SOFTWARE
    INTERRUPTED = 128 + signal.SIGINT  # the shells' convention: 128 + the signal's number
    TERMINATED = 128 + signal.SIGTERM


MEANINGS: dict[Exit, str] = {
    Exit.OK: "done; `compare`: no gated regression (improvement, within tolerance or inconclusive); `promote`: decided",
    Exit.REGRESSION: "`compare`: the gated metric dropped by more than its tolerance, significantly",
    Exit.BAD_INPUT: "bad parameters, options, input files, tracking URI or revision; `promote`: uncommitted work; "
    "nothing was changed",
    Exit.CANNOT_JUDGE: "`compare`, `promote`: too few seeds, the two sides measured differently, or a baseline too old "
    "to judge",
    Exit.FAILED: "could not complete: missing or mismatched upstream outputs, a diverging training, a tracking store "
    "unreachable or corrupt, a folder not writable, params.yaml changed while the stage ran; the previous outputs "
    "stay whole",
    Exit.INTERNAL: "a bug: an unexpected exception, printed with its traceback",
    Exit.INTERRUPTED: "interrupted by SIGINT (Ctrl-C); the newest checkpoint is kept, the runs end as KILLED",
    Exit.TERMINATED: "terminated by SIGTERM (CI runners, schedulers, `kill`); as for SIGINT",
}


def markdown_table() -> str:
    """The table as the exit-statuses reference shows it."""
    rows = [f"| {int(status)} | {status.name.lower()} | {MEANINGS[status]} |" for status in Exit]
    return "\n".join(["| status | name | meaning |", "|---|---|---|", *rows])
