"""``reservoir-dqn recipe``: every shipped recipe validates against params.yaml and prints as -S arguments."""

from __future__ import annotations

import pytest

from reservoir_dqn.commands import recipe as recipes
from reservoir_dqn.commands.exits import Exit
from reservoir_dqn.config import load_config
from tests.conftest import REPO

SHIPPED = sorted(path.stem for path in (REPO / "recipes").glob("*.yaml"))


def test_the_recipes_of_the_issue_ship() -> None:
    assert {"Acrobot-v1", "MountainCar-v0", "CartPole-v1"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_recipe_prints_settings_that_load(name: str, capsys, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    assert recipes.main([name]) == Exit.OK
    words = capsys.readouterr().out.split()
    flags, sets = words[0::2], words[1::2]
    assert flags == ["-S"] * len(sets) and sets
    config = load_config(REPO / "params.yaml", sets)  # what `dvc exp run -S ...` then writes
    assert config.env.name == name


def test_an_unknown_recipe_is_one_line_naming_the_recipes(capsys, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    assert recipes.main(["Pong-v5"]) == Exit.BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: recipe 'Pong-v5': no recipes/Pong-v5.yaml (recipes: Acrobot-v1") and "\n" not in err
