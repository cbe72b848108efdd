"""The whole configuration: one field per params.yaml section, the rules that span sections,
and the hash that keys checkpoints.

Each rule of ``Config._consistent`` names the keys it compares, so its message can be shown
to the user as it is.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr, ValidationInfo, model_validator

from reservoir_dqn.config.environments import EnvConfig
from reservoir_dqn.config.sections import (
    DEFAULT_PARAMS,
    TUNE_SEED_BASE,
    CompareConfig,
    DQNConfig,
    EvaluateConfig,
    PathsConfig,
    Section,
    TrackingConfig,
    TrainConfig,
    TuneConfig,
)


class Config(Section):
    """Everything params.yaml holds."""

    seed: int = Field(
        ge=0,
        lt=TUNE_SEED_BASE,
        description="Master seed; every agent's seed derives from it (tuning trials use seeds from 2**30 on).",
    )
    env: EnvConfig
    dqn: DQNConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    tracking: TrackingConfig
    compare: CompareConfig
    tune: TuneConfig
    paths: PathsConfig
    _source: Path = PrivateAttr(default=DEFAULT_PARAMS)  # not a parameter: the file they were read from

    @model_validator(mode="after")
    def _read_from(self, info: ValidationInfo) -> Config:
        """The file named by the validation's context (``{"source": path}``), as :attr:`source` gives it."""
        if isinstance(info.context, dict) and "source" in info.context:
            self._source = Path(info.context["source"])
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        train, dqn = self.train, self.dqn
        if train.frames_per_batch % self.env.num_envs:
            raise ValueError(
                f"train.frames_per_batch ({train.frames_per_batch}) must be a multiple of "
                f"env.num_envs ({self.env.num_envs})"
            )
        for key in ("checkpoint_interval_frames", "eval_interval_frames", "total_frames"):
            value = getattr(train, key)
            if value % train.frames_per_batch:
                raise ValueError(
                    f"train.{key} ({value}) must be a multiple of train.frames_per_batch ({train.frames_per_batch})"
                )
        if self.tracking.log_interval_frames % train.frames_per_batch:
            raise ValueError(
                f"tracking.log_interval_frames ({self.tracking.log_interval_frames}) must be a multiple of "
                f"train.frames_per_batch ({train.frames_per_batch})"
            )
        if train.select_best and not train.eval_interval_frames:
            raise ValueError("train.select_best needs periodic validation: set train.eval_interval_frames above 0")
        if train.stop_at_validation_return is not None and not train.eval_interval_frames:
            raise ValueError(
                "train.stop_at_validation_return needs periodic validation: set train.eval_interval_frames above 0"
            )
        if train.min_replay_size > dqn.buffer_size:
            raise ValueError(
                f"train.min_replay_size ({train.min_replay_size}) is larger than dqn.buffer_size ({dqn.buffer_size})"
            )
        if train.min_replay_size < dqn.batch_size:
            raise ValueError(
                f"train.min_replay_size ({train.min_replay_size}) is smaller than dqn.batch_size ({dqn.batch_size})"
            )
        known = self.flat()
        for key in self.tune.space:
            if key not in known or key.startswith(("tune.", "paths.", "tracking.")):
                close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ValueError(f"tune.space: '{key}' is not a training parameter{hint}")
        return self

    @property
    def training_hash(self) -> str:
        """Hash of everything that changes what training computes; checkpoints are keyed on it.

        ``train.total_frames`` only says where training stops, so raising it continues a
        finished run; how many checkpoints are kept, how often a checkpoint is written and
        how often curves are logged do not change the computation either, nor does another
        environment's settings section.
        """
        exclude = {"total_frames", "keep_checkpoints", "checkpoint_interval_frames", "checkpoint_buffer"}
        train = self.train.model_dump(mode="json", exclude=exclude)
        payload = {"seed": self.seed, "env": self.env.current(), "dqn": _plain(self.dqn), "train": train}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @property
    def source(self) -> Path:
        """The parameter file this config was loaded from (params.yaml unless --params said otherwise)."""
        return self._source

    def flat(self) -> dict[str, Any]:
        """Dotted keys to values, e.g. ``{'dqn.gamma': 0.99, ...}``: what params.yaml says (trackers log it)."""
        return flatten(self.model_dump(mode="json", exclude_unset=True))


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys: ``{'dqn': {'gamma': 0.9}}`` -> ``{'dqn.gamma': 0.9}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat
