"""CartPole-v1's profile: Gymnasium's environment, scored against its 500-step optimum.

It is the generic :class:`~reservoir_dqn.envs.gym_profile.GymProfile` with what CartPole adds: a
return of 500 (the episode limit, one reward per step) is the optimum, so the score is
``(R - R_random) / (500 - R_random)`` rather than relative to Gymnasium's
``reward_threshold`` (475, which still defines *solved*); its observation factors are
measured, because two of its bounds are infinite and the other two are twice the region
where an episode lives; and its trajectory columns have names.
"""

from __future__ import annotations

from reservoir_dqn.envs.gym_profile import GymProfile

# The observation brought to about [-1, 1]: cart position and pole angle by their termination
# bounds (2.4 m, 12 degrees = 0.2095 rad), the two velocities by 2 (their range under
# control). Unscaled, the angle reaches only +-0.2 beside a position of +-2.4 and the network
# is slow to see it; scaled, DQN learns to stop the cart drifting off the track.
CARTPOLE_SCALE = (1 / 2.4, 1 / 2.0, 1 / 0.2095, 1 / 2.0)


def cartpole_profile() -> GymProfile:
    """CartPole-v1, scored against its optimum of 500."""
    return GymProfile(
        "CartPole-v1",
        reference=500.0,
        scale=CARTPOLE_SCALE,
        observation_names=("cart_position", "cart_velocity", "pole_angle", "pole_velocity"),
    )
