"""The environment profiles: CartPole's specs, seeding and state; what every profile provides."""

from __future__ import annotations

import torch
from torchrl.envs.utils import check_env_specs

from reservoir_dqn.config import load_config
from reservoir_dqn.envs import PROFILES, profile
from reservoir_dqn.envs.baselines import RandomPolicy
from reservoir_dqn.evaluation import describe, run_episodes
from tests.conftest import REPO

CARTPOLE = load_config(REPO / "params.yaml", ["env.name=CartPole-v1"]).env
PROFILE = profile(CARTPOLE)


def test_cartpole_specs_and_batch() -> None:
    env = PROFILE.make(CARTPOLE, [0, 1, 2])
    check_env_specs(env)
    assert env.batch_size == (3,)
    assert env.observation_spec["observation"].shape == (3, 4)
    assert env.action_spec_unbatched.space.n == 2
    assert PROFILE.episode_limit(CARTPOLE) == 500
    assert PROFILE.optimum_return(CARTPOLE, {"random": 20.0}) == 500.0


def test_copy_i_behaves_like_a_single_env_with_its_seed() -> None:
    first = PROFILE.make(CARTPOLE, [100, 101, 102]).reset()["observation"]
    for index in range(3):
        single = PROFILE.make(CARTPOLE, [100 + index])
        assert torch.equal(single.reset()["observation"][0], first[index])


def test_seeded_rollouts_repeat_exactly() -> None:
    def rollout() -> torch.Tensor:
        return PROFILE.make(CARTPOLE, [7, 8]).rollout(50, RandomPolicy(2, 0), break_when_any_done=False)[
            "next", "observation"
        ]

    assert torch.equal(rollout(), rollout())


def test_solved_is_the_share_of_episodes_reaching_gymnasiums_threshold() -> None:
    episodes = run_episodes(PROFILE, CARTPOLE, RandomPolicy(2, 0), [10, 11, 12, 13])
    described = describe(PROFILE, CARTPOLE, episodes)
    assert described["solved"] == 0.0 and described["return"] < 100


def test_every_profile_declares_score_first_and_return() -> None:
    for env_profile in PROFILES.values():
        names = [metric.name for metric in env_profile.headline]
        assert names[:2] == ["score", "return"], env_profile.name
