"""The error every bad parameter becomes: one line for the user, exit status 2."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad parameter file or override; the message is one line for the user."""
