"""The training entry point: smoke run, determinism, exact resume, divergence."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reservoir_dqn.checkpoint import verify_archive
from reservoir_dqn.config import load_config
from reservoir_dqn.stages import evaluate, train
from reservoir_dqn.training import TrainingDiverged, segment_seed
from reservoir_dqn.training import train as train_loop
from tests.conftest import model_weights, write_params

TIMING_COLUMNS = {"train/fps"}


def _log_without_timing(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(file)]


STATISTICS = {"return_mean", "return_std", "return_min", "return_max", "length_mean", "success_rate"}
BASELINES = {"reservoir": ["sdp", "sop", "random"], "CartPole-v1": ["random"]}


@pytest.mark.parametrize("env_name", ["reservoir", "CartPole-v1"])
def test_smoke_train_then_evaluate_through_the_console_script(project: Path, env_name: str) -> None:
    """The real entry points, as a user runs them, with a tiny budget, on both environments."""
    write_params(project / "params.yaml", **{"env.name": env_name})
    for stage in ("train", "evaluate"):
        result = subprocess.run(
            [sys.executable, "-m", "reservoir_dqn.cli", stage], capture_output=True, text=True, cwd=project
        )
        assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((project / "metrics/train.json").read_text())
    assert summary["frames"] == 800 and summary["updates"] > 0 and summary["env"] == env_name
    metrics = json.loads((project / "metrics/eval.json").read_text())
    assert metrics["episodes"] == 3
    assert set(metrics["dqn"]) >= STATISTICS
    assert metrics["dqn"]["return_min"] <= metrics["dqn"]["return_mean"] <= metrics["dqn"]["return_max"]
    for baseline in BASELINES[env_name]:
        assert set(metrics[baseline]) >= STATISTICS
    if env_name == "reservoir":
        assert metrics["sdp"]["return_mean"] >= metrics["sop"]["return_mean"] >= metrics["random"]["return_mean"]
        assert metrics["fraction_of_optimum"] == pytest.approx(
            metrics["dqn"]["return_mean"] / metrics["sdp"]["return_mean"]
        )
        assert {"energy_gwh_mean", "deficit_mean", "spill_mean", "violation_mean"} <= set(metrics["dqn"])
    with (project / "logs/eval_episodes.csv").open() as file:
        policies = [row["policy"] for row in csv.DictReader(file)]
    assert policies == [name for name in ["dqn", *BASELINES[env_name]] for _ in range(3)]
    rows = _log_without_timing(project / "logs/train_log.csv")
    assert [int(row["frames"]) for row in rows] == list(range(40, 801, 40))
    assert float(rows[-1]["train/epsilon"]) == pytest.approx(0.02)
    assert rows[9]["eval/return_mean"] and not rows[8]["eval/return_mean"]  # evaluated every 400 frames
    assert sorted(p.name for p in (project / "checkpoints").iterdir()) == [
        "checkpoint-000000000400.torchrl",
        "checkpoint-000000000600.torchrl",
        "checkpoint-000000000800.torchrl",
    ]


def test_same_seed_gives_identical_metrics_andmodel_weights(project: Path, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        assert (
            train.main(
                [
                    "--set",
                    f"paths.checkpoints=ck_{name}",
                    "--set",
                    f"paths.train_log=log_{name}.csv",
                    "--set",
                    f"paths.model=model_{name}.pt",
                ]
            )
            == 0
        )
        runs.append((_log_without_timing(project / f"log_{name}.csv"), model_weights(project / f"model_{name}.pt")))
    (log_a, weights_a), (log_b, weights_b) = runs
    assert log_a == log_b
    assert all(torch.equal(weights_a[key], weights_b[key]) for key in weights_a)


def test_another_seed_gives_othermodel_weights(project: Path) -> None:
    assert train.main(["--set", "paths.model=a.pt", "--set", "paths.checkpoints=ck_a"]) == 0
    assert train.main(["--set", "seed=1", "--set", "paths.model=b.pt", "--set", "paths.checkpoints=ck_b"]) == 0
    a, b = model_weights(project / "a.pt"), model_weights(project / "b.pt")
    assert not all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize(("prioritized", "n_steps"), [(False, 1), (True, 1), (False, 3)])
def test_resume_is_exact(project: Path, prioritized: bool, n_steps: int) -> None:
    """N frames straight == N/2 frames, stop, resume to N: bit-identical weights and log."""
    extra = ["--set", f"dqn.prioritized={str(prioritized).lower()}", "--set", f"dqn.n_steps={n_steps}"]
    assert (
        train.main(
            [
                *extra,
                "--set",
                "paths.checkpoints=straight",
                "--set",
                "paths.model=straight.pt",
                "--set",
                "paths.train_log=straight.csv",
            ]
        )
        == 0
    )
    resumed = [
        *extra,
        "--set",
        "paths.checkpoints=resumed",
        "--set",
        "paths.model=resumed.pt",
        "--set",
        "paths.train_log=resumed.csv",
    ]
    assert train.main([*resumed, "--set", "train.total_frames=400"]) == 0
    assert train.main(resumed) == 0
    straight, again = model_weights(project / "straight.pt"), model_weights(project / "resumed.pt")
    assert all(torch.equal(straight[key], again[key]) for key in straight)
    assert _log_without_timing(project / "straight.csv") == _log_without_timing(project / "resumed.csv")
    summary = json.loads((project / "metrics/train.json").read_text())
    assert summary["resumed_from_frames"] == 400


def test_finished_run_is_not_trained_again(project: Path, capsys) -> None:
    assert train.main([]) == 0
    first = model_weights(project / "models/model.pt")
    assert train.main([]) == 0
    assert "resuming from" in capsys.readouterr().out
    assert json.loads((project / "metrics/train.json").read_text())["resumed_from_frames"] == 800
    again = model_weights(project / "models/model.pt")
    assert all(torch.equal(first[key], again[key]) for key in first)


def test_checkpoint_of_other_params_is_never_resumed(project: Path, capsys) -> None:
    assert train.main(["--set", "train.total_frames=400"]) == 0
    capsys.readouterr()
    assert train.main(["--set", "dqn.gamma=0.9"]) == 0
    out = capsys.readouterr().out
    assert "come from other parameters and are never resumed" in out and "resuming from" not in out
    assert json.loads((project / "metrics/train.json").read_text())["resumed_from_frames"] == 0


def test_divergence_stops_with_a_clear_message_and_writes_no_model(project: Path, capsys) -> None:
    status = train.main(["--set", "dqn.lr=1e30", "--set", "dqn.max_grad_norm=1e30", "--set", "dqn.loss=l2"])
    assert status == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # above it: the progress bar
    assert last.startswith("error: the loss became") and "at frame" in last
    assert not (project / "models/model.pt").exists()


def test_divergence_raises_in_the_loop(tiny_config, project: Path, monkeypatch) -> None:
    import reservoir_dqn.training as training

    real_update = training.update
    updates = []

    def poisoned_after_the_first_checkpoint(agent, batch):
        loss, grad_norm = real_update(agent, batch)
        updates.append(1)  # 2 updates per 40-frame batch from frame 80: the 9th comes after frame 200
        return (loss * float("nan") if len(updates) > 8 else loss), grad_norm

    monkeypatch.setattr(training, "update", poisoned_after_the_first_checkpoint)
    with pytest.raises(TrainingDiverged, match="at frame 240"):
        train_loop(tiny_config, project / "ck", project / "log.csv")
    kept = sorted(path.name for path in (project / "ck").glob("checkpoint-*"))
    assert kept == ["checkpoint-000000000200.torchrl"]  # the last good one, nothing after it
    verify_archive(project / "ck" / kept[0])


def test_segment_seeds_stay_in_the_training_range() -> None:
    seeds = {segment_seed(seed, segment, 64) for seed in range(20) for segment in range(50)}
    assert len(seeds) == 1000 and max(seeds) + 64 < 1_000_000_000


def test_evaluation_is_deterministic_and_uses_the_model(project: Path) -> None:
    write_params(project / "params.yaml")
    assert train.main([]) == 0
    assert evaluate.main([]) == 0
    first = (project / "metrics/eval.json").read_text()
    assert evaluate.main([]) == 0
    assert (project / "metrics/eval.json").read_text() == first
    assert load_config(project / "params.yaml").evaluate.episodes == json.loads(first)["episodes"]
