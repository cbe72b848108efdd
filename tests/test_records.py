"""Reservoirs driven by a river's record: the strict record loader, the fitted Markov chain, the
SDP over (time, storage, inflow class), and the environment that carries the class."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.persistence import simulate
from reservoir_dqn.commands import train
from reservoir_dqn.commands.recipe import overrides
from reservoir_dqn.config import ConfigError, load_config
from reservoir_dqn.envs import profile
from reservoir_dqn.envs.baselines import RandomPolicy
from reservoir_dqn.envs.reservoir.baselines import SDPPolicy, reservoir_optimum
from reservoir_dqn.envs.reservoir.inflows import fit_chain, lag1_correlation, without_persistence
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.records import RecordError, load_record
from reservoir_dqn.envs.reservoir.sdp import solve
from reservoir_dqn.envs.rollouts import run_episodes
from tests.conftest import REPO, tree_digest
from tests.delaware import CONFIG, DELAWARE, MODEL, PROFILE, RECORD


def test_the_shipped_record_holds_only_whole_months() -> None:
    record = load_record(RECORD, "01463500", "hm3")
    assert (len(record), record.span) == (964, "1945-01 to 2025-04")  # 2025-05 held 5 days: left out
    assert bool((record.volumes_hm3 > 0).all())
    yearly = record.volumes_hm3[(record.years >= 1945) & (record.years <= 2004)].reshape(-1, 12).sum(axis=1)
    assert yearly.mean() == pytest.approx(10_620, rel=1e-3)  # the recipe's unit of 106 hm3 is a hundredth of it


MONTHLY = "month,gauge\n2000-01,10\n2000-02,12\n2000-03,9\n"


@pytest.mark.parametrize(
    ("content", "column", "message"),
    [
        (MONTHLY, "flow", "no column 'flow' (columns: gauge)"),
        (MONTHLY.replace("2000-03", "2000-04"), "gauge", "line 4: 2000-04 follows 2000-02: 2000-03 is missing"),
        (MONTHLY.replace("2000-03", "2000-02"), "gauge", "line 4: month 2000-02 is duplicated"),
        (MONTHLY.replace("\n2000-02", "\n\n2000-02").replace("2000-03", "2000-05"), "gauge",
         "line 5: 2000-05 follows 2000-02: 2000-03 to 2000-04 are missing"),
        (MONTHLY.replace(",12", ",-1"), "gauge", "line 3: gauge -1 is negative"),
        (MONTHLY.replace(",12", ",n/a"), "gauge", "line 3: gauge 'n/a' is not a number"),
        (MONTHLY.replace(",12", ","), "gauge", "line 3: gauge '' is not a number"),
        (MONTHLY.replace("2000-02", "2000-13"), "gauge", "line 3: date '2000-13' is not YYYY-MM or YYYY-MM-DD"),
        (
            "date,gauge\n" + "".join(f"2000-01-{day:02d},1\n" for day in range(1, 32)) + "2000-02-01,1\n",
            "gauge",
            "line 33: 2000-02 has 1 of its 29 days (a partial month)",
        ),
        (
            "date,gauge\n" + "".join(f"2000-01-{day:02d},1\n" for day in (1, 2, 2)),
            "gauge",
            "line 4: day 2000-01-02 is duplicated",
        ),
    ],
    ids=["unknown-column", "missing-month", "duplicated-month", "after-a-blank-line", "negative", "non-numeric",
         "empty", "bad-date", "partial-month", "duplicated-day"],
)  # fmt: skip
def test_a_bad_record_is_refused_in_one_line_naming_the_file_and_the_line(
    tmp_path: Path, content: str, column: str, message: str
) -> None:
    path = tmp_path / "record.csv"
    path.write_text(content)
    with pytest.raises(RecordError) as error:
        load_record(path, column, "hm3")
    assert str(error.value) == f"record {path}{',' if 'line' in message else ':'} {message}"
    assert "\n" not in str(error.value)


def test_daily_flows_in_m3s_sum_to_monthly_volumes(tmp_path: Path) -> None:
    days = [f"2001-02-{day:02d},{day}\n" for day in range(1, 29)] + [f"2001-03-{day:02d},2\n" for day in range(1, 32)]
    (tmp_path / "daily.csv").write_text("date,q\n" + "".join(days))
    record = load_record(tmp_path / "daily.csv", "q", "m3/s")
    assert record.first == (2001, 2)
    assert record.volumes_hm3 == pytest.approx([sum(range(1, 29)) * 0.0864, 31 * 2 * 0.0864])
    (tmp_path / "monthly.csv").write_text("month,q\n2001-02,1\n")
    assert load_record(tmp_path / "monthly.csv", "q", "m3/s").volumes_hm3 == pytest.approx([28 * 0.0864])


def test_a_record_shorter_than_the_horizon_stops_the_stage_before_it_writes(project: Path, capsys) -> None:
    short = project / "short.csv"
    short.write_text("month,q\n" + "".join(f"{2000 + m // 12}-{m % 12 + 1:02d},{1 + m % 5}\n" for m in range(100)))
    (project / "models").mkdir()
    (project / "models" / "model.pt").write_bytes(b"old model")
    before = tree_digest(project)
    sets = ["env.reservoir.inflow_model=record", f"env.reservoir.record.path={short}", "env.reservoir.record.column=q"]
    assert train.main([arg for item in sets for arg in ("--set", item)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"error: record {short} (q, 2000-01 to 2008-04): 100 months, fewer than the 120 of horizon_months "
        "(the historical record is re-operated over a whole horizon)"
    )
    assert tree_digest(project) == before
    with pytest.raises(ConfigError, match="no such file"):
        ReservoirModel.from_config(CONFIG.model_copy(update={"record": CONFIG.record.model_copy(update={"path": "x"})}))


def test_the_fitted_chain_keeps_the_records_means_classes_and_persistence() -> None:
    record = load_record(RECORD, "01463500", "hm3")
    fitted = (record.years >= 1945) & (record.years <= 2004)
    flows, months = record.volumes_hm3[fitted] / CONFIG.unit_hm3, record.calendar_months[fitted]
    chain = MODEL.chain
    assert chain.persistent and torch.allclose(chain.transitions.sum(dim=-1), torch.ones(12, 7, dtype=torch.float64))
    # Quantile classes: each holds a seventh of the 60 years (8 or 9 of them).
    assert bool(((chain.marginal * 60).round() >= 8).all()) and bool(((chain.marginal * 60).round() <= 9).all())
    for month in range(12):  # each class is its members' mean, rounded to whole units
        assert float((chain.marginal[month] * chain.values[month]).sum()) == pytest.approx(
            flows[months == month].mean(), abs=0.5
        )
    # The record is persistent (lag-1 correlation of standardised log flows about 0.5); the chain keeps it.
    observed = lag1_correlation(flows, months)
    simulated = lag1_correlation(*simulate(chain, 1000, seed=0))
    assert observed.mean() > 0.4 and abs(simulated.mean() - observed.mean()) < 0.1
    assert np.abs(simulated - observed).max() < 0.25
    # Add-one smoothing of 60 years over 7 x 7 cells pulls every row towards uniform: persistence drops.
    smoothed = lag1_correlation(*simulate(fit_chain(flows, months, 7, 1.0), 1000, seed=0))
    assert smoothed.mean() < simulated.mean() - 0.1


def test_the_observation_carries_last_months_inflow_class() -> None:
    env = PROFILE.make(DELAWARE, [3, 4])
    rollout = env.rollout(CONFIG.horizon_months, RandomPolicy(MODEL.num_actions, 0), break_when_any_done=False)
    nxt = rollout["next"]
    assert nxt["observation"].shape[-1] == 5
    assert torch.allclose(nxt["observation"][..., 4].double(), (nxt["inflow_class"].double() + 0.5) / 7)
    months = nxt["month"] - 1  # the inflow just seen is the previous month's
    seen = MODEL.inflow_values[months % 12, nxt["inflow_class"]]
    assert torch.equal(seen, nxt["inflow"].double())


def test_state_restored_mid_episode_continues_exactly_with_a_record() -> None:
    env, policy = PROFILE.make(DELAWARE, [40, 41, 42]), RandomPolicy(MODEL.num_actions, seed=1)
    carrier = env.step_mdp(env.rollout(50, policy, break_when_any_done=False)[..., -1])
    state, policy_state = PROFILE.get_state(env), policy.generator.get_state()
    go_on = env.rollout(130, policy, auto_reset=False, tensordict=carrier.clone(), break_when_any_done=False)
    other, replay = PROFILE.make(DELAWARE, [9, 9, 9]), RandomPolicy(MODEL.num_actions, seed=1)
    PROFILE.set_state(other, state)
    replay.generator.set_state(policy_state)
    again = other.rollout(130, replay, auto_reset=False, tensordict=carrier.clone(), break_when_any_done=False)
    for key in ("storage", "inflow", "inflow_class", "observation", "reward", "done"):
        assert torch.equal(go_on["next", key], again["next", key]), key


def test_the_sdp_value_matches_a_monte_carlo_of_its_own_policy_with_persistence() -> None:
    solution = reservoir_optimum(CONFIG)
    assert solution.values.shape == (CONFIG.horizon_months + 1, CONFIG.capacity + 1, 7)
    episodes = run_episodes(PROFILE, DELAWARE, SDPPolicy(solution), list(range(500, 900)))
    returns = episodes.returns.double()
    assert abs(float(returns.mean()) - solution.expected_return) < 4 * float(returns.std()) / math.sqrt(len(returns))


def test_no_one_step_deviation_improves_the_sdp_value_with_persistence() -> None:
    """Bellman optimality over (time, storage, last inflow class), recomputed with scalar code."""
    solution = reservoir_optimum(CONFIG)
    chain = MODEL.chain
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        t, s, j = (int(torch.randint(high, (1,), generator=generator)) for high in (120, 41, 7))
        month = (t + CONFIG.start_month) % 12
        best = float(solution.values[t, s, j])
        for action in range(MODEL.num_actions):
            value = 0.0
            for k in range(7):
                outcome = MODEL.transition(
                    torch.tensor(float(s), dtype=torch.float64), chain.values[month, k], torch.tensor(action),
                    torch.tensor(month),
                )  # fmt: skip
                future = float(solution.values[t + 1, int(outcome.next_storage), k])
                value += float(chain.transitions[(month - 1) % 12, j, k]) * (float(outcome.reward) + future)
            assert value <= best + 1e-9
            if action == int(solution.policy[t, s, j]):
                assert value == pytest.approx(best, abs=1e-9)


def test_with_independent_classes_the_persistent_solver_is_the_independent_one() -> None:
    default = ReservoirModel.from_config(CONFIG.model_copy(update={"inflow_model": "lognormal"}))
    forced = ReservoirModel(default.config, without_persistence(default.chain), default.release_levels, default.demand)
    independent, persistent = solve(default), solve(forced)
    assert torch.allclose(persistent.values, independent.values.expand_as(persistent.values), rtol=0, atol=1e-9)
    assert persistent.expected_return == pytest.approx(independent.expected_return, abs=1e-9)
    # The record's classes without their persistence: every class column of the optimum is the same.
    ignoring = solve(ReservoirModel(CONFIG, without_persistence(MODEL.chain), MODEL.release_levels, MODEL.demand))
    assert torch.allclose(ignoring.values, ignoring.values[..., :1].expand_as(ignoring.values), rtol=0, atol=1e-9)
    assert bool((ignoring.policy == ignoring.policy[..., :1]).all())


@pytest.mark.parametrize(("folder", "extra"), [("", []), ("scenarios-record", ["env.reservoir.scenarios=record"])])
def test_the_committed_example_evaluation_is_of_the_recipe_as_it_stands(folder: str, extra: list[str]) -> None:
    """The committed examples were trained and evaluated under the recipe's settings (the chain's, and the record's
    windows): a changed recipe, its learner's settings included, needs new ones."""
    example = REPO / "examples/reservoir-delaware" / folder
    conditions = json.loads((example / "eval.json").read_text())["conditions"]
    recipe = overrides("reservoir-delaware", REPO / "recipes")
    shipped = load_config(REPO / "params.yaml", [*recipe, *extra]).env
    settings = profile(shipped).settings(shipped)
    assert {key: conditions[key] for key in settings} == settings
    trained = json.loads((example / "train.json").read_text())["params"]
    for override in [*recipe, *extra]:
        key, value = override.split("=", 1)
        if not key.startswith("env.reservoir."):  # the reservoir's settings: the conditions above
            assert str(trained[key]) == value, f"{key}: the example has {trained[key]}, the recipe {value}"
