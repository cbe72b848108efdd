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

from reservoir_dqn.common.process import collection_paused, exit_process

COMMANDS: dict[str, str] = {  # sub-command -> module with main(argv) -> exit status
    "train": "reservoir_dqn.commands.train",
    "evaluate": "reservoir_dqn.commands.evaluate",
    "plot": "reservoir_dqn.commands.plot",
    "export": "reservoir_dqn.commands.export",
    "compare": "reservoir_dqn.commands.compare",
    "tune": "reservoir_dqn.commands.tune",
    "promote": "reservoir_dqn.commands.promote",
    "recipe": "reservoir_dqn.commands.recipe",
    "advise": "reservoir_dqn.commands.advise",
    "record": "reservoir_dqn.commands.record",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command and end the process with its exit status; without one, print the usage."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        names = ", ".join(COMMANDS)
        print(f"usage: reservoir-dqn {{{names}}} [options]  (COMMAND --help for details)", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    with collection_paused(freeze=True):
        command = importlib.import_module(COMMANDS[args[0]])
    exit_process(command.main(args[1:]))  # the console script's process ends here


if __name__ == "__main__":
    sys.exit(main())
