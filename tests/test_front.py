"""The exact front of energy against supply (envs/reservoir/front.py) and ``reservoir-dqn front``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from reservoir_dqn.agent import NetworkSpec, make_q_network, stacked_mlp
from reservoir_dqn.commands import front as front_command
from reservoir_dqn.config import load_config
from reservoir_dqn.envs import profile
from reservoir_dqn.envs.reservoir.account import account
from reservoir_dqn.envs.reservoir.baselines import reservoir_optimum
from reservoir_dqn.envs.reservoir.front import (
    CONFIGURED,
    Evaluator,
    agent_points,
    exact_front,
    expected_utility_loss,
    hypervolume,
    maximum_utility_loss,
    set_utility_losses,
    sop_table,
    weighted,
)
from reservoir_dqn.envs.reservoir.front_figure import group_names
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.sdp import solve
from reservoir_dqn.evaluation.trade_offs import TradeOffs
from tests import delaware
from tests.conftest import REPO, run_command

# The illustrative reservoir over a year (independent inflows), and the Delaware recipe (a persistent chain).
SHORT = load_config(REPO / "params.yaml", ["env.reservoir.horizon_months=12"]).env.reservoir
CASES = {"independent": SHORT, "persistent": delaware.DELAWARE.reservoir.model_copy(update={"horizon_months": 12})}


@pytest.fixture(
    scope="module",
    params=[pytest.param(name, marks=pytest.mark.slow) for name in CASES],
)  # hundreds of vertices at this tolerance: seconds (make test runs them, make test-fast leaves them out)
def case(request: pytest.FixtureRequest):
    model = ReservoirModel.from_config(CASES[request.param])
    return model, exact_front(model, tolerance=1e-8)


def test_no_weight_gains_more_than_the_certificate_over_the_front(case) -> None:
    """Solved afresh at weights the search never chose, the SDP finds nothing the vertices do not already give."""
    model, front = case
    assert len(front.vertices) >= 2 and 0.0 <= front.certificate <= 1e-8 * 5000
    for lam in torch.linspace(0.013, 0.987, 9).tolist():
        gain = solve(weighted(model, lam)).expected_return - front.best(lam)
        assert -1e-6 <= gain <= front.certificate + 1e-6


def test_the_vertices_trade_energy_for_supply(case) -> None:
    """From supply alone to energy alone, the vertices gain energy and give up supply."""
    _, front = case
    energy = [vertex.totals[0] for vertex in front.vertices]
    deficit = [vertex.totals[1] for vertex in front.vertices]
    assert energy[-1] > energy[0] and deficit[-1] > deficit[0]
    assert front.corners == sorted(front.corners)
    assert all(0.0 <= corner <= 1.0 for corner in front.corners)


def test_the_configured_reward_is_the_front_at_one_half(case) -> None:
    model, front = case
    assert front.best(CONFIGURED) == pytest.approx(reservoir_optimum(model.config).expected_return, abs=1e-6)


def test_an_agents_loss_at_its_own_weight_is_its_exact_accounts_gap(case) -> None:
    model, front = case
    spec = NetworkSpec(model.observation_size, model.num_actions, (16,), "reservoir", agents=2)
    network = stacked_mlp(make_q_network(spec, seeds=[3, 4]))
    points = agent_points(model, network, 2)
    solution = reservoir_optimum(model.config)
    for point in points:
        gap = account(model, solution, point.policy).gap
        assert front.best(CONFIGURED) - point.utility(model, CONFIGURED) == pytest.approx(gap, abs=1e-6)


def test_the_utility_losses_are_the_integral_and_the_maximum_over_weights(case) -> None:
    model, front = case
    sop = Evaluator(model).point(sop_table(model))
    grid = np.linspace(0.0, 1.0, 20_001)
    lines = np.array([[v.utility(model, 1.0) - v.utility(model, 0.0), v.utility(model, 0.0)] for v in front.vertices])
    best = (lines[:, :1] * grid + lines[:, 1:]).max(axis=0)  # u*: the vertices' upper envelope
    losses = best - np.array([sop.utility(model, lam) for lam in grid])
    assert expected_utility_loss(front, model, sop) == pytest.approx(float(np.trapezoid(losses, grid)), rel=1e-6)
    assert maximum_utility_loss(front, model, sop) == pytest.approx(float(losses.max()), rel=1e-6)
    assert all(maximum_utility_loss(front, model, vertex) >= -1e-9 for vertex in front.vertices)


def test_a_sets_losses_are_its_best_members_and_the_front_itself_loses_nothing(case) -> None:
    model, front = case
    sop = Evaluator(model).point(sop_table(model))
    alone = set_utility_losses(front, model, [sop])
    assert alone[0] == pytest.approx(expected_utility_loss(front, model, sop), rel=1e-6)
    assert alone[1] == pytest.approx(maximum_utility_loss(front, model, sop), rel=1e-6)
    assert set_utility_losses(front, model, front.vertices) == pytest.approx((0.0, 0.0), abs=1e-6)
    with_sop = set_utility_losses(front, model, [sop, front.vertices[0]])
    assert with_sop[0] <= alone[0] and with_sop[1] <= alone[1]


def test_the_evaluation_places_each_networks_agents_on_the_front() -> None:
    """What evaluate writes (eval.json's trade_offs, each agent's utility losses): the front the search finds, and
    each agent's exact point on it; none where the episode's end has a water value."""
    env = load_config(REPO / "params.yaml", ["env.reservoir.horizon_months=12"]).env
    model = ReservoirModel.from_config(env.reservoir)
    spec = NetworkSpec(model.observation_size, model.num_actions, (16,), "reservoir", agents=2)
    networks = {
        network: (stacked_mlp(make_q_network(spec, seeds=seeds)), 2)
        for network, seeds in (("final", [3, 4]), ("best", [5, 6]))
    }
    described = profile(env).trade_offs(env, networks)
    assert described is not None
    trade_offs = TradeOffs.from_described(json.loads(json.dumps(described)))
    front = exact_front(model)
    assert [vertex["lam"] for vertex in trade_offs.vertices] == [vertex.weight for vertex in front.vertices]
    assert trade_offs.certificate == front.certificate
    for network, (q_values, count) in networks.items():
        points = agent_points(model, q_values, count)
        for entry, point in zip(trade_offs.agents[network], points, strict=True):
            assert entry["expected_utility_loss"] == pytest.approx(expected_utility_loss(front, model, point))
            assert entry["maximum_utility_loss"] == pytest.approx(maximum_utility_loss(front, model, point))
            assert entry["energy_gwh_per_year"] == pytest.approx(point.totals[0])  # twelve months: one year
    assert trade_offs.agents["final"] != trade_offs.agents["best"]
    assert TradeOffs.from_json(json.loads(json.dumps(trade_offs.to_json()))) == trade_offs
    water = env.model_copy(update={"reservoir": env.reservoir.model_copy(update={"end_value": "water_value"})})
    assert profile(water).trade_offs(water, networks) is None


def test_the_figure_names_each_model_file_by_what_tells_it_apart() -> None:
    assert group_names([]) == {}
    assert group_names(["models/agents/final.pt"]) == {"models/agents/final.pt": "agents"}
    sweep = [f"/tmp/sweep/lam-{lam}/models/agents/final.pt" for lam in (0.2, 0.5)]
    assert group_names(sweep) == {sweep[0]: "lam-0.2", sweep[1]: "lam-0.5"}
    assert group_names(["a/final.pt", "a/best.pt"]) == {"a/final.pt": "final.pt", "a/best.pt": "best.pt"}


def test_the_hypervolume_is_the_staircase_the_points_dominate() -> None:
    reference = (0.0, 10.0)
    assert hypervolume([(2.0, 4.0)], reference) == pytest.approx(2.0 * 6.0)
    # Two points trading off: their union, once; a dominated point and one beyond the reference add nothing.
    staircase = 3.0 * (10.0 - 6.0) + 1.0 * (6.0 - 2.0)
    assert hypervolume([(3.0, 6.0), (1.0, 2.0)], reference) == pytest.approx(staircase)
    assert hypervolume([(3.0, 6.0), (1.0, 2.0), (0.5, 7.0), (-1.0, 1.0)], reference) == pytest.approx(staircase)


@pytest.mark.slow
def test_a_tolerance_searches_less_and_its_certificate_bounds_every_gain() -> None:
    model = ReservoirModel.from_config(SHORT)
    exact, rough = exact_front(model, tolerance=0.0), exact_front(model, tolerance=1e-3)
    assert rough.solves < exact.solves and rough.certificate > 0.0
    for lam in torch.linspace(0.0, 1.0, 41).tolist():
        assert exact.best(lam) - rough.best(lam) <= rough.certificate + 1e-9


def test_the_end_value_is_refused() -> None:
    with pytest.raises(ValueError, match="end_value"):
        Evaluator(ReservoirModel.from_config(SHORT.model_copy(update={"end_value": "water_value"})))


def _front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """``reservoir-dqn front ARGS`` in ``tmp_path``, run in this process."""
    monkeypatch.chdir(tmp_path)
    return run_command(capsys, front_command.main, *args)


@pytest.mark.slow
def test_the_command_writes_the_front_and_its_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status, printed, errors = _front(tmp_path, monkeypatch, capsys, "--set", "env.reservoir.horizon_months=12",
                                     "--no-agents")  # fmt: skip
    assert status == 0, errors
    result = json.loads((tmp_path / "front/front.json").read_text())
    assert len(result["vertices"]) >= 2 and result["agents"] == []
    assert result["certificate_share"] <= 1e-4
    assert math.isclose(result["configured_optimum"]["lam"], 0.5)
    assert (tmp_path / "front/front.png").stat().st_size > 10_000
    assert "vertices from" in printed


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setting", "named"),
    [("env.reservoir.end_value=water_value", "end_value"), ("env.name=CartPole-v1", "env.name")],
)
def test_the_command_refuses_what_it_cannot_weigh_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], setting: str, named: str
) -> None:
    extra = ["--set", "env.section=gym"] if "CartPole" in setting else []
    status, _, errors = _front(tmp_path, monkeypatch, capsys, "--set", setting, *extra, "--no-agents")
    assert status != 0
    assert named in errors.strip().splitlines()[-1]
    assert not (tmp_path / "front").exists()
