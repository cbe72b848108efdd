"""``reservoir-dqn advise``: the shipped policy's and the optimum's release for an operator's state, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reservoir_dqn.agent import NetworkSpec, load_model, make_q_network, save_model, stacked_mlp
from reservoir_dqn.commands import advise
from reservoir_dqn.commands.recipe import overrides
from reservoir_dqn.config import load_config
from reservoir_dqn.envs.reservoir.account import greedy_tables
from reservoir_dqn.envs.reservoir.advice import operator_state
from reservoir_dqn.envs.reservoir.baselines import reservoir_optimum
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from tests import delaware
from tests.conftest import REPO


def _model_file(tmp_path: Path, model: ReservoirModel, env_name: str) -> Path:
    spec = NetworkSpec(model.observation_size, model.num_actions, (16,), env_name)
    path = tmp_path / "model.pt"
    save_model(make_q_network(spec, seeds=[7]), spec, path)
    return path


def _settings(case: str) -> list[str]:
    if case == "reservoir":
        return []
    record = f"env.reservoir.record.path={delaware.RECORD}"
    return [
        item for override in (*overrides("reservoir-delaware", REPO / "recipes"), record) for item in ("-S", override)
    ]


@pytest.mark.parametrize("case", ["reservoir", "delaware"])
def test_advice_is_the_policys_and_the_optimums_release_in_that_state(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(REPO / "params.yaml", [value for value in _settings(case) if value != "-S"]).env
    model = ReservoirModel.from_config(config.reservoir)
    path = _model_file(tmp_path, model, config.name)
    inflow = ["--last-inflow-hm3", "900"] if case == "delaware" else []
    unit = config.reservoir.unit_hm3
    argv = ["--params", str(REPO / "params.yaml"), *_settings(case), "--model", str(path)]
    assert advise.main([*argv, "--storage-hm3", str(25.4 * unit), "--month", "Jun", *inflow]) == 0
    out = capsys.readouterr().out
    state = operator_state(model, 25.4 * unit, 5, None, 900.0 if inflow else None)
    assert state.storage == 25 and int(model.month(torch.tensor(state.time_step))) == 5
    assert state.time_step < 12  # the earliest June of the horizon
    q_network, _ = load_model(path)
    table = greedy_tables(model, stacked_mlp(q_network), agents=1)[0]
    solution = reservoir_optimum(config.reservoir)
    column = state.inflow_class if case == "delaware" else 0
    levels = model.release_levels * unit
    policy, best = int(table[state.time_step, 25, column]), int(solution.policy[state.time_step, 25, column])
    assert f"given model:        release {float(levels[policy]):,.0f} hm3/month" in out  # --model: not the shipped one
    assert f"SDP optimum:        release {float(levels[best]):,.0f} hm3/month" in out
    lost = float(solution.values[state.time_step, 25, column] - solution.q_values[state.time_step, 25, column, policy])
    assert (f"loses {lost:,.2f}" in out) if lost > 1e-9 else ("optimal here" in out)
    assert "read from" in out  # 25.4 units is read at the grid's 25


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--storage-hm3", "-5", "--month", "Jun"], "--storage-hm3: -5 is outside 0 to 400 hm3"),
        (["--storage-hm3", "nan", "--month", "Jun"], "--storage-hm3: nan is outside"),
        (["--storage-hm3", "100", "--month", "Jux"], "--month: 'Jux' is not a month"),
        (["--storage-hm3", "100", "--month", "Jun", "--months-left", "10"], "--months-left: 10 months left is no Jun"),
        (["--storage-hm3", "100", "--month", "6", "--last-inflow-hm3", "3"], "--last-inflow-hm3: the reservoir's"),
        (
            ["--storage-hm3", "100", "--month", "Jun", "-S", "env.name=CartPole-v1", "-S", "env.section=gym"],
            "env.name: advise operates a res",
        ),
    ],
)
def test_bad_state_input_is_one_line_naming_the_field(
    arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(REPO / "params.yaml").env
    path = _model_file(tmp_path, ReservoirModel.from_config(config.reservoir), config.name)
    status = advise.main(["--params", str(REPO / "params.yaml"), "--model", str(path), *arguments])
    captured = capsys.readouterr()
    assert status == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], captured.err


def test_a_persistent_reservoir_needs_last_months_inflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = delaware.MODEL
    path = _model_file(tmp_path, model, delaware.DELAWARE.name)
    argv = ["--params", str(REPO / "params.yaml"), *_settings("delaware"), "--model", str(path)]
    assert advise.main([*argv, "--storage-hm3", "1000", "--month", "Jun"]) == 2
    assert "--last-inflow-hm3: required" in capsys.readouterr().err
    assert advise.main([*argv, "--storage-hm3", "1000", "--month", "Jun", "--last-inflow-hm3", "-1"]) == 2
    assert "--last-inflow-hm3: -1 is not a volume" in capsys.readouterr().err


def test_a_model_of_another_environment_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _model_file(tmp_path, delaware.MODEL, delaware.DELAWARE.name)
    argv = ["--params", str(REPO / "params.yaml"), "--model", str(path), "--storage-hm3", "100", "--month", "Jun"]
    assert advise.main(argv) == 2
    assert "a model of reservoir-delaware with 5 inputs, not of reservoir" in capsys.readouterr().err
