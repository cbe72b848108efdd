"""The environments the pipeline trains on, each behind an :class:`~reservoir_dqn.envs.profile.EnvProfile`.

``profile(config)`` is the one place that maps ``env.name`` to what an environment is; the
rest of the pipeline asks the profile. Adding an environment means adding a profile here.
"""

from __future__ import annotations

from reservoir_dqn.config import EnvConfig
from reservoir_dqn.envs.cartpole import CartPoleProfile
from reservoir_dqn.envs.profile import EnvProfile, Episodes, Metric
from reservoir_dqn.envs.reservoir_profile import ReservoirProfile

PROFILES: dict[str, EnvProfile] = {profile.name: profile for profile in (ReservoirProfile(), CartPoleProfile())}


def profile(config: EnvConfig) -> EnvProfile:
    """The profile of the environment ``config.name``."""
    return PROFILES[config.name]


__all__ = ["PROFILES", "EnvProfile", "Episodes", "Metric", "profile"]
