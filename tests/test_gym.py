"""Any Gymnasium id: the generic profile's spec check, score, scaling, exact state, packages and registration."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torchrl.envs.utils import check_env_specs

import tests.gym_corridor  # noqa: F401 - registers tests/Corridor-v0, as a third-party package would
from reservoir_dqn.commands import train
from reservoir_dqn.commands.exits import Exit
from reservoir_dqn.config import ConfigError, load_config
from reservoir_dqn.envs import GymProfile, profile, register, unregister
from reservoir_dqn.envs.baselines import RandomPolicy
from reservoir_dqn.training.loop import train as train_loop
from reservoir_dqn.training.session import start
from tests.conftest import REPO, write_params


def _env(*overrides: str):  # type: ignore[no-untyped-def]
    return load_config(REPO / "params.yaml", ["env.section=gym", *overrides]).env


@pytest.mark.parametrize(
    ("env_id", "reference", "scale"),
    [
        ("Acrobot-v1", -100.0, (1, 1, 1, 1, 1 / (4 * math.pi), 1 / (9 * math.pi))),
        ("MountainCar-v0", -110.0, (1 / 1.2, 1 / 0.07)),
        ("CartPole-v1", 500.0, (1 / 2.4, 1 / 2.0, 1 / 0.2095, 1 / 2.0)),  # declared: its measured factors
    ],
)
def test_classic_control_ids_score_against_their_reference_and_scale_by_finite_bounds(
    env_id: str, reference: float, scale: tuple[float, ...]
) -> None:
    config = _env(f"env.name={env_id}")
    env_profile = profile(config)
    env = env_profile.make(config, [0, 1, 2])
    check_env_specs(env)
    assert env.batch_size == (3,)
    assert env_profile.optimum_return(config, {"random": -500.0}) == reference
    assert env_profile.observation_scale(config) == pytest.approx(scale, rel=1e-6)
    assert [metric.name for metric in env_profile.headline] == ["score", "return", "solved"]
    assert [(metric.low, metric.high) for metric in env_profile.metrics] == [(-math.inf, math.inf)] * 2 + [(0, 1)]


def test_the_reference_return_is_a_setting_and_kwargs_reach_gymnasium_make() -> None:
    config = _env("env.name=Acrobot-v1", "env.gym.reference_return=-80", "env.gym.kwargs={max_episode_steps: 40}")
    env_profile = profile(config)
    assert env_profile.optimum_return(config, {}) == -80.0
    assert env_profile.episode_limit(config) == 40
    assert env_profile.settings(config) == {
        "env.name": "Acrobot-v1",
        "env.gym.reference_return": -80.0,
        "env.gym.kwargs.max_episode_steps": 40,
    }


@pytest.mark.parametrize("env_id", ["Acrobot-v1", "MountainCar-v0", "CartPole-v1", "tests/Corridor-v0"])
def test_state_restored_mid_episode_continues_exactly(env_id: str) -> None:
    config = _env(f"env.name={env_id}")
    env_profile = profile(config)
    env, policy = env_profile.make(config, [3, 4, 5]), RandomPolicy(env_profile.make(config, [0]).action_spec.n, 1)
    first = env.rollout(30, policy, break_when_any_done=False)
    carrier = env.maybe_reset(env.step_mdp(first[..., -1]))
    state, policy_state = env_profile.get_state(env), policy.generator.get_state()
    assert state["exact"]
    go_on = env.rollout(60, policy, auto_reset=False, tensordict=carrier.clone(), break_when_any_done=False)
    other = env_profile.make(config, [50, 51, 52])
    replay = RandomPolicy(policy.num_actions, 1)
    assert env_profile.set_state(other, state)
    replay.generator.set_state(policy_state)
    again = other.rollout(60, replay, auto_reset=False, tensordict=carrier.clone(), break_when_any_done=False)
    assert torch.equal(go_on["next", "observation"], again["next", "observation"])
    assert torch.equal(go_on["next", "done"], again["next", "done"])  # resets after an episode end repeat too


def test_a_state_held_by_an_object_is_not_captured() -> None:
    config = _env("env.name=tests/Corridor-v0", "env.gym.kwargs={opaque: true}")
    env_profile = profile(config)
    env = env_profile.make(config, [1, 2])
    assert env_profile.get_state(env) == {"exact": False}
    assert not env_profile.set_state(env, {"exact": False})


@pytest.mark.slow
def test_an_uncapturable_environment_resumes_at_an_episode_boundary_and_says_so(project: Path, capsys) -> None:
    write_params(
        project / "params.yaml",
        **{
            "env.name": "tests/Corridor-v0",
            "env.section": "gym",
            "env.gym.kwargs": {"opaque": True},
            "train.total_frames": 200,
        },
    )
    assert train.main([]) == Exit.OK
    capsys.readouterr()
    assert train.main(["--set", "train.total_frames=400"]) == Exit.OK
    out = capsys.readouterr().out
    assert "resuming at an episode boundary: tests/Corridor-v0's state cannot be saved" in out
    summary = json.loads((project / "metrics/train.json").read_text())
    assert summary["exact_resume"] is False and summary["resumed_at_episode_boundary_at_frames"] == [200]
    assert summary["frames"] == 400


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["env.name=Pendulum-v1"], ["env.name: Pendulum-v1 has a Box action space", "Discrete"]),
        (["env.name=tests/DictCorridor-v0"], ["has a Dict observation", "flat Box"]),
        (["env.name=NoSuchEnv-v0"], ["'NoSuchEnv-v0' is neither a profile", "env.gym.packages"]),
        (["env.name=tests/Elsewhere-v0", "env.gym.packages=[no_such_package]"], ["cannot import 'no_such_package'"]),
        (
            ["env.name=Acrobot-v1", "env.gym.kwargs={wind: 3}"],
            ["env.gym.kwargs: gymnasium.make('Acrobot-v1', ...) fails"],
        ),
        (
            ["env.name=tests/EndlessCorridor-v0"],
            ["has no episode limit: set env.gym.kwargs.max_episode_steps"],
        ),
    ],
)
def test_an_unsupported_environment_is_refused_in_one_line_before_any_work(
    project: Path, capsys, overrides: list[str], fragments: list[str]
) -> None:
    before = sorted(path.name for path in project.iterdir())
    assert train.main([arg for override in overrides for arg in ("--set", override)]) == Exit.BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: env.") and "\n" not in err, err
    assert all(fragment in err for fragment in fragments), err
    assert sorted(path.name for path in project.iterdir()) == before


def test_a_package_in_env_gym_packages_registers_its_ids_before_the_environment_is_made(project: Path) -> None:
    config = _env("env.name=tests/Corridor-v0", "env.gym.packages=[tests.gym_corridor]")
    assert profile(config).optimum_return(config, {}) == -8.0  # its spec's reward_threshold


def test_an_id_without_a_threshold_needs_a_reference_return() -> None:
    with pytest.raises(ConfigError, match=r"declares no reward_threshold: set env\.gym\.reference_return"):
        profile(_env("env.name=tests/UnscoredCorridor-v0"))
    config = _env("env.name=tests/UnscoredCorridor-v0", "env.gym.reference_return=-6")
    assert profile(config).optimum_return(config, {}) == -6.0
    assert [metric.name for metric in profile(config).headline] == ["score", "return"]  # no threshold, no solved


def test_a_third_environment_is_added_through_the_registration_function(project: Path) -> None:
    """A user's profile, registered without editing the package, trains like the built-in ones."""
    corridor = register(GymProfile("tests/Corridor-v0", reference=-5.0, observation_names=("place", "noise")))
    with pytest.raises(ValueError, match="already registered"):
        register(GymProfile("tests/Corridor-v0"))
    write_params(
        project / "params.yaml", **{"env.name": "tests/Corridor-v0", "env.section": "gym", "train.total_frames": 400}
    )
    config = load_config(project / "params.yaml")
    assert profile(config.env) is corridor
    result = train_loop(start(config, project / "ck"))
    assert result.summary.env == "tests/Corridor-v0" and result.summary.frames == 400
    assert result.summary.validation_reference.optimum_return == -5.0
    unregister("tests/Corridor-v0")
    assert profile(config.env) is not corridor  # the generic profile again
