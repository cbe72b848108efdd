"""The registered model: the export stage's checked ONNX file as a pyfunc, with a model card, served over HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from reservoir_dqn.commands import evaluate, export, train
from reservoir_dqn.config import load_config
from reservoir_dqn.release.card import Release
from reservoir_dqn.tracking import Tracking, registered_model_name
from reservoir_dqn.tracking.registry import ModelLogger
from tests.conftest import wait_for, write_params

FIELDS = ["storage_over_capacity", "sin_month", "cos_month", "months_left_over_horizon"]
RELEASES_HM3 = {0.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 120.0, 160.0, 200.0}  # the release levels x 10 hm3


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.mark.slow
def test_the_exported_policy_is_registered_with_its_card_and_served_over_http(project: Path) -> None:
    write_params(project / "params.yaml", **{"tracking.enabled": True, "tracking.tensorboard": False})
    assert train.main([]) == 0 and evaluate.main([]) == 0
    uri = f"sqlite:///{project / 'mlflow.db'}"
    client, name = MlflowClient(uri), registered_model_name("reservoir")
    assert not client.search_model_versions(f"name = '{name}'")  # registered once evaluated and exported
    assert export.main([]) == 0
    (version,) = client.search_model_versions(f"name = '{name}'")
    run_ids = json.loads((project / "metrics/train.json").read_text())["run_ids"]
    assert version.run_id == run_ids["parent"] and version.tags["seeds"] == "2"
    # The evidence `reservoir-dqn promote` weighs; only that command moves the alias.
    scores = json.loads((project / "metrics/eval.json").read_text())["dqn"]["final"]["score"]["per_seed"]
    assert json.loads(version.tags["seed_scores"]) == pytest.approx(scores, abs=1e-6)
    assert version.tags["champion_status"] == "candidate" and not client.get_registered_model(name).aliases
    # The model card: environment, budget, seeds, the score with its interval, the gap to the optimum, the code.
    card = version.description
    for line in ("| environment | `reservoir`", "| budget | 2 seeds x 800 frames each", "| score (0 random, 1 the SDP"):
        assert line in card, card
    assert "| regret |" in card and "| exact gap to the optimum |" in card and "| code | git commit" in card
    assert client.get_run(run_ids["parent"]).data.tags["model_version"] == str(version.version)
    # A registration kept in the outbox (the store was lost) waits through stages that cannot send it (evaluate,
    # plot: they attach without a model logger), and the run says so. The next export's attach (with the logger)
    # sends it, and one file is one version: it describes the same version again, as an export re-run does.
    outbox = project / ".mlflow-outbox" / f"{run_ids['parent']}.jsonl"
    release = Release(
        "reservoir",
        "models/policy.onnx",
        hashlib.sha256((project / "models/policy.onnx").read_bytes()).hexdigest(),
        "release_hm3",
        card,
        {field: 0.5 for field in FIELDS},
        scores,
        None,
    )
    outbox.parent.mkdir(exist_ok=True)
    outbox.write_text(json.dumps({"kind": "model", "path": release.onnx, "release": release.to_json()}) + "\n")
    client.set_tag(run_ids["parent"], "sync_status", "incomplete")
    config = load_config(project / "params.yaml")
    Tracking.connect(config).attach(run_ids)  # as evaluate and plot attach
    assert outbox.exists() and client.get_run(run_ids["parent"]).data.tags["sync_status"] == "incomplete"
    Tracking.connect(config).attach(run_ids, ModelLogger(register=True))  # as export attaches
    assert not outbox.exists() and client.get_run(run_ids["parent"]).data.tags["sync_status"] == "complete"
    assert [v.version for v in client.search_model_versions(f"name = '{name}'")] == [version.version]

    # Loaded where neither torch nor this package is imported: its signature in the observation's terms,
    # a real state as its input example (October, 60% full, the whole horizon ahead).
    environment = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    code = (
        "import json, sys, mlflow\n"
        f"model = mlflow.pyfunc.load_model('models:/{name}/{version.version}')\n"
        "example = model.input_example\n"
        "answer = model.predict(example)\n"
        "print(json.dumps({'inputs': model.metadata.get_input_schema().input_names(),\n"
        "    'outputs': model.metadata.get_output_schema().input_names(),\n"
        "    'example': example.to_dict('records'), 'answer': answer.to_dict('records'),\n"
        "    'heavy': sorted({'torch', 'reservoir_dqn'} & set(sys.modules))}))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, cwd="/")
    assert loaded.returncode == 0, loaded.stderr
    found = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert found["inputs"] == FIELDS and found["outputs"] == ["release_hm3", "q_values"] and found["heavy"] == []
    (example,) = found["example"]
    assert example == pytest.approx(
        {"storage_over_capacity": 0.6, "sin_month": -1.0, "cos_month": 0.0, "months_left_over_horizon": 1.0}, abs=1e-6
    )
    assert found["answer"][0]["release_hm3"] in RELEASES_HM3 and len(found["answer"][0]["q_values"]) == 11

    # `mlflow models serve` answers a real HTTP request with the release in hm3/month.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bin_dir = str(Path(sys.executable).parent)  # mlflow starts uvicorn from PATH, as the README's command sets it
    command = ["mlflow", "models", "serve", "-m", f"models:/{name}/{version.version}", "--env-manager", "local"]
    server = subprocess.Popen(
        [*command, "-h", "127.0.0.1", "-p", str(port)],
        env={**environment, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert wait_for(lambda: _answers(f"http://127.0.0.1:{port}/ping"), timeout=120, interval=0.5)
        states = [example, {**example, "storage_over_capacity": 0.1, "months_left_over_horizon": 0.5}]
        status, answer = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_records": states})
        assert status == 200, answer
        assert [row["release_hm3"] for row in answer["predictions"]][:1] == [found["answer"][0]["release_hm3"]]
        assert all(row["release_hm3"] in RELEASES_HM3 and len(row["q_values"]) == 11 for row in answer["predictions"])
        status, refusal = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_records": [{"cos_month": 1.0}]})
        assert status == 400 and "missing inputs" in refusal["message"]
        not_finite = {**example, "storage_over_capacity": float("nan")}  # JSON's NaN, as Python and MLflow read it
        status, refusal = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_records": [example, not_finite]})
        assert status == 400 and "observations hold NaN or infinite values (rows [1])" in refusal["message"], refusal
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
