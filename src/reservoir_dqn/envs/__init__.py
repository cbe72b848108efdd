"""The environments the pipeline trains on, each behind an :class:`~reservoir_dqn.envs.profile.EnvProfile`.

``profile(config)`` is the one place that maps ``env.name`` to what an environment is; the
rest of the pipeline asks the profile. The registry holds the reservoir and CartPole; a name
``reservoir-<river>`` is a reservoir under a name of its own (its own experiment, model and
champion: a real river's record beside the illustrative reservoir); any other name is a
Gymnasium id, given the generic :class:`~reservoir_dqn.envs.gym_profile.GymProfile`
the first time it is asked for. A user's own profile is added with :func:`register`, without
editing the package; its settings are a section of ``env`` of its own, whose model it declares
(``section`` and ``settings_model``), validated with the rest of params.yaml. The reservoir
lives in :mod:`.reservoir`; what only some environments offer (a held-out record, advice to
operators) the profile offers, so no other package asks which environment it has.

May import: config, common (``tests/test_house.py`` checks every layer).
"""

from __future__ import annotations

import gymnasium as gym

from reservoir_dqn.config import ConfigError, EnvConfig, register_settings, unregister_settings
from reservoir_dqn.envs.cartpole import cartpole_profile
from reservoir_dqn.envs.gym_profile import GymProfile, gym_settings, import_packages
from reservoir_dqn.envs.profile import EnvProfile, Episodes, Metric
from reservoir_dqn.envs.reservoir.profile import NAMED, ReservoirProfile

PROFILES: dict[str, EnvProfile] = {}


def register(env_profile: EnvProfile, *, replace: bool = False) -> EnvProfile:
    """Make ``env_profile`` the profile of ``env.name: <its name>``, its settings ``env.<its section>``.

    A taken name needs ``replace``; a section is shared only by profiles of the same settings model.
    """
    if env_profile.name in PROFILES and not replace:
        raise ValueError(f"an environment profile named {env_profile.name!r} is already registered")
    register_settings(env_profile.section, env_profile.settings_model)
    PROFILES[env_profile.name] = env_profile
    return env_profile


def unregister(name: str) -> None:
    """Forget the profile ``name`` (a Gymnasium id gets the generic profile again when next asked for), and its
    section's model when no other profile reads that section."""
    removed = PROFILES.pop(name, None)
    if removed is not None and all(other.section != removed.section for other in PROFILES.values()):
        unregister_settings(removed.section)


def profile(config: EnvConfig) -> EnvProfile:
    """The profile of the environment ``config.name``, its spec checked (one-line :class:`ConfigError` if unusable).

    Every settings section of ``env`` is checked too: a section no environment registered is
    refused (a misspelling), and each registered one must be valid, whenever params.yaml was loaded.
    """
    if config.name not in PROFILES and config.name.startswith(NAMED):
        register(ReservoirProfile(config.name))
    if config.name not in PROFILES:
        import_packages(config)
        if config.name not in gym.registry:
            known = ", ".join(PROFILES)
            imported = gym_settings(config).packages
            packages = f" after importing {', '.join(imported)}" if imported else ""
            raise ConfigError(
                f"env.name: {config.name!r} is neither a profile ({known}) nor a Gymnasium id{packages} "
                "(a third-party package's ids need it in env.gym.packages)"
            )
        register(GymProfile(config.name))
    env_profile = PROFILES[config.name]
    config.check_sections()  # after env.gym.packages registered theirs
    env_profile.check(config)
    if config.section != env_profile.section:
        raise ConfigError(
            f"env.section: {config.name}'s settings are env.{env_profile.section}, not env.{config.section}: "
            f"set env.section to {env_profile.section}"
        )
    return env_profile


register(ReservoirProfile())
register(cartpole_profile())

__all__ = ["PROFILES", "EnvProfile", "Episodes", "GymProfile", "Metric", "profile", "register", "unregister"]
