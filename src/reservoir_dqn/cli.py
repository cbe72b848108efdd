"""``reservoir-dqn``: one command with a sub-command per stage."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from reservoir_dqn import compare, tune
from reservoir_dqn.stages import evaluate, plot, train

COMMANDS: dict[str, Callable[[Sequence[str] | None], int]] = {
    "train": train.main,
    "evaluate": evaluate.main,
    "plot": plot.main,
    "compare": compare.main,
    "tune": tune.main,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        names = ", ".join(COMMANDS)
        print(f"usage: reservoir-dqn {{{names}}} [options]  (COMMAND --help for details)", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    return COMMANDS[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
