"""Typed, frozen, validated parameters: ``params.yaml`` plus command-line overrides.

:mod:`.sections` holds the pydantic models (one per params.yaml section, every field
described; the ``env`` section, which names an environment and where its settings are, is
:mod:`.environments`: each environment's settings model lives beside its profile), :mod:`.tree` the whole
configuration and its cross-section rules, and :mod:`.loading` reads the file safely,
applies ``--set`` overrides and turns any problem into a one-line :class:`ConfigError`.
:mod:`.variants` holds the registries through which the packages that implement a
parameter's values declare them (a Q-network head, a tracking backend).

May import: common (``tests/test_house.py`` checks every layer).
"""

from reservoir_dqn.common.errors import ConfigError
from reservoir_dqn.config.environments import (
    ENV_PARAMS,
    SETTINGS,
    EnvConfig,
    register_settings,
    unregister_settings,
)
from reservoir_dqn.config.loading import (
    add_config_arguments,
    config_from_args,
    load_config,
    parse_yaml,
    read_params,
    split_override,
)
from reservoir_dqn.config.sections import (
    DEFAULT_PARAMS,
    TEST_SEED_MIN,
    TRAIN_SEED_LIMIT,
    TUNE_SEED_BASE,
    VALIDATION_SEED_BASE,
    DQNConfig,
    TrainConfig,
    TuneConfig,
)
from reservoir_dqn.config.tree import Config, flatten

__all__ = [
    "DEFAULT_PARAMS",
    "ENV_PARAMS",
    "SETTINGS",
    "TEST_SEED_MIN",
    "TRAIN_SEED_LIMIT",
    "TUNE_SEED_BASE",
    "VALIDATION_SEED_BASE",
    "Config",
    "ConfigError",
    "DQNConfig",
    "EnvConfig",
    "TrainConfig",
    "TuneConfig",
    "add_config_arguments",
    "config_from_args",
    "flatten",
    "load_config",
    "parse_yaml",
    "read_params",
    "register_settings",
    "split_override",
    "unregister_settings",
]
