"""Files written by an earlier version keep loading: model files, checkpoints and the metrics files.

The fixtures in ``tests/data/main-e386409/`` were written by main at e386409, before the
package was reorganised by concern: a shipped model file, a file of two stacked agents, a
checkpoint of a two-agent reservoir run at frame 1,000 (``expected.json`` holds the
overrides of that run), its ``train.json``, and the default pipeline's ``metrics/*.json``.
``expected.json`` also holds what that version computed from them on fixed observations.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torchrl.checkpoint import Checkpoint

import reservoir_dqn.training.session as session_module
from reservoir_dqn.agent import load_model, stacked_mlp
from reservoir_dqn.config import load_config
from reservoir_dqn.evaluation.results import Evaluation
from reservoir_dqn.training.checkpoints import CONFIG_HASH_KEY
from reservoir_dqn.training.loop import train
from reservoir_dqn.training.summary import Training
from tests.conftest import REPO

OLD = REPO / "tests/data/main-e386409"
EXPECTED = json.loads((OLD / "expected.json").read_text())
CHECKPOINT = "checkpoint-000000001000.torchrl"


@pytest.mark.parametrize("name", ["model.pt", "final.pt"])
def test_a_model_file_of_the_previous_layout_loads_with_its_keys_and_computes_the_same(name: str) -> None:
    q_network, spec = load_model(OLD / name)
    expected = EXPECTED[name]
    assert spec.as_dict() == expected["spec"]
    assert sorted(q_network.state_dict()) == expected["keys"]
    observations = torch.tensor(expected["observations"])
    torch.testing.assert_close(stacked_mlp(q_network)(observations), torch.tensor(expected["q_values"]))


def test_the_metrics_files_of_the_previous_layout_load() -> None:
    evaluation = Evaluation.from_json(json.loads((OLD / "eval.json").read_text()))
    assert evaluation.env == "reservoir" and evaluation.seeds == 5 and evaluation.held_out is None
    summary = json.loads((OLD / "summary.json").read_text())
    assert summary["score"] == pytest.approx(evaluation.metric("score").mean, abs=5e-5)
    for train_json in ("train.json", "fixture-train.json"):
        trained = Training.from_json(json.loads((OLD / train_json).read_text()))
        assert trained.seeds == len(trained.agents) and trained.shipped_network in ("final", "best")


@pytest.mark.slow
def test_a_checkpoint_of_the_previous_layout_restores_exactly_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive and every component's state load as that version wrote them.

    A checkpoint of other code is never resumed by design (its key names the code: resuming would ship a model
    this code never computed), so the key is the one thing taken from the file here.
    """
    old = EXPECTED["checkpoint"]
    config = load_config(REPO / "params.yaml", old["overrides"])
    key = Checkpoint.manifest(OLD / CHECKPOINT)["metadata"][CONFIG_HASH_KEY]
    monkeypatch.setattr(session_module, "checkpoint_key", lambda training_hash: key)
    shutil.copy(OLD / CHECKPOINT, tmp_path)
    session = session_module.start(config, tmp_path)
    assert session.progress.frames == old["frames"] == 1000
    observations = torch.tensor(EXPECTED["final.pt"]["observations"]).repeat(2, 1)
    online = stacked_mlp(session.agent.q_network)(observations)
    averaged = stacked_mlp(session.agent.averaged_network)(observations)
    torch.testing.assert_close(online, torch.tensor(old["q_values_online"]))
    torch.testing.assert_close(averaged, torch.tensor(old["q_values_averaged"]))
    result = train(session)
    assert result.summary.frames == config.train.total_frames
