"""DiscreteReservoirEnv and its baselines: physics invariants, seeding, and the SDP optimum."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

from reservoir_dqn.config import load_config
from reservoir_dqn.envs import Episodes, profile
from reservoir_dqn.envs.baselines import RandomPolicy
from reservoir_dqn.envs.reservoir.baselines import SDPPolicy, StandardOperatingPolicy, reservoir_optimum
from reservoir_dqn.envs.reservoir.env import DiscreteReservoirEnv
from reservoir_dqn.envs.reservoir.model import ReservoirModel, discretise_lognormal
from reservoir_dqn.envs.reservoir.sdp import end_values
from reservoir_dqn.envs.rollouts import run_episodes
from reservoir_dqn.evaluation.episodes import reference
from tests.conftest import REPO

ENV = load_config(REPO / "params.yaml", ["env.name=reservoir"]).env
CONFIG = ENV.reservoir
MODEL = ReservoirModel.from_config(CONFIG)
PROFILE = profile(ENV)


def make_env(config, count: int, seed: int = 0):  # type: ignore[no-untyped-def]
    return PROFILE.make(config, [seed + index for index in range(count)])


def episodes_of(policy, count: int, seed: int) -> Episodes:  # type: ignore[no-untyped-def]
    return run_episodes(PROFILE, ENV, policy, [seed + index for index in range(count)])


def _random_rollout(num_envs: int, seed: int, steps: int, action_seed: int) -> TensorDict:
    env = DiscreteReservoirEnv(CONFIG, num_envs)
    env.set_seed(seed)
    generator = torch.Generator().manual_seed(action_seed)
    actions = torch.randint(MODEL.num_actions, (steps, num_envs), generator=generator)
    tensordict = env.reset()
    frames = []
    for t in range(steps):
        tensordict["action"] = actions[t]
        out = env.step(tensordict)
        frames.append(out.clone())
        tensordict = env.step_mdp(out) if not bool(out["next", "done"].any()) else env.reset()
    return torch.stack(frames, dim=1)


def test_check_env_specs_passes() -> None:
    check_env_specs(DiscreteReservoirEnv(CONFIG, 5))
    check_env_specs(make_env(ENV, 3))


def test_the_water_value_at_the_end_is_a_reward_component_of_the_last_month_only() -> None:
    """end_value: water_value adds ``reward_end`` to the components (they still sum to the reward), 0 but in the
    episode's last month, where it is the end value of the storage left."""
    config = CONFIG.model_copy(update={"end_value": "water_value", "horizon_months": 24})
    env = DiscreteReservoirEnv(config, 4)
    check_env_specs(env)
    rollout = env.rollout(24, RandomPolicy(ReservoirModel.from_config(config).num_actions, 0))
    nxt = rollout["next"]
    parts = sum(
        nxt[key] for key in ("reward_energy", "reward_deficit", "reward_spill", "reward_violation", "reward_end")
    )
    assert torch.allclose(parts.unsqueeze(-1), nxt["reward"], atol=1e-4)
    assert float(nxt["reward_end"][:, :-1].abs().max()) == 0.0
    ends = end_values(ReservoirModel.from_config(config))
    assert ends is not None
    expected = ends[nxt["storage"][:, -1].round().long(), 0].float()
    assert torch.allclose(nxt["reward_end"][:, -1], expected)
    keys = DiscreteReservoirEnv(CONFIG, 1).rollout(2)["next"].keys()
    assert "reward_end" not in keys  # the default: no end value


@settings(max_examples=10, deadline=None)  # 150 steps each; 25 examples took 3.8 s of the fast suite
@given(seed=st.integers(0, 10_000), action_seed=st.integers(0, 10_000), num_envs=st.integers(1, 6))
def test_mass_balance_and_bounds_hold_on_every_step(seed: int, action_seed: int, num_envs: int) -> None:
    rollout = _random_rollout(num_envs, seed, 150, action_seed)
    nxt = rollout["next"]
    start, end = rollout["storage"].double(), nxt["storage"].double()
    inflow, release, spill = nxt["inflow"].double(), nxt["release"].double(), nxt["spill"].double()
    target = MODEL.release_levels[rollout["action"]]
    assert torch.equal(end, start + inflow - release - spill)  # whole units: exact
    assert bool(((end >= 0) & (end <= CONFIG.capacity)).all())
    assert bool((release <= target).all()) and bool((release <= start + inflow).all())
    assert bool((spill >= 0).all()) and bool(((spill == 0) | (end == CONFIG.capacity)).all())
    components = sum(
        nxt[key].double() for key in ("reward_energy", "reward_deficit", "reward_spill", "reward_violation")
    )
    assert torch.allclose(components, nxt["reward"].squeeze(-1).double(), atol=1e-4)


@pytest.mark.parametrize("time_left", [True, False])
def test_the_horizon_ends_the_episode_as_a_termination_only_when_the_time_is_observed(time_left: bool) -> None:
    env_config = ENV.model_copy(update={"reservoir": CONFIG.model_copy(update={"observe_time_left": time_left})})
    rollout = make_env(env_config, 2).rollout(CONFIG.horizon_months, break_when_any_done=False)
    done = rollout["next", "done"].squeeze(-1)
    assert not bool(done[:, :-1].any()) and bool(done[:, -1].all())
    assert bool(rollout["next", "terminated"][:, -1].all()) is time_left
    assert bool(rollout["next", "truncated"][:, -1].all()) is not time_left
    observation = rollout["observation"]
    assert observation.shape[-1] == (4 if time_left else 3)
    if time_left:  # months left / horizon: 1 at the start, 1/H in the last month
        assert torch.allclose(observation[0, :, 3], 1 - torch.arange(CONFIG.horizon_months) / CONFIG.horizon_months)


def test_state_restored_mid_episode_continues_exactly() -> None:
    """The checkpointed state (physics, the episode's inflows, counts, generators) resumes an episode bit for bit."""
    env, policy = make_env(ENV, 3, seed=40), RandomPolicy(MODEL.num_actions, seed=1)
    first = env.rollout(50, policy, break_when_any_done=False)
    carrier = env.step_mdp(first[..., -1])
    state = PROFILE.get_state(env)
    policy_state = policy.generator.get_state()
    go_on = env.rollout(130, policy, auto_reset=False, tensordict=carrier.clone(), break_when_any_done=False)
    other, replay = make_env(ENV, 3, seed=999), RandomPolicy(MODEL.num_actions, seed=1)
    PROFILE.set_state(other, state)
    replay.generator.set_state(policy_state)
    again = other.rollout(130, replay, auto_reset=False, tensordict=carrier.clone(), break_when_any_done=False)
    for key in ("storage", "inflow", "reward", "deficit_months", "done"):
        assert torch.equal(go_on["next", key], again["next", key]), key


def test_batched_and_single_stepping_agree() -> None:
    batched = _random_rollout(4, seed=11, steps=130, action_seed=3)
    actions = batched["action"]
    for index in range(4):
        env = DiscreteReservoirEnv(CONFIG, 1)
        env.set_seed(11 + index)
        tensordict = env.reset()
        for t in range(130):
            tensordict["action"] = actions[index, t].reshape(1)
            out = env.step(tensordict)
            for key in ("storage", "inflow", "release", "reward"):
                assert torch.equal(out["next", key][0], batched["next", key][index, t]), (index, t, key)
            tensordict = env.step_mdp(out) if not bool(out["next", "done"].any()) else env.reset()


def test_seeded_runs_repeat_exactly_and_seeds_differ() -> None:
    a = _random_rollout(3, seed=5, steps=60, action_seed=1)
    b = _random_rollout(3, seed=5, steps=60, action_seed=1)
    c = _random_rollout(3, seed=6, steps=60, action_seed=1)
    assert torch.equal(a["next", "inflow"], b["next", "inflow"]) and torch.equal(
        a["next", "reward"], b["next", "reward"]
    )
    assert not torch.equal(a["next", "inflow"], c["next", "inflow"])


def test_inflows_do_not_depend_on_the_actions() -> None:
    a = _random_rollout(3, seed=5, steps=60, action_seed=1)
    b = _random_rollout(3, seed=5, steps=60, action_seed=2)
    assert torch.equal(a["next", "inflow"], b["next", "inflow"])


def test_inflow_classes_match_the_lognormal_mean() -> None:
    for median, cv in zip(CONFIG.inflow_median, CONFIG.inflow_cv, strict=True):
        classes = discretise_lognormal(median, cv, 25)
        mean = median * math.exp(math.log(1 + cv * cv) / 2)
        assert sum(classes) / 25 == pytest.approx(mean, abs=0.6)  # rounding to whole units
        assert classes == sorted(classes)


def test_sdp_value_matches_monte_carlo_of_its_own_policy() -> None:
    solution = reservoir_optimum(CONFIG)
    episodes = episodes_of(SDPPolicy(solution), 400, seed=123)
    returns = episodes.returns.double()
    error = float(returns.std()) / math.sqrt(len(returns))
    assert abs(float(returns.mean()) - solution.expected_return) < 4 * error


def test_no_one_step_deviation_improves_the_sdp_value() -> None:
    """Bellman optimality, recomputed state by state with scalar code (not the solver's)."""
    solution = reservoir_optimum(CONFIG)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        t = int(torch.randint(CONFIG.horizon_months, (1,), generator=generator))
        s = int(torch.randint(CONFIG.capacity + 1, (1,), generator=generator))
        month = (t + CONFIG.start_month) % 12
        best = float(solution.values[t, s, 0])
        for action in range(MODEL.num_actions):
            value = 0.0
            for inflow in MODEL.inflow_values[month].tolist():
                outcome = MODEL.transition(
                    torch.tensor(float(s), dtype=torch.float64),
                    torch.tensor(inflow, dtype=torch.float64),
                    torch.tensor(action),
                    torch.tensor(month),
                )
                value += float(outcome.reward) + float(solution.values[t + 1, int(outcome.next_storage), 0])
            value /= MODEL.inflow_values.shape[1]
            assert value <= best + 1e-9
            if action == int(solution.policy[t, s, 0]):
                assert value == pytest.approx(best, abs=1e-9)


def test_sdp_beats_sop_beats_random_on_the_evaluation_scenarios() -> None:
    policies = {
        "sdp": SDPPolicy(reservoir_optimum(CONFIG)),
        "sop": StandardOperatingPolicy(MODEL),
        "random": RandomPolicy(MODEL.num_actions, seed=0),
    }
    means = {name: float(episodes_of(policy, 100, 2_000_000_000).returns.mean()) for name, policy in policies.items()}
    assert means["sdp"] >= means["sop"] >= means["random"]


def test_sop_releases_the_demand() -> None:
    sop = StandardOperatingPolicy(MODEL)
    months = torch.arange(12)
    out = sop(TensorDict(month=months, batch_size=[12]))
    assert torch.equal(MODEL.release_levels[out["action"]], MODEL.demand)


def test_sdp_solves_the_default_problem_quickly() -> None:
    import time

    from reservoir_dqn.envs.reservoir.sdp import solve

    started = time.perf_counter()
    solution = solve(MODEL)
    assert time.perf_counter() - started < 5.0
    assert solution.policy.shape == (CONFIG.horizon_months, CONFIG.capacity + 1, 1)


def test_the_score_cannot_invert_when_every_return_is_negative() -> None:
    """Double demand and a heavy shortfall penalty make every return negative; the score still orders them."""
    harsh = CONFIG.model_copy(update={"demand": tuple(2 * d for d in CONFIG.demand), "weight_deficit": 20.0})
    env_config = ENV.model_copy(update={"reservoir": harsh})
    score_reference, played = reference(PROFILE, env_config, MODEL.num_actions, 60, 2_000_000_000)
    means = {name: float(episodes.returns.double().mean()) for name, episodes in played.items()}
    assert max(means.values()) < 0
    scores = {name: float(score_reference.score(value)) for name, value in means.items()}
    assert scores["random"] == pytest.approx(0.0) and scores["sdp"] == pytest.approx(1.0)
    assert 0.0 < scores["sop"] < 1.0
    assert means["sop"] / means["sdp"] > 1.0  # the old fraction of optimum would rank SOP above the optimum


def _episode(deficits: list[float], violations: list[float]) -> Episodes:
    steps = len(deficits)
    zeros = torch.zeros(1, steps)
    nxt = TensorDict(
        {
            "deficit": torch.tensor([deficits]),
            "violation": torch.tensor([violations]),
            "spill": zeros + 1.0,
            "energy_gwh": zeros + 2.0,
        },
        batch_size=[1, steps],
    )
    steps_td = TensorDict({"next": nxt, "valid": torch.ones(1, steps, dtype=torch.bool)}, batch_size=[1, steps])
    return Episodes(steps_td, torch.zeros(1), torch.tensor([steps]))


def test_reliability_resilience_and_vulnerability_follow_hashimoto() -> None:
    """Eight months: shortfalls of 2 and 4 units in months 2-3, 1 unit in month 6; one month below the minimum."""
    episodes = _episode([0, 0, 2, 4, 0, 0, 1, 0], [0, 0, 0, 3, 0, 0, 0, 0])
    metrics = PROFILE.policy_metrics(ENV, episodes)
    assert metrics["reliability"] == pytest.approx(5 / 8)
    assert metrics["resilience"] == pytest.approx(2 / 3)  # of 3 failure months, 2 are followed by a success
    assert metrics["vulnerability_hm3"] == pytest.approx((2 + 4 + 1) / 3 * CONFIG.unit_hm3)
    assert metrics["violation_months"] == 1
    assert metrics["spill_hm3"] == pytest.approx(8 * CONFIG.unit_hm3) and metrics["energy_gwh"] == pytest.approx(16)
    perfect = PROFILE.policy_metrics(ENV, _episode([0] * 8, [0] * 8))
    assert perfect["reliability"] == 1 and perfect["resilience"] == 1 and perfect["vulnerability_hm3"] == 0
