"""A failing stage's status and one line, left where ``reservoir-dqn dvc`` finds them once DVC has finished.

DVC ends with status 255 whatever status a stage failed with, and prints its own ``ERROR``
lines after the stage's line. ``reservoir-dqn dvc`` (:mod:`reservoir_dqn.commands.dvc_wrapper`)
therefore names a file of its own in :data:`FAILURES_VARIABLE` before it runs ``dvc``; DVC
passes the environment on to every stage, also in a ``--temp`` copy, and a stage that fails
(:func:`reservoir_dqn.commands.plumbing.run_stage`, or ``tools/stage`` when it cannot start
Python) appends its :class:`StageFailure` as a JSON line. The wrapper prints the line last
and exits with the stage's status. A file per wrapper, rather than one place in the
repository, keeps two wrappers (or a queue worker) from reading each other's failures, and
leaves nothing stale to clear. Without the variable (plain ``dvc``, a command typed by
hand) nothing is written.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

FAILURES_VARIABLE = "RESERVOIR_DQN_FAILURES"  # the file a failing stage appends its JSON line to


@dataclass(frozen=True)
class StageFailure:
    """What a stage failed with: its name (DVC's ``DVC_STAGE``), its exit status and its one line."""

    stage: str
    status: int
    line: str


def record_failure(status: int, line: str) -> None:
    """Append this stage's failure to the file that :data:`FAILURES_VARIABLE` names (nothing without it).

    A file that cannot be written costs the wrapper only the status: the stage's own line is
    already on stderr.
    """
    path = os.environ.get(FAILURES_VARIABLE)
    if not path:
        return
    failure = StageFailure(os.environ.get("DVC_STAGE", ""), int(status), line)
    try:
        with Path(path).open("a", encoding="utf-8") as file:
            file.write(json.dumps(asdict(failure)) + "\n")
    except OSError:
        pass


def read_failures(path: Path) -> list[StageFailure]:
    """The failures recorded in ``path``, in the order the stages failed (none when it is missing)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    failures = []
    for text in lines:
        try:
            data = json.loads(text)
            failures.append(StageFailure(str(data["stage"]), int(data["status"]), str(data["line"])))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short (a stage killed while it wrote): the others still count
    return failures
