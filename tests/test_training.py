"""The training entry points: smoke runs, determinism, exact resume without cut episodes, early stop, learning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from reservoir_dqn.commands import train
from reservoir_dqn.commands.exits import Exit
from reservoir_dqn.config import load_config
from reservoir_dqn.envs import register
from reservoir_dqn.training import checkpoints as checkpoint
from reservoir_dqn.training.checkpoints import verify_archive
from reservoir_dqn.training.loop import TrainingDiverged, plateaued
from reservoir_dqn.training.loop import train as train_loop
from reservoir_dqn.training.session import Progress, agent_seeds, env_seeds, start
from tests.conftest import REPO, model_weights, write_params
from tests.delaware import RECORD
from tests.identity_env import IDENTITY, LENGTH, IdentityProfile

TIMING_COLUMNS = {"frames_per_second"}


def _logs(folder: Path) -> dict[str, pd.DataFrame]:
    """The training log without its timing column (wall time differs between runs)."""
    return {
        path.stem: pd.read_csv(path).drop(columns=list(TIMING_COLUMNS), errors="ignore")
        for path in folder.glob("*.csv")
    }


def _same_logs(a: Path, b: Path) -> bool:
    left, right = _logs(a), _logs(b)
    return left.keys() == right.keys() and all(left[name].equals(right[name]) for name in left)


def _same_weights(a: Path, b: Path) -> bool:
    first, second = model_weights(a), model_weights(b)
    return all(torch.equal(first[key], second[key]) for key in first)


def _train(*overrides: str, name: str = "run") -> int:
    paths = [
        f"paths.checkpoints=ck_{name}",
        f"paths.train_log=log_{name}",
        f"paths.agents=agents_{name}",
        f"paths.model=model_{name}.pt",
        f"paths.train_metrics=train_{name}.json",
    ]
    return train.main([arg for override in (*paths, *overrides) for arg in ("--set", override)])


@pytest.mark.slow
def test_smoke_train_evaluate_plot_through_the_console_script_on_cartpole(project: Path) -> None:
    """The real entry points, as a user runs them, with a tiny budget, on CartPole.

    The reservoir goes through the same entry points in tests/test_readme.py (the README's
    stage commands) and in every DVC test.
    """
    write_params(project / "params.yaml", **{"env.name": "CartPole-v1", "env.section": "gym"})
    for stage in ("train", "evaluate", "plot"):
        result = subprocess.run(
            [sys.executable, "-m", "reservoir_dqn.commands.cli", stage], capture_output=True, text=True, cwd=project
        )
        assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((project / "metrics/train.json").read_text())
    assert summary["frames"] == 800 and summary["updates"] > 0 and summary["seeds"] == 2
    assert len(summary["agents"]) == 2 and summary["shipped_agent"] in (0, 1)
    evaluation = json.loads((project / "metrics/eval.json").read_text())
    main_metric = evaluation["dqn"]["final"]["score"]
    assert len(main_metric["per_seed"]) == 2 and main_metric["ci_low"] <= main_metric["mean"] <= main_metric["ci_high"]
    headline = json.loads((project / "metrics/summary.json").read_text())
    assert set(headline) == {*evaluation["headline"], "score_lo", "score_hi", "train_minutes", "converged_agents"}
    assert (project / "models/model.pt").exists() and (project / "models/agents/final.pt").exists()
    assert len(list((project / "plots").glob("*.png"))) >= 2
    logs = _logs(project / "logs/train")
    assert {"progress", "learning", "episode", "validation"} <= set(logs)
    for name, frame in logs.items():
        assert not frame.isna().any().any(), f"{name}.csv has empty cells"
    assert list(logs["validation"]["frames"].unique()) == [400, 800]


def test_same_seed_gives_identical_curves_and_weights(project: Path) -> None:
    assert _train(name="a") == 0 and _train(name="b") == 0
    assert _same_logs(project / "log_a", project / "log_b")
    assert _same_weights(project / "agents_a/final.pt", project / "agents_b/final.pt")
    # ... in files equal byte for byte, so DVC sees the same model (torch named the archive after a temporary file)
    assert (project / "model_a.pt").read_bytes() == (project / "model_b.pt").read_bytes()


@pytest.mark.slow
def test_agents_and_master_seeds_give_different_weights(project: Path) -> None:
    assert _train(name="a") == 0 and _train("seed=1", name="b") == 0
    a, b = model_weights(project / "agents_a/final.pt"), model_weights(project / "agents_b/final.pt")
    first = "module.0.module.weights.0"
    assert not torch.equal(a[first], b[first])
    assert not torch.equal(a[first][0], a[first][1])  # two agents of one run differ too
    assert len(set(agent_seeds(0, 8))) == 8
    seeds = env_seeds(0, 8, 16)
    assert len(set(seeds)) == 128 and max(seeds) < 1_000_000_000


# Batches of 200 frames (25 steps of 8 environments) keep the long intervals cheap. Validations fall on
# the stops: a run that ends between two validations validates once more (its shipped agent is chosen
# on a fresh validation), which the straight run does not.
RECORD_DRIVEN = (
    "env.name=reservoir-delaware",
    "env.reservoir.inflow_model=record",
    f"env.reservoir.record.path={RECORD}",
    "env.reservoir.unit_hm3=106.0",
)
LONG_BATCHES = (
    "env.num_envs=8",
    "train.frames_per_batch=200",
    "tracking.log_interval_frames=200",
    "train.eval_interval_frames=1000",
)


@pytest.mark.parametrize(
    ("interval", "stop", "total", "extra"),
    [
        # A reservoir driven by the Delaware record: the inflow chain's classes resume mid-episode too.
        pytest.param(200, 1200, 2000, RECORD_DRIVEN, marks=pytest.mark.slow),
        pytest.param(120, 1200, 2000, ("dqn.prioritized=true",), marks=pytest.mark.slow),
        pytest.param(120, 1200, 2000, ("env.name=CartPole-v1", "env.section=gym"), marks=pytest.mark.slow),
        # The intervals of the issue, stopped at one of their checkpoints, mid-episode: 3,000 frames are
        # 375 months of each of the 8 reservoirs (month 15 of an episode), 10,000 frames 1,250 (month 50).
        pytest.param(1000, 3000, 4000, LONG_BATCHES, marks=pytest.mark.slow),
        pytest.param(10_000, 10_000, 12_000, LONG_BATCHES, marks=pytest.mark.slow),
    ],
)
def test_resume_is_exact_at_any_checkpoint_interval(
    project: Path, interval: int, stop: int, total: int, extra: tuple[str, ...]
) -> None:
    """N frames straight == stopped at a checkpoint in the middle of episodes, then resumed: bit-identical."""
    budget = (f"train.checkpoint_interval_frames={interval}", f"train.total_frames={total}", *extra)
    env = load_config(project / "params.yaml", extra).env
    if env.name.startswith("reservoir"):  # the boundary falls inside the episodes (CartPole's vary in length)
        assert (stop // env.num_envs) % env.reservoir.horizon_months != 0
    assert _train(*budget, name="straight") == 0
    assert _train(*budget, f"train.total_frames={stop}", name="resumed") == 0
    assert _train(*budget, name="resumed") == 0
    assert json.loads((project / "train_resumed.json").read_text())["resumed_from_frames"] == stop
    assert _same_weights(project / "agents_straight/final.pt", project / "agents_resumed/final.pt")
    assert _same_logs(project / "log_straight", project / "log_resumed")


@pytest.mark.slow
def test_checkpoints_cut_no_episode(project: Path) -> None:
    """Every training episode of the reservoir lasts its full horizon, whatever the checkpoint interval."""
    assert _train("train.checkpoint_interval_frames=40", "train.total_frames=2000") == 0
    episodes = pd.read_csv(project / "log_run/episode.csv")
    horizon = load_config(project / "params.yaml").env.reservoir.horizon_months
    assert len(episodes) and (episodes["length"] == horizon).all()


@pytest.mark.slow
def test_finished_run_is_not_trained_again(project: Path, capsys) -> None:
    assert _train() == 0
    first = model_weights(project / "model_run.pt")
    assert _train() == 0
    assert "resuming from" in capsys.readouterr().out
    assert json.loads((project / "train_run.json").read_text())["resumed_from_frames"] == 800
    assert _same_weights(project / "model_run.pt", project / "model_run.pt") and torch.equal(
        first["module.0.module.weights.0"], model_weights(project / "model_run.pt")["module.0.module.weights.0"]
    )


@pytest.mark.slow
def test_checkpoint_of_other_params_is_never_resumed(project: Path, capsys) -> None:
    assert _train("train.total_frames=400") == 0
    capsys.readouterr()
    assert _train("dqn.gamma=0.9") == 0
    out = capsys.readouterr().out
    assert "(or carry no key) and are never resumed" in out and "resuming from" not in out
    assert json.loads((project / "train_run.json").read_text())["resumed_from_frames"] == 0


def test_the_code_a_checkpoint_is_keyed_on_is_every_module_of_the_package() -> None:
    """A change to any module, the environments' and the commands' included, keys checkpoints anew (the key once
    covered only the folder of the checkpoint module, which moved into training/)."""
    package = REPO / "src/reservoir_dqn"
    modules = {path for path in package.rglob("*.py") if "__pycache__" not in path.parts}
    assert set(checkpoint.source_files()) == modules
    assert {path.parent.name for path in modules} >= {"envs", "reservoir", "agent", "commands", "reservoir_dqn"}


@pytest.mark.slow
def test_checkpoint_of_other_code_is_never_resumed(project: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a `git pull`, DVC re-runs train: the old code's finished checkpoint must not be shipped as new."""
    assert _train() == 0
    capsys.readouterr()
    monkeypatch.setattr(checkpoint, "source_hash", lambda: "the code of another version")
    assert _train() == 0
    assert "come from other parameters, code or library versions" in capsys.readouterr().out
    assert json.loads((project / "train_run.json").read_text())["resumed_from_frames"] == 0


def test_divergence_stops_with_a_clear_message_and_writes_no_model(project: Path, capsys) -> None:
    status = _train("dqn.lr=1e30", "dqn.max_grad_norm=1e30", "dqn.loss=l2")
    assert status == Exit.FAILED
    last = capsys.readouterr().err.strip().splitlines()[-1]  # above it: the progress bar
    assert last.startswith("error: the loss became") and "at frame" in last
    assert not (project / "model_run.pt").exists()


def test_divergence_keeps_the_last_good_checkpoint(tiny_config, project: Path, monkeypatch) -> None:
    import reservoir_dqn.agent.dqn as algorithm

    real_update = algorithm.update
    updates = []

    def poisoned_after_the_first_checkpoint(agent, batch):  # type: ignore[no-untyped-def]
        loss, grad_norm = real_update(agent, batch)
        updates.append(1)  # 2 updates per 40-frame batch from frame 80: the 9th comes after frame 200
        return (loss * float("nan") if len(updates) > 8 else loss), grad_norm

    monkeypatch.setattr(algorithm, "update", poisoned_after_the_first_checkpoint)
    with pytest.raises(TrainingDiverged, match="at frame 240"):
        train_loop(start(tiny_config, project / "ck"))
    kept = sorted(path.name for path in (project / "ck").glob("checkpoint-*"))
    assert kept == ["checkpoint-000000000200.torchrl"]  # the last good one, nothing after it
    verify_archive(project / "ck" / kept[0])


@pytest.mark.slow
def test_a_training_without_checkpoints_writes_none_and_learns_the_same(tiny_config, project: Path) -> None:
    """What a tuning trial does (it never resumes): no checkpoint is written, and the result is unchanged."""
    unsaved = train_loop(start(tiny_config, None))
    assert sorted(path.name for path in project.iterdir()) == ["params.yaml"]
    saved = train_loop(start(tiny_config, project / "ck"))
    assert any((project / "ck").glob("checkpoint-*"))
    assert all(
        torch.equal(weight, saved.final.state_dict()[name]) for name, weight in unsaved.final.state_dict().items()
    )
    assert unsaved.summary.agents == saved.summary.agents


def test_an_agent_that_reaches_the_target_stops_and_keeps_that_network(project: Path) -> None:
    register(IdentityProfile())
    write_params(project / "params.yaml", **{**IDENTITY, "train.eval_interval_frames": 200})
    config = load_config(project / "params.yaml", ["train.stop_at_validation_return=-1", "train.total_frames=2000"])
    result = train_loop(start(config, project / "ck"))
    # Every agent reaches a return >= -1 at the first validation, stops there, and the run ends.
    assert result.summary.frames == 200
    assert [agent.stopped_at_frames for agent in result.summary.agents] == [200, 200]


def test_an_agent_has_converged_once_the_moving_average_of_its_validations_stops_rising() -> None:
    """The plateau: patience ``plateau_validations`` validations without a rise of the best moving average (of
    ``plateau_window`` scores) above ``plateau_min_delta``."""
    sets = ["train.plateau_window=2", "train.plateau_validations=3", "train.plateau_min_delta=0.005"]
    settings = load_config(REPO / "params.yaml", sets).train
    progress = Progress(last_score=[0.0])
    seen = []
    scores = (0.1, 0.5, 0.5, 0.504, 0.50, 0.508, 0.50, 0.9, 0.9)
    for frames, score in zip(range(1000, 10000, 1000), scores, strict=True):
        progress.frames = frames
        seen.append(plateaued(progress, 0, score, settings))
    # Averages from the 2nd: 0.3, 0.5 (best at 3,000), 0.502, 0.502, 0.504, 0.504: three without a rise above
    # 0.505 after 3,000: converged there at 6,000, and a later rise does not undo it.
    assert seen == [False, False, False, False, False, True, True, True, True]
    assert progress.converged_frames == [3000]


def test_until_converged_stops_each_agent_at_its_plateau(project: Path) -> None:
    register(IdentityProfile())
    write_params(project / "params.yaml", **{**IDENTITY, "train.eval_interval_frames": 200})
    sets = ["train.until_converged=true", "train.plateau_window=1", "train.plateau_validations=1",
            "train.plateau_min_delta=10", "train.total_frames=2000"]  # fmt: skip
    result = train_loop(start(load_config(project / "params.yaml", sets), project / "ck"))
    # No later validation can beat the first by 10: each agent converged there, and stops at the next one.
    assert [agent.converged_at_frames for agent in result.summary.agents] == [200, 200]
    assert [agent.stopped_at_frames for agent in result.summary.agents] == [400, 400]
    assert result.summary.frames == 400
    assert result.summary.convergence() == (
        "converged: 2 of 2 agents (agent 0 at 200, agent 1 at 200; frames of the plateau's best)"
    )


def test_dqn_learns_the_identity_task(project: Path) -> None:
    """SB3-style learnability: on a task with a known optimum, every agent gets close to it in seconds."""
    register(IdentityProfile())
    overrides = {
        **IDENTITY,
        "dqn.gamma": 0.5,
        "dqn.n_steps": 1,
        "dqn.lr": 0.003,
        "dqn.lr_end_factor": 0.1,
        "dqn.lr_decay_frames": 3000,
        "dqn.eps_decay_frames": 1000,
        "train.total_frames": 3000,
        "train.updates_per_batch": 8,
        "train.eval_interval_frames": 1000,
        "train.eval_episodes": 20,
    }
    write_params(project / "params.yaml", **overrides)
    config = load_config(project / "params.yaml")
    result = train_loop(start(config, project / "ck"))
    finals = [agent.final_validation_return for agent in result.summary.agents]
    assert min(finals) >= 0.95 * LENGTH, finals  # random: LENGTH / 4
