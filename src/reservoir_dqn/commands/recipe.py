"""``reservoir-dqn recipe NAME``: an environment's tuned settings, as ``-S`` arguments for ``dvc exp run``.

A recipe is a small YAML file in ``recipes/`` (``recipes/Acrobot-v1.yaml``): dotted
params.yaml keys and their values, with comments that say where each departs from rl-zoo3's
``hyperparams/dqn.yml``. The command checks it against the current params.yaml (the values
validate, the environment is supported) and prints it, so one line runs it::

    .venv/bin/reservoir-dqn dvc exp run --temp --name acrobot $(.venv/bin/reservoir-dqn recipe Acrobot-v1)

Without a name it lists the recipes.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reservoir_dqn.commands.plumbing import run_stage
from reservoir_dqn.config import DEFAULT_PARAMS, ConfigError, load_config, parse_yaml
from reservoir_dqn.envs import profile

RECIPES = Path("recipes")


def overrides(name: str, folder: Path = RECIPES) -> list[str]:
    """The recipe ``name`` as ``key=value`` overrides (values in YAML flow style, without spaces)."""
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(recipe.stem for recipe in folder.glob("*.yaml"))) or "none"
        raise ConfigError(f"recipe {name!r}: no {path} (recipes: {known})")
    settings = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(settings, dict) or not all(isinstance(key, str) for key in settings):
        raise ConfigError(f"{path}: expected a mapping of dotted params.yaml keys to values")
    return [f"{key}={set_value(value)}" for key, value in settings.items()]


def set_value(value: Any) -> str:
    """A value as ``--set`` and ``dvc exp run -S`` parse it: YAML (JSON is YAML), one word."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def run(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="reservoir-dqn recipe", description="Print an environment's tuned settings as -S arguments."
    )
    parser.add_argument("name", nargs="?", help="recipe (a file recipes/NAME.yaml); none: list them")
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params file it applies to")
    args = parser.parse_args(argv)
    if args.name is None:
        for recipe in sorted(RECIPES.glob("*.yaml")):
            print(recipe.stem)
        return 0
    sets = overrides(args.name)
    config = load_config(args.params, sets)  # every value valid against this params.yaml
    profile(config.env)
    print(" ".join(f"-S {override}" for override in sets))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)
