"""Output files: every one is replaced atomically, so a crash never leaves half a file.

:func:`write_atomic` is the one place that writes to a temporary name beside the target
and renames it over the target; every writer of the package (JSON, CSV, model files,
figures) goes through it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is imported by what reads a table (a second of start-up otherwise)
    import pandas as pd


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Let ``write`` fill a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(temporary)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Pretty, key-sorted JSON (stable diffs for git and DVC); NaN is refused."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as file:
        data = json.load(file)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """A data frame as CSV without its index."""
    write_atomic(path, lambda temporary: frame.to_csv(temporary, index=False))


def read_csv(path: Path) -> pd.DataFrame:
    import pandas as pd

    return pd.read_csv(path)
