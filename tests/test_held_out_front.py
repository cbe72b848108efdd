"""The trade-off on the held-out record (``reservoir-dqn front --held-out``): foresight's front of those years, the
Markov SDP at the same weights, SOP and the agents."""

from __future__ import annotations

import json

import pytest

from reservoir_dqn.commands import front as front_command
from reservoir_dqn.envs.reservoir import held_out_front as module
from reservoir_dqn.envs.reservoir.baselines import SDPPolicy
from reservoir_dqn.envs.reservoir.front import weighted
from reservoir_dqn.envs.reservoir.front_figure import undominated
from reservoir_dqn.envs.reservoir.replay import ForesightPolicy, RecordReplay
from reservoir_dqn.envs.reservoir.sdp import foresight, solve
from tests.conftest import REPO
from tests.delaware import CONFIG, DELAWARE, PROFILE


@pytest.fixture(scope="module")
def result() -> dict:
    replay = RecordReplay.of(PROFILE, DELAWARE, CONFIG)
    assert replay is not None
    saved, module.GRID = module.GRID, 5  # lam = 0, 0.25, 0.5, 0.75, 1
    try:
        return module.held_out_front(replay, {})
    finally:
        module.GRID = saved


def test_foresight_bounds_the_markov_sdp_at_every_weight_on_the_held_out_years(result: dict) -> None:
    for bound, sdp in zip(result["foresight"], result["sdp"], strict=True):
        assert bound["lam"] == sdp["lam"]
        # Foresight is optimal per window (the rewards are float32 sums: a tie may differ by rounding).
        assert bound["utility_per_window"] >= sdp["utility_per_window"] - 1e-6 * abs(sdp["utility_per_window"])
    energies = [point["energy_gwh_per_year"] for point in result["foresight"]]
    assert energies == sorted(energies) and energies[0] < energies[-1]  # more weight on energy buys more of it
    assert result["windows"][0] == "2005-10" and len(result["windows"]) == 10


def test_the_configured_weight_replays_the_configured_sdp_and_foresight(result: dict) -> None:
    replay = RecordReplay.of(PROFILE, DELAWARE, CONFIG)
    assert replay is not None
    policies = replay.policies()
    configured = {point["lam"]: point for point in result["sdp"]}[0.5]
    assert configured == pytest.approx({"lam": 0.5, **module.yearly(replay, policies["sdp"])[0]})
    bound = {point["lam"]: point for point in result["foresight"]}[0.5]
    assert bound == pytest.approx({"lam": 0.5, **module.yearly(replay, policies["foresight"])[0]})
    assert result["sop"]["deficit_hm3_per_year"] == 0.0  # SOP meets every month's demand on these years


def test_each_point_s_scalarised_return_is_the_foresight_dp_s_value_and_stacked_policies_split_by_copy() -> None:
    replay = RecordReplay.of(PROFILE, DELAWARE, CONFIG)
    assert replay is not None
    model, windows = replay.model, replay.windows
    initial = CONFIG.initial_storage
    for lam in (0.0, 0.3, 1.0):
        solution = foresight(weighted(model, lam), windows.inflows, windows.classes[:, -1])
        point = module.yearly(replay, ForesightPolicy(solution.policy), lam=lam)[0]
        expected = float(solution.values[:, 0, initial].mean())
        assert point["utility_per_window"] == pytest.approx(expected, rel=1e-5)
    sdp = SDPPolicy(solve(model))
    assert module.yearly(replay, sdp, copies=2) == [module.yearly(replay, sdp)[0]] * 2


def test_the_figure_draws_no_point_another_weight_beats_on_both_axes() -> None:
    points = [
        {"lam": 0.0, "deficit_hm3_per_year": 0.0, "energy_gwh_per_year": 2273.0},
        {"lam": 0.5, "deficit_hm3_per_year": 0.0, "energy_gwh_per_year": 2490.0},
        {"lam": 0.8, "deficit_hm3_per_year": 300.0, "energy_gwh_per_year": 2480.0},
        {"lam": 1.0, "deficit_hm3_per_year": 800.0, "energy_gwh_per_year": 2525.0},
    ]
    assert [point["lam"] for point in undominated(points)] == [0.5, 1.0]


def test_front_held_out_without_a_record_is_refused_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert front_command.main(["--held-out", "--params", str(REPO / "params.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--held-out: reservoir has no held-out record" in err[0]
    assert not (tmp_path / "front").exists()


def test_front_held_out_writes_its_json_and_figure(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(module, "GRID", 3)
    sets = [f"--set=env.reservoir.record.path={REPO / 'data' / 'delaware_monthly_hm3.csv'}"]
    from reservoir_dqn.commands.recipe import overrides

    args = [argument for override in overrides("reservoir-delaware", REPO / "recipes") for argument in ("-S", override)]
    assert front_command.main(["--held-out", "--no-agents", "--params", str(REPO / "params.yaml"), *args, *sets]) == 0
    written = json.loads((tmp_path / "front" / "held_out_front.json").read_text())
    assert [point["lam"] for point in written["foresight"]] == [0.0, 0.5, 1.0] and written["agents"] == {}
    assert (tmp_path / "front" / "held_out_front.png").stat().st_size > 10_000
