"""The variants of a parameter, declared once where they are implemented: a Q-network head, a tracking backend.

A package that implements the variants of a parameter holds a :class:`Variants` for it
(``reservoir_dqn.agent.HEADS`` for ``dqn.head``, ``reservoir_dqn.tracking.BACKENDS`` for
``tracking.backend``) and adds each with :meth:`Variants.register`, the public seam for a
user's own. The config's field names the parameter (:func:`variant`), so a value no
variant has is refused in one line that lists those registered, and the reference lists
them from the same registry. It knows no variant itself: this package imports nothing above it.

A program that loads params.yaml without importing the implementing package first gets its
values unchecked until the package looks them up (:meth:`Variants.get`, one line as well): a
network's head when it is built, the tracking backend when a stage's tracking starts (on or
off). The commands that use a head import it before they load params.yaml.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator

Entry = TypeVar("Entry")

# Parameter key -> its registry, as the implementing packages created them.
REGISTRIES: dict[str, Variants[object]] = {}


class Variants(Generic[Entry]):
    """The variants of the parameter ``key``, by name: what each one is (a class, a factory, ...)."""

    def __init__(self, key: str) -> None:
        if key in REGISTRIES:
            raise ValueError(f"{key} has its variants already")
        self.key = key
        self._entries: dict[str, Entry] = {}
        REGISTRIES[key] = self  # type: ignore[assignment]

    def register(self, name: str, entry: Entry, *, replace: bool = False) -> Entry:
        """Declare ``name`` a value of the parameter, implemented by ``entry``; return ``entry``."""
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"{self.key}: {name!r} is no variant name (letters, digits, - and _)")
        if name in self._entries and not replace and self._entries[name] is not entry:
            raise ValueError(f"{self.key}: {name!r} is registered already (replace=True to replace it)")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Forget ``name`` (a user's own variant, after a test)."""
        self._entries.pop(name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def refusal(self, name: str) -> str:
        """The line that refuses ``name``: the variants there are, and the closest one."""
        close = difflib.get_close_matches(name, list(self._entries), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{name!r} is no {self.key}{hint}; registered: {', '.join(self._entries)}"

    def get(self, name: str) -> Entry:
        """What implements ``name``; a :class:`~reservoir_dqn.common.errors.ConfigError` in one line if nothing does."""
        if name not in self._entries:
            from reservoir_dqn.common.errors import ConfigError

            raise ConfigError(f"{self.key}: {self.refusal(name)}")
        return self._entries[name]


def _checked(key: str, name: str) -> str:
    registry = REGISTRIES.get(key)
    if registry is not None and name not in registry:
        raise ValueError(registry.refusal(name))
    return name


def variant(key: str) -> object:
    """The pydantic validator of a field whose values are the variants registered for ``key``."""
    return AfterValidator(lambda name: _checked(key, name))


Head = Annotated[str, variant("dqn.head")]
Backend = Annotated[str, variant("tracking.backend")]
