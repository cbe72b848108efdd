"""``reservoir-dqn``: one command with a sub-command per stage.

Only the chosen sub-command's module is imported: a stage does not pay for the others'
libraries (tuning's Optuna and SQLAlchemy, plotting's matplotlib). It is imported outside
garbage collection (:mod:`reservoir_dqn.common.process`), which is why ``tools/stage`` runs the
pipeline's stages through this command.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple

from reservoir_dqn.common.process import collection_paused, exit_process


class Command(NamedTuple):
    """A sub-command: where it lives, and the line ``reservoir-dqn --help`` says of it without importing it."""

    module: str  # with main(argv) -> exit status
    summary: str  # the first line of the module's docstring, after the command's name (tests/test_cli.py)


COMMANDS: dict[str, Command] = {
    "train": Command(
        "reservoir_dqn.commands.train", "train every agent, then write the networks and the training summary"
    ),
    "evaluate": Command(
        "reservoir_dqn.commands.evaluate", "every agent and the baselines on the same seeded, unseen test scenarios"
    ),
    "plot": Command(
        "reservoir_dqn.commands.plot", "PNG figures of training and evaluation, for people rather than parsers"
    ),
    "export": Command(
        "reservoir_dqn.commands.export",
        "the shipped policy as ONNX, checked outside PyTorch on every state of its grid",
    ),
    "compare": Command(
        "reservoir_dqn.commands.compare", "how a change moved the metrics, with statistics over seeds, and the CI gate"
    ),
    "tune": Command(
        "reservoir_dqn.commands.tune",
        "hyperparameter search with Optuna, by any number of workers on any number of machines",
    ),
    "promote": Command(
        "reservoir_dqn.commands.promote", "offer the committed run's registered version the `champion` alias"
    ),
    "recipe": Command(
        "reservoir_dqn.commands.recipe", "an environment's tuned settings, as `-S` arguments for `dvc exp run`"
    ),
    "advise": Command(
        "reservoir_dqn.commands.advise", "this month's release, for a reservoir's state in an operator's terms"
    ),
    "front": Command(
        "reservoir_dqn.commands.front",
        "the exact front of energy against water supply, and where each agent sits on it",
    ),
    "dvc": Command(
        "reservoir_dqn.commands.dvc_wrapper",
        "run DVC, checking params and records first and ending with a failed stage's status and line",
    ),
    "record": Command(
        "reservoir_dqn.commands.record",
        "a user's gauge file made a record the reservoir runs on, and the command to run it",
    ),
}


def usage() -> str:
    """What ``reservoir-dqn --help`` prints: the usage line, then each command and what it does."""
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    return "\n".join(["usage: reservoir-dqn COMMAND [options]  (COMMAND --help for details)", "", "commands:", *lines])


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command and end the process with its exit status; without one, print the usage.

    ``--help`` prints it on stdout and exits 0; no command, or an unknown one, prints it on stderr (and a line
    naming the unknown command) and exits 2.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not args or args[0] not in COMMANDS:
        unknown = [f"error: {args[0]!r} is not a command of reservoir-dqn"] if args else []
        print("\n".join([usage(), *unknown]), file=sys.stderr)
        return 2
    with collection_paused(freeze=True):
        command = importlib.import_module(COMMANDS[args[0]].module)
    exit_process(command.main(args[1:]))  # the console script's process ends here


if __name__ == "__main__":
    sys.exit(main())
