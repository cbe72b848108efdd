"""Checkpoints: atomic save, safe load, resume from the newest valid one.

A checkpoint is one TorchRL :class:`~torchrl.checkpoint.Checkpoint` archive
(``checkpoint-<frames>.torchrl``, a ZIP file published with an atomic rename) holding
the loss module (online and target networks), the optimiser, the exploration and
target-updater state, the process RNG states, the training counters and, optionally,
the replay buffer. Its manifest records the hash of the parameters that produced it.

Loading never runs code from the file: every archive member must be JSON or a raw
tensor memory map (no pickle, which TorchRL's replay-buffer ``loads`` and tensordict
would otherwise accept), and every member's CRC-32 is verified before any live object
is touched. A corrupt or unsafe checkpoint is reported in one line and set aside, and
the previous one is tried.
"""

from __future__ import annotations

import hashlib
import logging
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from torchrl.checkpoint import Checkpoint, CheckpointAdapter, CheckpointRotation

from reservoir_dqn.common.errors import first_line
from reservoir_dqn.common.files import remove

CHECKPOINT_PREFIX = "checkpoint"
CHECKPOINT_PATTERN = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)\.torchrl$")
SAFE_MEMBER_SUFFIXES = (".json", ".memmap")
CONFIG_HASH_KEY = "config_hash"

log = logging.getLogger(__name__)


class SafeReplayBufferAdapter(CheckpointAdapter):
    """Saves a replay buffer with its own ``dumps`` but without the pickle file it adds.

    ``TensorDictReplayBuffer.dumps`` writes storage, sampler and writer as memory maps and
    JSON, plus ``prefetch.pkl`` for its prefetch queue. We never prefetch, so that file
    holds nothing we need; dropping it keeps checkpoints free of pickle, and the member
    check in :func:`verify_archive` refuses any checkpoint that has one.
    """

    adapter_id = "reservoir_dqn.replay_buffer"

    def save(self, component: Any, path: Path, *, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        path.mkdir(parents=True, exist_ok=True)
        component.dumps(path)
        (path / "prefetch.pkl").unlink(missing_ok=True)

    def load(
        self,
        component: Any,
        path: Path,
        *,
        map_location: Any,
        tensor_load_kwargs: Mapping[str, Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> None:
        component.loads(path)

    def _detach_from_load_path(self, component: Any) -> None:
        # The archive is extracted to a temporary folder that is deleted after loading:
        # copy the memory-mapped storage into memory so the buffer does not point there.
        storage = component._storage
        if getattr(storage, "initialized", False):
            storage._storage = storage._storage.clone()


class CorruptCheckpoint(Exception):
    """A checkpoint that cannot or must not be loaded; the message says why in one line."""


def verify_archive(path: Path) -> None:
    """Refuse unsafe or damaged archives before anything is loaded from them.

    Raises :class:`CorruptCheckpoint` if the file is not a ZIP archive, holds a member that
    is not JSON or a raw memory map (a pickle could run code), has a member path that
    escapes the archive, or fails a CRC-32 check.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                member = PurePosixPath(name)
                if member.is_absolute() or ".." in member.parts:
                    raise CorruptCheckpoint(f"member '{name}' points outside the archive")
                if not name.endswith(SAFE_MEMBER_SUFFIXES):
                    raise CorruptCheckpoint(f"member '{name}' is neither JSON nor a tensor memory map")
            damaged = archive.testzip()
    except zipfile.BadZipFile as error:
        raise CorruptCheckpoint(f"not a valid archive ({error})") from None
    except OSError as error:
        raise CorruptCheckpoint(f"cannot be read ({error.strerror or error})") from None
    if damaged is not None:
        raise CorruptCheckpoint(f"checksum mismatch in member '{damaged}'")


PACKAGE = Path(__file__).resolve().parents[1]  # reservoir_dqn/: this module lives in its training/ package
# The libraries whose code defines what training computes: another version may compute otherwise.
TRAINING_LIBRARIES = ("torch", "torchrl", "tensordict", "numpy", "gymnasium")


def checkpoint_key(training_hash: str) -> str:
    """What a checkpoint is keyed on: the params that determine training, this package's code and its libraries."""
    from importlib.metadata import version

    libraries = " ".join(f"{name}=={version(name)}" for name in TRAINING_LIBRARIES)
    return hashlib.sha256(f"{training_hash} {source_hash()} {libraries}".encode()).hexdigest()


def source_hash() -> str:
    """Hash of this package's code: a checkpoint written by other code is never resumed.

    DVC re-runs the train stage when the code changed; resuming the old code's (perhaps
    finished) checkpoint would then ship a model that this code never computed.
    """
    digest = hashlib.sha256()
    for path in source_files():
        digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def source_files() -> list[Path]:
    """Every module of the package, in a fixed order: what :func:`source_hash` hashes."""
    return sorted(path for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts)


def checkpoint_frames(path: Path) -> int:
    """Frames collected when the checkpoint at ``path`` was written (from its file name)."""
    match = CHECKPOINT_PATTERN.match(path.name)
    if match is None:
        raise ValueError(f"{path} is not a checkpoint file name")
    return int(match.group(1))


def newest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint with the most frames in ``directory``, if any."""
    if not directory.is_dir():
        return None
    paths = [path for path in directory.iterdir() if CHECKPOINT_PATTERN.match(path.name)]
    return max(paths, key=checkpoint_frames, default=None)


class Checkpointer:
    """Writes checkpoints of one configuration into one folder and restores the newest valid one.

    :param directory: the checkpoint folder (DVC keeps it across runs with ``persist: true``).
    :param config_hash: hash of the parameters (and code) that determine training; a
        checkpoint with another hash is never resumed.
    :param keep: how many of the newest checkpoints to keep.
    """

    def __init__(self, directory: Path, config_hash: str, keep: int) -> None:
        self.directory = directory
        self.config_hash = config_hash
        self._rotation = CheckpointRotation(directory, keep_last=keep, prefix=CHECKPOINT_PREFIX)

    def save(self, checkpoint: Checkpoint, frames: int) -> Path:
        """Write a checkpoint for ``frames`` atomically and drop the ones beyond ``keep``."""
        path: Path = self._rotation.save(checkpoint, step=frames, metadata={CONFIG_HASH_KEY: self.config_hash})
        return path

    def candidates(self) -> list[Path]:
        """Checkpoints of this configuration, newest first, after setting aside those of others.

        Leftovers of an interrupted write (TorchRL stages to hidden temporary names) are
        removed. Checkpoints written with other parameters, code or library versions, or whose
        manifest carries no key at all, are foreign: removed with a notice, since they can
        never be resumed and keeping them would confuse the rotation. A manifest that cannot be
        read is judged when restoring (it is set aside as corrupt).
        """
        if not self.directory.is_dir():
            return []
        for leftover in self.directory.glob(f".{CHECKPOINT_PREFIX}-*"):
            remove(leftover, ignore_errors=True)
        paths = sorted(
            (path for path in self.directory.iterdir() if CHECKPOINT_PATTERN.match(path.name)),
            key=checkpoint_frames,
            reverse=True,
        )
        mine: list[Path] = []
        others: list[Path] = []
        for path in paths:
            config_hash = _manifest_hash(path)
            (mine if config_hash in (UNREADABLE, self.config_hash) else others).append(path)
        if others:
            log.warning(
                f"{self.directory}: {len(others)} checkpoint(s) come from other parameters, code or library versions "
                "(or carry no key) and are never resumed; "
                "removing them and starting from this configuration's own state"
            )
            for path in others:
                remove(path, ignore_errors=True)
        return mine

    def restore(self, checkpoint: Checkpoint, path: Path) -> None:
        """Load ``path`` into the live components of ``checkpoint``; raise CorruptCheckpoint on failure.

        The archive is verified first, so a damaged file is refused before any component
        changes. Should loading still fail part-way, the caller must rebuild its components.
        """
        verify_archive(path)
        try:
            checkpoint.load(path)
        except Exception as error:  # noqa: BLE001 - any failure to load means "not usable"
            raise CorruptCheckpoint(first_line(error)) from None

    def set_aside(self, path: Path, reason: str) -> None:
        """Report a checkpoint that cannot be used, and rename it so it is never tried again.

        Only the newest corrupt checkpoint (the most frames) is kept, for inspection: the
        others are removed, so a folder that sees many faults does not fill the disk.
        """
        aside = path.with_name(path.name + CORRUPT_SUFFIX)
        log.warning(f"{path}: unusable checkpoint ({reason}); set aside as {aside.name}, trying the previous one")
        path.replace(aside)
        corrupt = sorted(self.directory.glob(f"*{CORRUPT_SUFFIX}"), key=_corrupt_frames)
        for older in corrupt[:-1]:
            remove(older, ignore_errors=True)


UNREADABLE = "unreadable manifest"
CORRUPT_SUFFIX = ".corrupt"


def _manifest_hash(path: Path) -> str | None:
    """The key a checkpoint's manifest records; ``None`` when it records none; :data:`UNREADABLE`."""
    try:
        metadata = Checkpoint.manifest(path).get("metadata", {})
    except Exception:  # noqa: BLE001 - an unreadable manifest is judged when restoring
        return UNREADABLE
    value = metadata.get(CONFIG_HASH_KEY) if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else None


def _corrupt_frames(path: Path) -> int:
    """The frames of a checkpoint set aside as corrupt (-1 for a name that is not a checkpoint's)."""
    match = CHECKPOINT_PATTERN.match(path.name.removesuffix(CORRUPT_SUFFIX))
    return -1 if match is None else int(match.group(1))
