"""The errors a user's input becomes, and turning any exception into the one line users read.

:class:`ConfigError` (a bad parameter, override or option) and :class:`ModelFileError` (a bad
model file) both end a command with exit status 2 (:mod:`reservoir_dqn.commands.exits`).
"""

from __future__ import annotations


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when empty), at most ``limit`` characters."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


class ConfigError(ValueError):
    """A bad parameter file, override or option; the message is one line for the user."""


class ModelFileError(ValueError):
    """A model file that is missing, corrupt, unsafe or of another format (the user's input: exit status 2)."""


class RunFailed(RuntimeError):
    """Work that could not complete (a check that failed, a tool that could not run): one line, exit status 4."""
