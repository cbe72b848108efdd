"""The environment profiles: CartPole's specs, seeding and state; what every profile provides; registration."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torchrl.envs.utils import check_env_specs

from reservoir_dqn.config import SETTINGS, ConfigError, EnvConfig, load_config, register_settings
from reservoir_dqn.envs import PROFILES, profile, register, unregister
from reservoir_dqn.envs.baselines import RandomPolicy
from reservoir_dqn.envs.rollouts import run_episodes
from reservoir_dqn.evaluation.episodes import describe
from tests.conftest import REPO, write_params
from tests.identity_env import IDENTITY, IdentityProfile, IdentitySettings

CARTPOLE = load_config(REPO / "params.yaml", ["env.name=CartPole-v1", "env.section=gym"]).env
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


def test_the_config_package_knows_no_environment() -> None:
    """Each environment's settings live beside its profile: config/ names no environment and imports no envs/."""
    assert set(EnvConfig.model_fields) == {"name", "section", "num_envs"}
    for module in (REPO / "src/reservoir_dqn/config").glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("reservoir_dqn.envs"), module.name
    assert {"reservoir", "gym"} <= set(SETTINGS)


def test_an_environment_registered_with_a_settings_section_of_its_own_is_validated_with_params_yaml(
    tmp_path: Path,
) -> None:
    """A third environment, added through the public registration function: no file of reservoir_dqn is edited."""
    write_params(tmp_path / "params.yaml", **IDENTITY)
    with pytest.raises(ConfigError, match=r"^--set env.section=identity2: env.section \(identity2\) names no section"):
        load_config(tmp_path / "params.yaml", ["env.section=identity2"])
    register(IdentityProfile(), replace=True)
    try:
        config = load_config(tmp_path / "params.yaml", ["env.identity.length=7"])
        assert profile(config.env).episode_limit(config.env) == 7
        with pytest.raises(ConfigError, match=r"^--set env.identity.symbols=1: env.identity.symbols = 1: .*2$"):
            load_config(tmp_path / "params.yaml", ["env.identity.symbols=1"])
        with pytest.raises(
            ConfigError, match=r"unknown key 'env.identity.lenght' \(did you mean 'env.identity.length'"
        ):
            load_config(tmp_path / "params.yaml", ["env.identity.lenght=7"])
        wrong = load_config(tmp_path / "params.yaml", ["env.section=reservoir"])
        with pytest.raises(ConfigError, match=r"^env.section: identity's settings are env.identity, not env.reservoir"):
            profile(wrong.env)
    finally:
        unregister("identity")


def test_a_settings_section_is_one_model_and_another_environment_cannot_take_it() -> None:
    with pytest.raises(ValueError, match=r"env.reservoir is already the section of ReservoirConfig"):
        register_settings("reservoir", IdentitySettings)


def test_a_misspelled_settings_section_is_refused_in_one_line(tmp_path: Path) -> None:
    write_params(tmp_path / "params.yaml", **{"env.reservior": {"capacity": 30}})
    config = load_config(tmp_path / "params.yaml")
    with pytest.raises(
        ConfigError, match=r"^env.reservior is no environment's settings section \(did you mean 'env.reservoir'"
    ):
        profile(config.env)
    with pytest.raises(ConfigError, match=r"^env.nosuch: missing section$"):
        config.env.settings(IdentitySettings, "nosuch")
