"""Re-operating the held-out record: the split, the replay, the foresight bound and the block bootstrap."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tensordict import TensorDict

from reservoir_dqn.commands import evaluate, plot, train
from reservoir_dqn.config import load_config
from reservoir_dqn.envs.baselines import RandomPolicy
from reservoir_dqn.envs.reservoir.baselines import reservoir_optimum
from reservoir_dqn.envs.reservoir.inflows import fit_chain
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.records import RecordError, load_record
from reservoir_dqn.envs.reservoir.replay import RecordReplay
from reservoir_dqn.envs.reservoir.sdp import end_values, foresight
from reservoir_dqn.envs.reservoir.split import load_split
from reservoir_dqn.envs.reservoir.windows import check_held_out, record_windows
from reservoir_dqn.envs.rollouts import run_episodes
from reservoir_dqn.evaluation.reoperation import bootstrap_weights, pooled, ratio, water_years, yearly
from reservoir_dqn.evaluation.report import tracked_metrics
from reservoir_dqn.evaluation.results import Evaluation
from reservoir_dqn.tracking.hparams import log_hparams
from tests.conftest import REPO, write_params
from tests.delaware import CONFIG, DELAWARE, MODEL, PROFILE, RECORD
from tests.test_compare import HEALTHY, held_out
from tests.test_compare import evaluation as hand_made

HELD_OUT = record_windows(CONFIG, MODEL.chain, "held_out")
RECORD_REPLAY = RecordReplay.of(PROFILE, DELAWARE, CONFIG)
assert RECORD_REPLAY is not None


def test_the_held_out_windows_lie_after_every_year_the_chain_or_the_agent_saw() -> None:
    training = record_windows(CONFIG, MODEL.chain, "training")
    assert HELD_OUT.starts == tuple(f"{year}-10" for year in range(2005, 2015))  # the record ends 2025-04
    assert (training.starts[0], training.starts[-1]) == ("1945-10", "1994-10")  # the last ends 2004-09
    record = load_record(RECORD, "01463500", "hm3")
    first = record.label(0)
    assert first == "1945-01"
    index = (2005 - 1945) * 12 + 9  # 2005-10
    flows = record.volumes_hm3[index : index + 120] / CONFIG.unit_hm3
    assert torch.equal(HELD_OUT.inflows[0], torch.from_numpy(np.round(flows)))
    assert int(HELD_OUT.classes[0, 0]) == MODEL.chain.classify(8, float(record.volumes_hm3[index - 1] / 106.0))


def test_a_hold_out_anywhere_is_kept_out_of_the_chain_and_the_training_windows() -> None:
    """The drought of record held out: 1961-10 to 1973-09 is replayed, and neither the chain (no month of it, no
    transition across the gap) nor any training window (nor the month before one) touches it."""
    drought = CONFIG.model_copy(update={"record": CONFIG.record.model_copy(update={"held_out": (1961, 1972)})})
    model = ReservoirModel.from_config(drought)
    held_out = record_windows(drought, model.chain, "held_out")
    assert held_out.starts == ("1961-10", "1962-10", "1963-10")
    training = record_windows(drought, model.chain, "training")
    record, split = load_split(drought)
    begin, end = split.held_out  # type: ignore[misc]
    assert (record.label(begin), record.label(end)) == ("1961-10", "1973-09")
    for start in training.starts:
        first = (int(start[:4]) - 1945) * 12 + int(start[5:]) - 1
        assert first + CONFIG.horizon_months - 1 < begin or first - 1 > end, start
    assert training.starts[-1] == "1994-10"  # the fitting years still end with 2004
    kept = split.fitting & (record.years <= 2004)
    flows = record.volumes_hm3[kept] / CONFIG.unit_hm3
    linked = np.diff(np.flatnonzero(kept)) == 1
    assert int((~linked).sum()) == 1  # the one gap
    expected = fit_chain(flows, record.calendar_months[kept], CONFIG.inflow_classes, 0.0, linked)
    assert torch.equal(model.chain.transitions, expected.transitions)
    assert not torch.equal(model.chain.transitions, MODEL.chain.transitions)


@pytest.mark.parametrize(
    ("held_out", "message"),
    [
        ((1939, 1948), "env.reservoir.record.held_out = [1939, 1948]: the years from Oct 1939 to Sep 1949 are not all"),
        ((1961, 1965), "env.reservoir.record.held_out = [1961, 1965]: the 60 held-out months (1961-10 to 1966-09) "
         "hold no whole window of 120 months starting in month 10: hold out more years"),
    ],
)  # fmt: skip
def test_a_hold_out_outside_the_record_or_shorter_than_a_window_is_refused_naming_the_years(
    held_out: tuple[int, int], message: str
) -> None:
    bad = CONFIG.model_copy(update={"record": CONFIG.record.model_copy(update={"held_out": held_out})})
    with pytest.raises(RecordError, match=re.escape(message)):
        check_held_out(bad)


def test_the_held_out_period_in_one_run_carries_storage_from_year_to_year() -> None:
    """The continuous replay: the years chained (each year starts where the last ended), foresight one DP over
    the whole period bounds every policy, random enters by its exact expectation."""
    years = RECORD_REPLAY.period_years
    assert RECORD_REPLAY.period == ("2005-10", "2024-09") and years == 19
    played = {name: RECORD_REPLAY.continuous(policy) for name, policy in RECORD_REPLAY.policies().items()}
    bound = foresight(MODEL, RECORD_REPLAY.whole.inflows)
    total = {name: float(replayed.rewards.sum()) for name, replayed in played.items()}
    assert total["foresight"] == pytest.approx(float(bound.returns[0]), abs=0.5)  # float32 rewards, 228 months
    random = RECORD_REPLAY.continuous(None)
    assert random.rewards.shape == (1, 1, 12 * years)
    for name in ("sdp", "sdp_independent", "sop"):
        assert float(random.rewards.sum()) < total[name] <= total["foresight"] + 0.5, name
    sop = played["sop"]
    # SOP is stationary, so the years chained are one run of the rule over 228 months from the initial storage.
    month = torch.arange(12 * years)
    storage = torch.tensor(float(CONFIG.initial_storage), dtype=torch.float64)
    rewards, rule = [], RECORD_REPLAY.policies()["sop"]
    for t in range(12 * years):
        tensordict = TensorDict({"storage": storage.view(1), "month": ((month[t] + 9) % 12).view(1),
                                 "time_step": (month[t] % 12).view(1)}, batch_size=[1])  # fmt: skip
        action = rule(tensordict)["action"]
        outcome = MODEL.transition(storage, RECORD_REPLAY.whole.inflows[0, t], action[0], (month[t] + 9) % 12)
        rewards.append(float(outcome.reward))
        storage = outcome.next_storage
    assert float(sop.rewards.sum()) == pytest.approx(sum(rewards), abs=0.5)


def test_the_water_value_at_the_end_is_what_a_fresh_horizon_earns_beyond_the_initial_storages() -> None:
    """end_value: water_value. Leaving the reservoir as found is worth 0, more water is worth more; the SDP's
    optimum is that of the horizon with it at the end, and foresight, replayed in the environment that adds it,
    returns its own values, bounding every policy; the random anchor stays exact."""
    config = CONFIG.model_copy(update={"end_value": "water_value"})
    env = DELAWARE.model_copy(update={"reservoir": config})
    model = ReservoirModel.from_config(config)
    ends = end_values(model)
    assert ends is not None and ends.shape == (config.capacity + 1, config.inflow_classes)
    assert float(ends[config.initial_storage].abs().max()) == 0.0
    assert bool((ends.diff(dim=0) >= -1e-9).all())  # more water left is never worth less
    plain = reservoir_optimum(CONFIG)
    valued = reservoir_optimum(config)
    assert torch.equal(valued.values[-1], ends) and valued.expected_return != plain.expected_return
    replay = RecordReplay.of(PROFILE, env, config)
    assert replay is not None
    bound = foresight(model, replay.windows.inflows, replay.windows.classes[:, -1]).returns
    played = {name: replay.rewards(policy)[0].sum(dim=-1) for name, policy in replay.policies().items()}
    assert torch.allclose(played["foresight"], bound, rtol=0, atol=0.05)
    assert not torch.allclose(bound, foresight(model, replay.windows.inflows).returns)
    for name in ("sdp", "sdp_independent", "sop"):
        assert bool((played[name] <= bound + 0.05).all()), name
    exact = replay.random_rewards().sum(dim=-1)
    sampled = replay.rewards(RandomPolicy(model.num_actions, 1), copies=300).sum(dim=-1)
    error = sampled.std(dim=0) / 300**0.5
    assert bool(((sampled.mean(dim=0) - exact).abs() < 4 * error).all())


def test_a_replay_plays_each_window_of_the_record() -> None:
    def replayed(env):  # type: ignore[no-untyped-def]
        env.base_env.replay(HELD_OUT)

    episodes = run_episodes(PROFILE, DELAWARE, RandomPolicy(MODEL.num_actions, 0), [7] * len(HELD_OUT), replayed)
    nxt = episodes.steps["next"]
    assert torch.equal(nxt["inflow"].double(), HELD_OUT.inflows)
    assert torch.equal(nxt["inflow_class"], HELD_OUT.classes[:, 1:])
    assert torch.equal(episodes.steps["inflow_class"][:, 0], HELD_OUT.classes[:, 0])


def test_foresight_bounds_every_policy_on_every_window_and_replays_its_own_value() -> None:
    solution = foresight(MODEL, HELD_OUT.inflows)
    assert PROFILE.held_out(DELAWARE).starts == HELD_OUT.starts  # what the profile offers the evaluate stage
    policies = RECORD_REPLAY.policies()
    played = {name: RECORD_REPLAY.rewards(policy)[0] for name, policy in policies.items()}
    played["random"] = RECORD_REPLAY.random_rewards()
    returns = {name: rewards.sum(dim=-1) for name, rewards in played.items()}
    assert torch.allclose(returns["foresight"], solution.returns, rtol=0, atol=0.05)  # float32 rewards
    for name in ("sdp", "sdp_independent", "sop", "random"):
        assert bool((returns[name] <= solution.returns + 0.05).all()), name
    assert bool((returns["sdp"] > returns["sop"]).all()) and bool((returns["sop"] > returns["random"]).all())


def test_the_random_anchor_is_the_random_policys_expected_return_which_sampled_replays_agree_with() -> None:
    """The anchor of 0 is exact: 300 seeded random replays of each window average to it within their standard error,
    where one replay (the anchor before) misses it by several times the standard error on some window."""
    exact = RECORD_REPLAY.random_rewards().sum(dim=-1)  # [W]
    sampled = RECORD_REPLAY.rewards(RandomPolicy(MODEL.num_actions, 1), copies=300).sum(dim=-1)  # [300, W]
    error = sampled.std(dim=0) / 300**0.5
    assert bool(((sampled.mean(dim=0) - exact).abs() < 4 * error).all()), (sampled.mean(dim=0) - exact) / error
    assert float(((sampled[0] - exact).abs() / error).max()) > 4  # one trajectory is a sample, not the anchor


def test_a_replays_criteria_pool_what_its_windows_show() -> None:
    """The held-out criteria of a policy: pooled over the windows, each window's value beside them (equal windows:
    the pooled reliability and the mean deficit and energy are the windows' means)."""
    replayed = RECORD_REPLAY.replay(RECORD_REPLAY.policies()["sop"])
    pooled_criteria, windows = replayed.performance[0], replayed.per_window[0]
    for key in ("reliability", "deficit_hm3", "energy_gwh"):
        assert pooled_criteria[key] == pytest.approx(float(np.mean(windows[key]))), key
    assert (pooled_criteria["reliability"], pooled_criteria["resilience"], pooled_criteria["vulnerability_hm3"]) == (
        1.0,
        1.0,
        0.0,
    )  # SOP releases the demand whenever the water is there: on these years, always
    assert torch.equal(replayed.rewards, RECORD_REPLAY.rewards(RECORD_REPLAY.policies()["sop"]))
    random = RECORD_REPLAY.random_performance()
    assert torch.equal(random.rewards[0], RECORD_REPLAY.random_rewards())
    shortfalls = random.performance[0]
    assert (
        shortfalls["reliability"] < 0.9 and 0.0 < shortfalls["resilience"] < 1.0 and shortfalls["vulnerability_hm3"] > 0
    )


def test_the_block_bootstrap_scores_the_references_exactly_and_brackets_the_point() -> None:
    year_of_month, labels = water_years(HELD_OUT.first_years, 120)
    assert labels.shape == (10, 10) and labels.min() == 2005 and labels.max() == 2023  # 19 water years
    weights = bootstrap_weights(labels, resamples=500)
    assert weights.shape == (500, 10, 10)
    # Each resample draws 19 water years (blocks of 3, cut to 19): every drawn year counts all its window-years.
    distinct = np.unique(labels)
    assert all(sum(int(row[labels == year][0]) for year in distinct) == 19 for row in weights)
    rng = np.random.default_rng(0)
    random, bound = rng.normal(0, 1, (10, 10)), rng.normal(10, 1, (10, 10))
    policy = 0.5 * random + 0.5 * bound + rng.normal(0, 0.3, (10, 10))
    assert pooled(bound, random, bound, weights).score == pytest.approx(1.0)
    assert (pooled(random, random, bound, weights).low, pooled(random, random, bound, weights).high) == (0.0, 0.0)
    middle = pooled(policy, random, bound, weights)
    assert middle.low < middle.score < middle.high and 0.3 < middle.score < 0.7
    same = ratio(policy, policy, random, bound, weights)
    assert (same.score, same.low, same.high) == pytest.approx((1.0, 1.0, 1.0))
    assert yearly(torch.ones(2, 120, dtype=torch.float64), year_of_month).tolist() == [[12.0] * 10] * 2


@pytest.mark.slow
def test_the_evaluate_and_plot_stages_report_the_held_out_record(project: Path, capsys: pytest.CaptureFixture) -> None:
    write_params(
        project / "params.yaml",
        **{"env.name": "reservoir-delaware", "env.reservoir.inflow_model": "record", "env.reservoir.unit_hm3": 106.0,
           "env.reservoir.weight_energy": 0.094, "env.reservoir.record.path": str(RECORD)},
    )  # fmt: skip
    assert train.main([]) == 0 and evaluate.main([]) == 0 and plot.main([]) == 0
    assert (project / "plots/held_out_trajectory.png").stat().st_size > 10_000
    policies = set(pd.read_csv(project / "logs/trajectories.csv")["policy"])
    assert {"held-out dqn", "held-out sdp", "held-out foresight", "dqn", "sdp", "sop"} == policies
    held_out = Evaluation.from_json(json.loads((project / "metrics/eval.json").read_text())).held_out
    assert held_out is not None and len(held_out.windows) == 10
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert summary.items() >= held_out.metrics().items()  # what DVC tracks
    assert held_out.baselines["foresight"].score == pytest.approx(1.0)
    assert held_out.baselines["random"].score == pytest.approx(0.0)
    assert set(held_out.dqn) == {"final", "best"} and len(held_out.dqn_per_seed["final"].per_seed) == 2
    low, high = held_out.baselines["sdp"].score_lo, held_out.baselines["sdp"].score_hi
    assert low <= held_out.baselines["sdp"].score <= high < 1.0
    # Beside the score, what an operator weighs: every policy's criteria, pooled and per window.
    criteria = {"reliability", "resilience", "vulnerability_hm3", "deficit_hm3", "energy_gwh"}
    for name, score in [*held_out.baselines.items(), *held_out.dqn.items()]:
        assert set(score.performance) == criteria, name
        assert 0.0 <= score.performance["reliability"] <= 1.0 and score.performance["deficit_hm3"] >= 0.0, name
        assert len(score.performance_per_window["energy_gwh"]) == 10, name
    assert set(held_out.dqn_performance["final"]) == criteria
    assert held_out.dqn_performance["final"]["reliability"].mean == pytest.approx(
        held_out.dqn["final"].performance["reliability"]
    )
    assert {"held_out_reliability", "held_out_deficit_hm3", "held_out_energy_gwh", "held_out_sdp_reliability"} <= set(
        summary
    )
    out = capsys.readouterr().out
    assert "held-out record: 2005-10 to 2024-09, 10 windows starting 2005-10 to 2014-10" in out
    assert "over the Markov SDP" in out
    # The held-out years in one run, storage carried over: every policy, and the agents per seed.
    continuous = held_out.continuous
    assert continuous is not None and continuous.period == ("2005-10", "2024-09")
    assert continuous.baselines["foresight"]["score"] == 1.0 and continuous.baselines["random"]["score"] == 0.0
    assert set(continuous.baselines["sdp"]) == {"score", *criteria}
    assert len(continuous.dqn["final"]["score"].per_seed) == 2
    assert "held-out years in one run, 2005-10 to 2024-09" in out and "deficit hm3/year" in out
    assert "reliability" in out.split("held-out record:")[1] and "deficit hm3/window" in out


def test_an_agent_learning_from_the_record_sees_only_the_fitting_years_windows() -> None:
    config = DELAWARE.model_copy(update={"reservoir": CONFIG.model_copy(update={"scenarios": "record"})})
    training = record_windows(CONFIG, MODEL.chain, "training")
    env = PROFILE.make(config, [1, 2, 3, 4, 5, 6])
    rollout = env.rollout(2 * CONFIG.horizon_months, RandomPolicy(MODEL.num_actions, 0), break_when_any_done=False)
    inflows = rollout["next", "inflow"].double()
    seen = set()
    for episode in (inflows[:, :120], inflows[:, 120:]):
        for row in episode:
            matches = [index for index, window in enumerate(training.inflows) if torch.equal(window, row)]
            assert matches, "an episode that is no training window"
            seen.add(matches[0])
    assert len(seen) > 6  # slots draw their own windows
    again = PROFILE.make(config, [1, 2, 3, 4, 5, 6]).rollout(120, RandomPolicy(MODEL.num_actions, 0))
    assert torch.equal(again["next", "inflow"], rollout["next", "inflow"][:, :120])
    assert PROFILE.test_config(config).reservoir.scenarios == "chain"  # tested where the SDP is the optimum


def test_the_held_out_figures_have_one_name_in_dvc_mlflow_and_tensorboard(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    evaluation = dataclasses.replace(hand_made(HEALTHY), held_out=held_out(HEALTHY))
    assert evaluation.held_out is not None
    figures = evaluation.held_out.metrics()
    assert set(figures) == {
        "held_out_score", "held_out_score_lo", "held_out_score_hi", "held_out_over_sdp", "held_out_over_sdp_lo",
        "held_out_over_sdp_hi", "held_out_sdp", "held_out_sdp_independent", "held_out_sop",
    }  # fmt: skip
    assert figures.items() <= evaluation.headline_metrics().items()  # metrics/summary.json: DVC
    tracked = tracked_metrics(evaluation, train_minutes=1.0)  # the parent run: MLflow, to 4 digits
    assert all(tracked[name] == pytest.approx(value, rel=1e-3) for name, value in figures.items())
    log_hparams(tmp_path, load_config(REPO / "params.yaml"), evaluation)
    scalars = set(EventAccumulator(str(tmp_path)).Reload().Tags()["scalars"])
    assert {f"reservoir/test/{name}" for name in figures} <= scalars  # TensorBoard
    assert not any(name.startswith("held_out") for name in hand_made(HEALTHY).headline_metrics())  # none without
