"""The trade-off on the held-out record (``reservoir-dqn front --held-out``): foresight's front of those years, the
Markov SDP at the same weights, SOP and the agents."""

from __future__ import annotations

import json

import pytest

from reservoir_dqn.commands import front as front_command
from reservoir_dqn.envs.reservoir import held_out_front as module
from reservoir_dqn.envs.reservoir.replay import RecordReplay
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
        assert bound["utility_per_window"] >= sdp["utility_per_window"] - 1e-9  # foresight is optimal per window
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
