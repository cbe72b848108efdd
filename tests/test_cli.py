"""``reservoir-dqn``: a line on each command without importing any, and each command's options its own."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from reservoir_dqn.commands.cli import COMMANDS, main

TRAINING = {"train", "tune"}  # the commands that train, and alone read the training hyperparameters
SHORTCUTS = ("--lr", "--batch-size", "--gamma", "--seeds")


def _docstring_line(module: str) -> str:
    """The first line of ``module``'s docstring after the command's name, as a terminal shows it; read, not imported."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    docstring = ast.get_docstring(ast.parse(Path(spec.origin).read_text()))
    assert docstring is not None, module
    return docstring.splitlines()[0].split(": ", 1)[1].replace("``", "`").removesuffix(".")


@pytest.mark.parametrize("name", COMMANDS)
def test_each_commands_summary_is_the_first_line_of_its_modules_docstring(name: str) -> None:
    assert COMMANDS[name].summary == _docstring_line(COMMANDS[name].module)


def test_help_gives_a_line_on_each_command_without_importing_any() -> None:
    code = (
        "import json, sys\nfrom reservoir_dqn.commands import cli\nstatus = cli.main(['--help'])\n"
        "print(json.dumps([status, sorted(m for m in sys.modules if m.startswith('reservoir_dqn.commands.'))]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    *printed, last = result.stdout.splitlines()
    status, imported = json.loads(last)
    assert status == 0 and imported == ["reservoir_dqn.commands.cli"]
    assert printed[0].startswith("usage: reservoir-dqn COMMAND") and printed[2] == "commands:"
    assert printed[3:] == [f"  {name:<8}  {command.summary}" for name, command in COMMANDS.items()]
    assert "  advise    this month's release, for a reservoir's state in an operator's terms" in printed


def test_no_command_or_an_unknown_one_prints_the_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert not out and "commands:" in err and f"  train     {COMMANDS['train'].summary}" in err
    assert main(["trian"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == "error: 'trian' is not a command of reservoir-dqn"


@pytest.mark.parametrize("name", COMMANDS)
def test_only_the_commands_that_train_offer_the_training_shortcuts(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command = importlib.import_module(COMMANDS[name].module)
    with pytest.raises(SystemExit) as exited:
        command.main(["--help"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out
    offered = [option for option in SHORTCUTS if f"  {option} " in printed]
    assert offered == (list(SHORTCUTS) if name in TRAINING else [])


def test_a_training_shortcut_given_to_a_command_that_does_not_train_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    advise = importlib.import_module(COMMANDS["advise"].module)
    with pytest.raises(SystemExit) as exited:
        advise.main(["--storage-hm3", "200", "--month", "Jun", "--lr", "0.1"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == "reservoir-dqn advise: error: unrecognized arguments: --lr 0.1"
