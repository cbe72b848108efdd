"""bench/morl_peer.py's tables from hand-made results: the peer beside each of our sweeps, and ``--rescore``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import bench.common
import bench.morl_peer


def _scores(expected: float, maximum: float, hypervolume: float) -> dict:
    def entry(value: float) -> dict:
        return {"mean": value, "ci_low": value - 1.0 if value > 1 else value - 0.01, "ci_high": value + 0.5,
                "iqm": value, "per_seed": [value] * 3}  # fmt: skip

    return {"expected_utility_loss": entry(expected), "maximum_utility_loss": entry(maximum),
            "hypervolume_ratio": entry(hypervolume), "members": 5}  # fmt: skip


def _sweep(frames: int, date: str, expected: float) -> dict:
    return {"frames": frames, "machine": {"date": date}, "sets": _scores(expected, 2 * expected, 0.8)}


def _peer() -> dict:
    row = {"lam": 0.5, "energy": "197.9 [196.5, 199.4]", "deficit": "1.49 [0.00, 3.08]", "spill": "61.2 [51.4, 71.1]",
           "own_loss_share": "0.0397 [0.0325, 0.0469]", "points": []}  # fmt: skip
    return {
        "machine": {"date": "2026-12-07 05:32"}, "frames": 100_000, "seeds": 3, "train_s": [600.0, 610.0, 620.0],
        "front": {"vertices": 37, "certificate_share": 7.9e-5}, "configured_utility": 2017.0, "lams": [row],
        "sets": _scores(68.3, 139.2, 0.786), "dense_sets": _scores(65.0, 116.3, 0.820), "ours": "stale",
    }  # fmt: skip


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A results folder with the peer's stored results and our two sweeps, hand-made."""
    (tmp_path / "morl_peer.json").write_text(json.dumps(_peer()))
    (tmp_path / "front_sweep.json").write_text(json.dumps(_sweep(100_000, "2026-12-07 03:13", 32.9)))
    (tmp_path / "front_sweep_20000.json").write_text(json.dumps(_sweep(20_000, "2026-12-07 22:46", 66.5)))
    monkeypatch.setattr(bench.morl_peer, "RESULTS", tmp_path)
    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)
    return tmp_path


def test_rescore_sets_the_stored_peer_beside_each_sweep_without_training(
    results: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["morl_peer", "--rescore"])
    monkeypatch.setattr(bench.morl_peer, "train_and_place", None)  # called, it would fail: nothing is trained
    bench.morl_peer.main()
    stored = json.loads((results / "morl_peer.json").read_text())
    assert [(sweep["matches"], sweep["frames"]) for sweep in stored["ours"]] == [
        ("same updates", 100_000),
        ("same frames", 20_000),
    ]
    assert stored["sets"] == _peer()["sets"] and stored["train_s"] == _peer()["train_s"]  # the peer's, untouched
    page = (results / "morl_peer.md").read_text()
    assert page in capsys.readouterr().out  # printed as written

    def cells(start: str) -> list[str]:
        line = next(line for line in page.splitlines() if line.startswith(start))
        return [cell.strip() for cell in line.strip("|").split("|")]

    assert len(cells("| score |")) == 5  # the score; our two sweeps; the peer at 5 and at 21 weightings
    assert [cell.split(" [")[0] for cell in cells("| expected utility loss")[1:]] == ["32.9", "66.5", "68.3", "65.0"]
    # Each budget said in full: frames and updates of a set, against the peer's.
    assert "a set's 5 agents collect 100,000 frames and make 20,000 updates (0.2 a frame)" in page
    assert "a set's 5 agents collect 500,000 frames and make 100,000 updates (0.2 a frame)" in page


def test_a_missing_sweep_is_named(results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (results / "front_sweep_20000.json").unlink()
    monkeypatch.setattr(sys, "argv", ["morl_peer", "--rescore"])
    with pytest.raises(FileNotFoundError, match=r"front_sweep_20000\.json"):
        bench.morl_peer.main()
    assert json.loads((results / "morl_peer.json").read_text())["ours"] == "stale"  # nothing written
