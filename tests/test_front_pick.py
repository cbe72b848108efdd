"""A point of the exact front as a policy that ships (``reservoir-dqn front --pick``, release/front_pick.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from reservoir_dqn.agent import check_table, load_model, make_q_network, q_module, save_model
from reservoir_dqn.agent.model_file import MODEL_FORMAT_VERSION, TABLE_FORMAT_VERSION
from reservoir_dqn.commands import advise, front
from reservoir_dqn.common.errors import ModelFileError
from reservoir_dqn.config import load_config
from reservoir_dqn.envs.reservoir.account import greedy_tables, grid_observations
from reservoir_dqn.envs.reservoir.front import weighted
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.sdp import solve
from reservoir_dqn.release.front_pick import table_policy, table_spec
from tests import delaware
from tests.conftest import REPO, run_command

SHORT = load_config(REPO / "params.yaml", ["env.reservoir.horizon_months=12"]).env.reservoir
CASES = {
    "independent": SHORT,
    "independent, from April": SHORT.model_copy(update={"start_month": 3}),
    "persistent": delaware.CONFIG.model_copy(update={"horizon_months": 24}),
    "persistent, seeing last month's flow": delaware.CONFIG.model_copy(
        update={"horizon_months": 24, "observe_last_flow": True}
    ),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("lam", [0.0, 0.37, 1.0])
def test_the_table_is_the_sdps_policy_at_its_weight_in_every_state(name: str, lam: float) -> None:
    """Read back through the observations, the table takes the release the SDP at ``lam`` takes in every state."""
    model = ReservoirModel.from_config(CASES[name])
    q_network, spec = table_policy(model, lam, "reservoir")
    assert spec.table is not None and spec.agents == 1 and spec.obs_dim == model.observation_size
    expected = solve(weighted(model, lam)).policy
    assert torch.equal(greedy_tables(model, q_module(q_network), 1)[0], expected)
    values = q_module(q_network)(grid_observations(model))
    assert values.max(dim=-1).values.abs().max() == 0.0  # each state's best release at 0, the others below


def test_the_table_reads_an_operators_storage_at_the_nearest_grid_point() -> None:
    model = ReservoirModel.from_config(SHORT)
    q_network, _ = table_policy(model, 0.5, "reservoir")
    table = q_module(q_network)
    on_grid = model.observation(torch.tensor([10.0]), torch.tensor([3]), torch.tensor([0]))
    near = model.observation(torch.tensor([9.6]), torch.tensor([3]), torch.tensor([0]))  # rounded, not floored
    beyond = model.observation(torch.tensor([99.0]), torch.tensor([3]), torch.tensor([0]))
    full = model.observation(torch.tensor([float(model.config.capacity)]), torch.tensor([3]), torch.tensor([0]))
    assert torch.equal(table(near), table(on_grid)) and torch.equal(table(beyond), table(full))


def test_a_table_round_trips_through_its_model_file_and_a_network_stays_format_3(tmp_path: Path) -> None:
    model = ReservoirModel.from_config(SHORT)
    q_network, spec = table_policy(model, 0.2, "reservoir")
    save_model(q_network, spec, tmp_path / "pick.pt")
    loaded, loaded_spec = load_model(tmp_path / "pick.pt")
    observations = grid_observations(model)
    assert loaded_spec == spec
    assert torch.equal(q_module(loaded)(observations), q_module(q_network)(observations))
    assert torch.load(tmp_path / "pick.pt", weights_only=True)["version"] == TABLE_FORMAT_VERSION
    network_spec = spec.__class__(obs_dim=spec.obs_dim, num_actions=spec.num_actions, hidden_sizes=(8,), env_name="x")
    save_model(make_q_network(network_spec), network_spec, tmp_path / "net.pt")
    payload = torch.load(tmp_path / "net.pt", weights_only=True)
    assert payload["version"] == MODEL_FORMAT_VERSION and "table" not in payload["spec"]


def test_a_table_of_another_grid_is_refused_where_it_would_misread_states(tmp_path: Path) -> None:
    model = ReservoirModel.from_config(SHORT)
    _, spec = table_policy(model, 0.2, "reservoir")
    check_table(spec, table_spec(model), tmp_path / "pick.pt")  # its own grid: accepted
    for other in ({"horizon_months": 24}, {"start_month": 0}, {"capacity": 60}):
        expected = table_spec(ReservoirModel.from_config(SHORT.model_copy(update=other)))
        with pytest.raises(ModelFileError, match="another grid"):
            check_table(spec, expected, tmp_path / "pick.pt")


def test_a_table_file_that_says_it_is_a_network_is_refused(tmp_path: Path) -> None:
    model = ReservoirModel.from_config(SHORT)
    q_network, spec = table_policy(model, 0.2, "reservoir")
    save_model(q_network, spec, tmp_path / "pick.pt")
    payload = torch.load(tmp_path / "pick.pt", weights_only=True)
    torch.save(payload | {"version": MODEL_FORMAT_VERSION}, tmp_path / "mislabelled.pt")
    with pytest.raises(ModelFileError, match="does not match"):
        load_model(tmp_path / "mislabelled.pt")
    key = "module.0.module.values"
    payload["state_dict"][key] = payload["state_dict"][key][:3]
    torch.save(payload, tmp_path / "cut.pt")
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model(tmp_path / "cut.pt")
    payload = torch.load(tmp_path / "pick.pt", weights_only=True)
    payload["spec"]["table"]["axes"][0]["feature"] = spec.obs_dim
    torch.save(payload, tmp_path / "outside.pt")
    with pytest.raises(ModelFileError, match="outside"):
        load_model(tmp_path / "outside.pt")


@pytest.mark.slow
def test_a_picked_point_is_written_exported_mapped_and_advised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``front --pick`` writes the point's model file, checked ONNX and maps; ``advise`` and ``front --models``
    take the model file as they take a trained agent's."""
    monkeypatch.chdir(tmp_path)
    short = ("--set", "env.reservoir.horizon_months=24")
    status, printed, errors = run_command(capsys, front.main, "--no-agents", "--pick", "0.2", *short)
    assert status == 0, errors
    folder = tmp_path / "front/pick-0.2"
    names = {"model.pt", "policy.onnx", "policy_map.png", "policy_disagreement.png", "value_lost.png", "pick.json"}
    assert {path.name for path in folder.iterdir()} == names
    picked = json.loads((folder / "pick.json").read_text())
    result = json.loads((tmp_path / "front/front.json").read_text())
    # the optimum at its own weight: no vertex of the front beats it, and it beats them by at most the certificate
    assert -result["certificate"] - 1e-9 <= picked["utility_loss_at_lam"] <= 1e-9
    assert picked["utility_loss_at_configured"] > 0 and picked["onnx_checked_states"] == 24 * 41
    assert result["picked"] == picked and "picked lam 0.2" in printed

    # advise: the release the SDP at lam 0.2 takes, where it differs from the configured optimum's
    model = ReservoirModel.from_config(SHORT.model_copy(update={"horizon_months": 24}))
    pick, best = solve(weighted(model, 0.2)).policy, solve(model).policy
    t, s, _ = (pick != best).nonzero()[0].tolist()
    month = int(model.month(torch.tensor(t))) + 1
    levels = [level * model.config.unit_hm3 for level in model.config.release_levels]
    state = ("--storage-hm3", str(s * 10.0), "--month", str(month), "--months-left", str(24 - t))
    status, printed, errors = run_command(capsys, advise.main, "--model", str(folder / "model.pt"), *state, *short)
    assert status == 0, errors
    assert f"given model:        release {levels[pick[t, s, 0]]:,.0f} hm3" in printed
    assert f"SDP optimum:        release {levels[best[t, s, 0]]:,.0f} hm3" in printed

    status, _, errors = run_command(capsys, front.main, "--models", str(folder / "model.pt"), *short)
    assert status == 0, errors
    agent = json.loads((tmp_path / "front/front.json").read_text())["agents"][0]
    assert math.isclose(agent["utility_loss_at_configured"], picked["utility_loss_at_configured"], abs_tol=1e-9)

    # under another horizon its indices would be other states: refused in one line
    other = ("--set", "env.reservoir.horizon_months=36")
    status, _, errors = run_command(capsys, advise.main, "--model", str(folder / "model.pt"), "--storage-hm3", "100",
                             "--month", "Jun", *other)  # fmt: skip
    assert status != 0 and "another grid" in errors.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--pick", "1.5"), "--pick"),
        (("--pick", "0.5", "--held-out"), "--held-out"),
        (("--pick", "0.5", "--set", "env.reservoir.observe_time_left=false"), "observe_time_left"),
        (("--pick-to", "somewhere"), "--pick-to"),
        (("--pick", "0.5", "--pick-to", "."), "--pick-to"),
        (("--pick", "0.5", "--pick-to", "notes.txt"), "--pick-to"),
        (("--pick", "0.5", "--pick-to", "front"), "--pick-to"),
    ],
)
def test_a_pick_it_cannot_make_is_refused_in_one_line_writing_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    named: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "front").mkdir()
    (tmp_path / "front/front.json").write_text("{}")  # a front's folder, holding no pick.json
    status = front.main(
        ["--no-agents", *args, "--params", str(REPO / "params.yaml"), "-S", "env.reservoir.horizon_months=12"]
    )
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(error) == 1 and named in error[0]
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "front/front.json").read_text() == "{}"
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["front", "front.json", "notes.txt"]
