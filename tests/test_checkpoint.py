"""Checkpoints: atomic, verified, never executing code, falling back past damaged ones."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from reservoir_dqn.agent import NetworkSpec, load_model, make_q_network, save_model, stacked_mlp
from reservoir_dqn.commands import train
from reservoir_dqn.commands.exits import Exit
from reservoir_dqn.common.errors import ModelFileError
from reservoir_dqn.training.checkpoints import CorruptCheckpoint, verify_archive
from tests.conftest import model_weights, training_json


class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _checkpoints(project: Path) -> list[Path]:
    return sorted((project / "checkpoints").glob("checkpoint-*.torchrl"))


def test_checkpoint_archive_holds_only_json_and_memory_maps(project: Path) -> None:
    assert train.main(["--set", "dqn.prioritized=true"]) == 0
    newest = _checkpoints(project)[-1]
    verify_archive(newest)
    names = zipfile.ZipFile(newest).namelist()
    components = {name.split("/")[1].split("-", 1)[1] for name in names if name.startswith("components/")}
    assert components == {
        "averaged",
        "best",
        "exploration",
        "loss",
        "optimizer",
        "progress",
        "replay_buffer",
        "rng",
        "rollout",
        "stopped",
        "streams",
        "target_updater",
        "writer",
    }
    assert all(name.endswith((".json", ".memmap")) for name in names)


def test_buffer_is_left_out_when_switched_off(project: Path) -> None:
    assert train.main(["--set", "train.checkpoint_buffer=never"]) == 0
    names = zipfile.ZipFile(_checkpoints(project)[-1]).namelist()
    assert not any("replay_buffer" in name for name in names)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(project: Path, capsys, damage: str) -> None:
    assert train.main(["--set", "paths.agents=straight", "--set", "paths.checkpoints=straight"]) == 0
    assert train.main(["--set", "train.total_frames=600"]) == 0
    newest = _checkpoints(project)[-1]
    assert newest.name.endswith("600.torchrl")
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    else:
        middle = len(data) // 2
        newest.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    capsys.readouterr()
    assert train.main([]) == 0
    out = capsys.readouterr().out
    assert "unusable checkpoint" in out and "resuming from" in out and "400.torchrl" in out
    assert (project / "checkpoints" / (newest.name + ".corrupt")).exists()
    straight, recovered = (
        model_weights(project / "straight/final.pt"),
        model_weights(project / "models/agents/final.pt"),
    )
    assert all(torch.equal(straight[key], recovered[key]) for key in straight)


@pytest.mark.slow
def test_checkpoint_with_a_pickle_is_refused_without_running_it(project: Path, tmp_path: Path, capsys) -> None:
    assert train.main(["--set", "train.total_frames=400"]) == 0
    newest = _checkpoints(project)[-1]
    marker = tmp_path / "pwned"
    with zipfile.ZipFile(newest, "a") as archive:
        buffer_dir = next(n for n in archive.namelist() if "replay_buffer" in n).split("/")[:2]
        archive.writestr("/".join([*buffer_dir, "prefetch.pkl"]), pickle.dumps(_Payload(marker)))
    with pytest.raises(CorruptCheckpoint, match=r"prefetch\.pkl' is neither JSON nor a tensor memory map"):
        verify_archive(newest)
    capsys.readouterr()
    assert train.main([]) == 0
    assert "unusable checkpoint" in capsys.readouterr().out
    assert not marker.exists()


def test_archive_member_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint-000000000001.torchrl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("../escape.json", "{}")
    with pytest.raises(CorruptCheckpoint, match="outside the archive"):
        verify_archive(path)


@pytest.mark.slow
def test_interrupted_checkpoint_write_leaves_no_partial_file(project: Path, monkeypatch) -> None:
    import torchrl.checkpoint._checkpoint as torchrl_checkpoint

    assert train.main(["--set", "train.total_frames=400"]) == 0
    before = _checkpoints(project)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torchrl_checkpoint.zipfile.ZipFile, "write", crash)
    assert train.main([]) == Exit.FAILED  # one line, "error: ... disk full", no traceback
    assert _checkpoints(project) == before
    assert not [p for p in (project / "checkpoints").iterdir() if p.name.startswith(".")]


def test_model_round_trip(tmp_path: Path) -> None:
    spec = NetworkSpec(obs_dim=4, num_actions=3, hidden_sizes=(16, 8), env_name="CartPole-v1", agents=2)
    network = make_q_network(spec, seeds=[1, 2])
    save_model(network, spec, tmp_path / "model.pt")
    loaded, loaded_spec = load_model(tmp_path / "model.pt")
    assert loaded_spec == spec
    observation = torch.randn(10, 4)
    from tensordict import TensorDict

    a = network(TensorDict(observation=observation, batch_size=[10]))
    b = loaded(TensorDict(observation=observation, batch_size=[10]))
    assert torch.equal(a["action_value"], b["action_value"]) and torch.equal(a["action"], b["action"])


@pytest.mark.parametrize("head", ["plain", "dueling"])
def test_the_head_survives_the_model_file(tmp_path: Path, head: str) -> None:
    spec = NetworkSpec(obs_dim=4, num_actions=3, hidden_sizes=(16,), env_name="reservoir", agents=2, head=head)
    network = make_q_network(spec, seeds=[1, 2])
    save_model(network, spec, tmp_path / "model.pt")
    loaded, loaded_spec = load_model(tmp_path / "model.pt")
    observation = torch.randn(10, 4)
    assert loaded_spec == spec and torch.equal(stacked_mlp(loaded)(observation), stacked_mlp(network)(observation))


def test_a_model_file_written_before_heads_were_named_loads_as_a_plain_network(tmp_path: Path) -> None:
    spec = NetworkSpec(obs_dim=4, num_actions=3, hidden_sizes=(16,), env_name="reservoir", agents=1)
    network = make_q_network(spec, seeds=[1])
    save_model(network, spec, tmp_path / "model.pt")
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    del payload["spec"]["head"]  # as the previous version wrote it
    torch.save(payload, tmp_path / "model.pt")
    loaded, loaded_spec = load_model(tmp_path / "model.pt")
    observation = torch.randn(5, 4)
    assert loaded_spec.head == "plain" and torch.equal(
        stacked_mlp(loaded)(observation), stacked_mlp(network)(observation)
    )
    payload["spec"]["head"] = "noisy"  # a head this version does not know: one line naming it
    torch.save(payload, tmp_path / "model.pt")
    with pytest.raises(ModelFileError, match="unknown Q-network head 'noisy'"):
        load_model(tmp_path / "model.pt")


def test_model_file_with_a_pickle_payload_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    buffer = io.BytesIO()
    torch.save({"format": "reservoir_dqn.model", "payload": _Payload(marker)}, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ModelFileError, match="refused to load model file"):
        load_model(path)
    assert not marker.exists()


def test_evaluate_refuses_a_tampered_model_with_exit_2(project: Path, tmp_path: Path, capsys) -> None:
    from reservoir_dqn.commands import evaluate

    marker = tmp_path / "pwned"
    (project / "models/agents").mkdir(parents=True)
    (project / "metrics").mkdir()
    (project / "metrics/train.json").write_text(json.dumps(training_json()))
    torch.save(_Payload(marker), project / "models/agents/final.pt")
    assert evaluate.main([]) == 2
    assert "refused to load model file" in capsys.readouterr().err
    assert not marker.exists()


def test_a_resume_without_the_saved_buffer_says_so_and_train_json_records_it(project: Path, capsys) -> None:
    assert train.main(["--set", "train.checkpoint_buffer=never", "--set", "train.total_frames=400"]) == 0
    capsys.readouterr()
    assert train.main(["--set", "train.checkpoint_buffer=never"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "without its replay buffer" in line]
    assert len(lines) == 1 and "not an exact resume" in lines[0]
    summary = json.loads((project / "metrics" / "train.json").read_text())
    assert summary["exact_resume"] is False and summary["resumed_without_buffer_at_frames"] == [400]


def test_a_resume_with_the_buffer_is_exact_in_train_json(project: Path) -> None:
    assert train.main(["--set", "train.total_frames=400"]) == 0
    assert train.main([]) == 0
    summary = json.loads((project / "metrics" / "train.json").read_text())
    assert summary["exact_resume"] is True and summary["resumed_from_frames"] == 400


@pytest.mark.slow
def test_a_checkpoint_without_a_key_is_foreign(project: Path, monkeypatch, capsys) -> None:
    from reservoir_dqn.training.checkpoints import Checkpointer

    keyed = Checkpointer.save

    def keyless(self, checkpoint, frames):
        return self._rotation.save(checkpoint, step=frames, metadata={})

    monkeypatch.setattr(Checkpointer, "save", keyless)
    assert train.main(["--set", "train.total_frames=400"]) == 0
    monkeypatch.setattr(Checkpointer, "save", keyed)
    capsys.readouterr()
    assert train.main([]) == 0
    out = capsys.readouterr().out
    assert "(or carry no key) and are never resumed" in out and "resuming from" not in out


def test_the_checkpoint_key_changes_with_a_training_librarys_version(monkeypatch) -> None:
    import importlib.metadata

    from reservoir_dqn.training.checkpoints import TRAINING_LIBRARIES, checkpoint_key

    assert {"torch", "torchrl", "tensordict"} <= set(TRAINING_LIBRARIES)
    before = checkpoint_key("params")
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0" if name == "torchrl" else real(name))
    assert checkpoint_key("params") != before
