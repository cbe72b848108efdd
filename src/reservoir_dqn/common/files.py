"""Output files: every one is replaced atomically, and a stage's outputs as a set.

:func:`write_atomic` is the one place that writes to a temporary name beside the target
and renames it over the target; every writer of the package (JSON, CSV, model files,
figures) goes through it, so a crash never leaves half a file. :class:`OutputSet` does the
same for all the outputs of a stage, so a stage that fails half-way leaves the previous
outputs whole and consistent.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is imported by what reads a table (a second of start-up otherwise)
    import pandas as pd


def file_digest(path: Path) -> str | None:
    """The SHA-256 of a file's bytes (``None`` when there is no such file)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


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


class OutputSet:
    """A stage's outputs, written as a set: all of them replace the previous ones, or none does.

    Each output (a file or a folder) is first written under a hidden staging name beside it
    (``models/.model.pt.staged-<pid>``), so that a folder that cannot be written fails before
    anything is replaced. When the block ends without an exception every staged output is
    moved into place; a move that fails puts back the ones already moved. When the block
    fails, the staged outputs are removed and the previous outputs are left whole: they
    still match each other and ``dvc.lock``.

    Usage::

        with OutputSet([model, metrics]) as outputs:
            save(outputs.path(model))
            write_json(outputs.path(metrics), summary)
    """

    def __init__(self, targets: Sequence[Path]) -> None:
        self.targets = [Path(target) for target in targets]
        self._staged = {target: target.with_name(f".{target.name}.staged-{os.getpid()}") for target in self.targets}

    def path(self, target: Path) -> Path:
        """Where to write ``target`` (one of the set's outputs) until the set is committed."""
        staged = self._staged[Path(target)]
        staged.parent.mkdir(parents=True, exist_ok=True)
        return staged

    def check(self) -> None:
        """Raise :class:`PermissionError` unless every output's folder can be written (call it before long work)."""
        for target in self.targets:
            folder = target.parent
            while not folder.exists() and folder != folder.parent:  # a folder still to be made: its parent decides
                folder = folder.parent
            if not os.access(folder, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "folder is not writable, nothing was replaced", str(folder))

    def __enter__(self) -> OutputSet:
        self.check()
        for target in self.targets:  # the leftovers of a run killed before it could clean up
            target.parent.mkdir(parents=True, exist_ok=True)
            for leftover in target.parent.glob(f".{target.name}.staged-*"):
                remove(leftover)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                self._commit()
        finally:
            for staged in self._staged.values():
                remove(staged)

    def _commit(self) -> None:
        moved: list[tuple[Path, Path | None]] = []  # (target, where its previous version waits)
        try:
            for target, staged in self._staged.items():
                if not staged.exists():
                    continue
                previous = None
                if target.exists() or target.is_symlink():
                    previous = target.with_name(f".{target.name}.previous-{os.getpid()}")
                    remove(previous)
                    target.rename(previous)
                moved.append((target, previous))
                staged.rename(target)
        except BaseException:
            for target, previous in reversed(moved):
                if previous is not None:
                    if target.exists():
                        remove(target)
                    previous.rename(target)
            raise
        for _, previous in moved:
            if previous is not None:
                remove(previous)


def remove(path: Path, ignore_errors: bool = False) -> None:
    """Remove a file, a link or a whole folder; nothing when ``path`` does not exist.

    :param ignore_errors: leave a folder's entries that cannot be removed (a clean-up that must not fail).
    """
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=ignore_errors)
    else:
        path.unlink(missing_ok=True)
