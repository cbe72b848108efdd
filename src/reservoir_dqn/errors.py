"""Turning exceptions into the one-line messages users read."""

from __future__ import annotations


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when empty), at most ``limit`` characters."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


class ModelFileError(ValueError):
    """A model file that is missing, corrupt, unsafe or of another format (the user's input: exit status 2)."""
