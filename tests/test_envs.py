"""The environment factory: specs, seeding, batched sub-environments."""

from __future__ import annotations

import torch
import torch as _torch
from torchrl.envs.utils import check_env_specs

from reservoir_dqn.config import load_config
from reservoir_dqn.envs import episode_limit, episode_success, make_env
from tests.conftest import REPO

CARTPOLE = load_config(REPO / "params.yaml", ["env.name=CartPole-v1"]).env


def test_cartpole_specs_and_batch() -> None:
    env = make_env(CARTPOLE, 3)
    check_env_specs(env)
    assert env.batch_size == (3,)
    assert env.observation_spec["observation"].shape == (3, 4)
    assert env.action_spec_unbatched.space.n == 2
    assert episode_limit(CARTPOLE) == 500
    returns = _torch.tensor([474.0, 475.0, 500.0])
    assert episode_success(CARTPOLE, returns, returns, {}).tolist() == [False, True, True]


def test_sub_environment_i_behaves_like_a_single_env_seeded_seed_plus_i() -> None:
    batched = make_env(CARTPOLE, 3)
    batched.set_seed(100)
    first = batched.reset()["observation"]
    for index in range(3):
        single = make_env(CARTPOLE, 1)
        single.set_seed(100 + index)
        assert torch.equal(single.reset()["observation"][0], first[index])


def test_seeded_rollouts_repeat_exactly() -> None:
    def rollout() -> torch.Tensor:
        env = make_env(CARTPOLE, 2)
        env.set_seed(7)
        torch.manual_seed(0)  # random actions come from torch's generator
        return env.rollout(50, break_when_any_done=False)["next", "observation"]

    assert torch.equal(rollout(), rollout())
