"""The ``env`` section: which environment, and where its own settings are; it knows no environment.

An environment's settings are a section of ``env`` named by ``env.section`` (the reservoir's
``env.reservoir``, a Gymnasium id's ``env.gym``). Their model lives beside the environment's
profile, which declares it with :func:`register_settings` (:func:`reservoir_dqn.envs.register`
does so for a profile), so a new environment is added without editing this package. The
loader validates every registered section present in params.yaml, so a bad value is refused
in one line naming its key, whichever environment is trained.

``env.section`` is redundant with ``env.name`` on purpose: DVC cannot derive one from the
other, and the stages' dependencies in ``dvc.yaml`` are ``env.${env.section}``, so a change to
the reservoir's settings does not re-run a CartPole experiment.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reservoir_dqn.common.errors import ConfigError
from reservoir_dqn.config.sections import PositiveInt, Section

Settings = TypeVar("Settings", bound=BaseModel)

# The params of ``env`` a stage that makes or reads an environment depends on, as dvc.yaml lists them.
CURRENT_SECTION = "env.${env.section}"
ENV_PARAMS = ("env.name", "env.section", "env.num_envs", CURRENT_SECTION)

# Section name -> the model of its settings, as the environments registered them.
SETTINGS: dict[str, type[BaseModel]] = {}


def register_settings(section: str, model: type[BaseModel]) -> None:
    """Declare that ``env.<section>`` holds settings of ``model`` (validated when params.yaml loads)."""
    if SETTINGS.get(section, model) is not model:
        raise ValueError(f"env.{section} is already the section of {SETTINGS[section].__name__}, not {model.__name__}")
    SETTINGS[section] = model


def unregister_settings(section: str) -> None:
    """Forget the model of ``env.<section>``."""
    SETTINGS.pop(section, None)


class EnvConfig(Section):
    """Which environment to train on, where its settings are, and how many copies each agent steps together.

    Every other key of ``env`` is an environment's settings section (a mapping).
    """

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    name: str = Field(
        min_length=1,
        description="Environment: 'reservoir', a reservoir under a name of its own ('reservoir-<river>': its own "
        "experiment, model and champion), or a Gymnasium id with a discrete action space and a box "
        "observation ('CartPole-v1', 'Acrobot-v1', 'MountainCar-v0', ...).",
    )
    section: str = Field(
        pattern=r"^[a-z][a-z0-9_]*$",
        description="The section of env that holds this environment's settings: 'reservoir' (reservoir, "
        "reservoir-<river>) or 'gym' (a Gymnasium id). The stages depend on that section only.",
    )
    num_envs: PositiveInt = Field(description="Environments each agent steps together while collecting.")

    @model_validator(mode="after")
    def _sections_are_mappings(self) -> EnvConfig:
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, (Mapping, BaseModel)):
                raise ValueError(f"env.{key} ({value!r}) must be a section of settings (a mapping)")
        if self.section not in (self.model_extra or {}):
            raise ValueError(f"section ({self.section}) names no section of env: add a section {self.section}")
        return self

    def resolve(self, keys: Sequence[str]) -> tuple[str, ...]:
        """``keys`` as dvc.yaml lists them, with ``env.${env.section}`` this config's section."""
        return tuple(f"env.{self.section}" if key == CURRENT_SECTION else key for key in keys)

    def sections(self) -> dict[str, Any]:
        """The settings sections, by name (raw mappings, or their models once validated)."""
        return dict(self.model_extra or {})

    def settings(self, model: type[Settings], section: str | None = None) -> Settings:
        """``env.<section>`` (default: ``env.section``) as ``model``; a :class:`ConfigError` in one line if invalid.

        The loader validated it already when ``model`` was registered then (:func:`register_settings`);
        otherwise it is validated here.
        """
        section = section or self.section
        value = self.sections().get(section)
        if value is None:
            raise ConfigError(f"env.{section}: missing section")
        if isinstance(value, model):
            return value
        try:
            return model.model_validate(value.model_dump(mode="json") if isinstance(value, BaseModel) else value)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            key = ".".join(["env", section, *(str(part) for part in first["loc"])])
            raise ConfigError(f"{key}: {first['msg']}") from None

    def check_sections(self) -> None:
        """Refuse a settings section no environment registered (a misspelled ``env.reservior``), in one line."""
        for key in self.sections():
            if key not in SETTINGS:
                close = difflib.get_close_matches(key, list(SETTINGS), n=1, cutoff=0.6)
                hint = f" (did you mean 'env.{close[0]}'?)" if close else ""
                known = ", ".join(SETTINGS)
                raise ConfigError(f"env.{key} is no environment's settings section{hint}; sections: {known}")
            self.settings(SETTINGS[key], key)

    def with_settings(self, section: str, settings: BaseModel) -> EnvConfig:
        """A copy whose ``env.<section>`` is ``settings``."""
        return self.model_copy(update={section: settings})

    def current(self) -> dict[str, Any]:
        """What the environment is made of: its name, copies and own settings section, as plain data."""
        settings = self.sections()[self.section]
        plain = settings.model_dump(mode="json") if isinstance(settings, BaseModel) else dict(settings)
        return {"name": self.name, "section": self.section, "num_envs": self.num_envs, self.section: plain}
