"""Pipeline stages, one small module each: ``train`` -> ``evaluate`` -> ``plot``, and ``export`` after ``train``.

Each stage has a thin ``main()`` that reads the parameters and its paths from the command
line (:func:`stage_config`) and calls pure functions of the package, through the plumbing
every command shares (:mod:`reservoir_dqn.commands.plumbing`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reservoir_dqn.commands.plumbing import StageFailed, connect_tracking
from reservoir_dqn.commands.workspace import ParamsSnapshot, mismatch_with_training, reveal_params_change
from reservoir_dqn.common.files import read_json
from reservoir_dqn.config import Config, add_config_arguments, config_from_args
from reservoir_dqn.envs import profile
from reservoir_dqn.training.summary import Training

if TYPE_CHECKING:
    from reservoir_dqn.tracking import Tracking

# The command-line option of each output path: ``--<flag> PATH`` overrides ``paths.<name>``.
PATH_OPTIONS = {
    "model": ("--model", "shipped model file"),
    "onnx": ("--onnx", "the shipped policy as an ONNX file"),
    "agents": ("--agents", "folder of every agent's networks"),
    "checkpoints": ("--checkpoints", "checkpoint folder"),
    "train_log": ("--train-log", "training-log folder (a CSV per metric group)"),
    "train_metrics": ("--train-metrics", "training summary JSON (names the MLflow runs)"),
    "eval_metrics": ("--eval-metrics", "evaluation detail JSON"),
    "summary": ("--summary", "headline metrics JSON (what DVC tracks)"),
    "eval_episodes": ("--episodes-csv", "per-episode evaluation CSV"),
    "trajectories": ("--trajectories", "per-step evaluation trajectories CSV"),
    "policy_states": ("--policy-states", "per-state CSV of the shipped agent's rule and its exact account"),
    "plots": ("--plots", "folder of PNG figures"),
}


def stage_config(
    name: str, description: str, paths: Sequence[str], argv: Sequence[str] | None, training: bool = False
) -> Config:
    """Parse a stage's command line: the parameter options plus its ``paths``; return the validated config.

    A path given on the command line becomes a ``paths.<name>`` override, so it is checked
    like any parameter (relative, inside the repository). ``training``: the stage trains, and
    offers the training hyperparameters' shortcuts (``--lr``, ``--seeds``, ...).
    """
    parser = argparse.ArgumentParser(prog=f"reservoir-dqn {name}", description=description)
    add_config_arguments(parser, training)
    group = parser.add_argument_group("paths")
    for path in paths:
        flag, what = PATH_OPTIONS[path]
        group.add_argument(flag, dest=path, metavar="PATH", help=f"{what} (default: paths.{path})")
    args = parser.parse_args(argv)
    args.overrides += [f"paths.{path}={getattr(args, path)}" for path in paths if getattr(args, path) is not None]
    if os.environ.get("DVC_EXP_NAME"):  # values `dvc exp run -S` wrote, which git's stat cache may hide
        reveal_params_change(Path(args.params))
    config = config_from_args(args)
    profile(config.env)  # an unknown or unsupported environment is refused before any work
    return config


def training_summary(config: Config) -> Training:
    """What the train stage wrote to ``paths.train_metrics`` (the later stages read it)."""
    path = Path(config.paths.train_metrics)
    try:
        return Training.from_json(read_json(path))
    except FileNotFoundError:
        raise StageFailed(f"{path} is missing: run the train stage first") from None
    except ValueError as error:
        raise StageFailed(f"{path} cannot be read ({error}): run the train stage again") from None


@dataclass(frozen=True)
class OpenStage:
    """What a stage after ``train`` starts from: its config, the params as they were, its tracking, the training."""

    config: Config
    snapshot: ParamsSnapshot  # the params the stage started with: its outputs are written only if they still hold
    tracking: Tracking  # connected before any work, so a lost store fails fast
    trained: Training  # what the train stage wrote, checked to be of these params


def open_stage(
    name: str, description: str, paths: Sequence[str], params: Sequence[str], argv: Sequence[str] | None
) -> OpenStage:
    """The opening every stage after ``train`` shares: parse, snapshot the params, connect tracking, read the training.

    :param params: the params sections the stage depends on (as dvc.yaml lists them): the training must have used
        the same values, or the stage stops in one line saying which differ.
    """
    config = stage_config(name, description, paths, argv)
    snapshot = ParamsSnapshot.take(config)
    tracking = connect_tracking(config)
    trained = training_summary(config)
    train_metrics = Path(config.paths.train_metrics)
    if (mismatch := mismatch_with_training(config, trained.params, params, train_metrics)) is not None:
        raise StageFailed(mismatch)
    return OpenStage(config, snapshot, tracking, trained)
