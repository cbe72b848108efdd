"""The registered model: the export stage's checked ONNX file as a pyfunc, with a model card, served over HTTP."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.model import PythonModelContext

from reservoir_dqn.agent import NetworkSpec, make_q_network
from reservoir_dqn.commands import evaluate, export, train
from reservoir_dqn.config import load_config
from reservoir_dqn.envs import profile
from reservoir_dqn.release.card import Release
from reservoir_dqn.release.export import bounds_metadata
from reservoir_dqn.release.export import export as onnx_export
from reservoir_dqn.release.policy import OperatorPolicy
from reservoir_dqn.tracking import Tracking, registered_model_name
from reservoir_dqn.tracking.registry import ModelLogger
from reservoir_dqn.tracking.served_policy import ARTIFACT, OnnxPolicy
from tests.conftest import REPO, wait_for, write_params
from tests.servers import free_port, serves

FIELDS = ["storage_over_capacity", "sin_month", "cos_month", "months_left_over_horizon"]
RELEASES_HM3 = {0.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 120.0, 160.0, 200.0}  # the release levels x 10 hm3


def _served(folder: Path, env: str, fields: list[str], bounds: str | None) -> OnnxPolicy:
    """A random network of ``env``'s observation size exported as the export stage does, loaded as the pyfunc."""
    section = [] if env == "reservoir" else ["env.section=gym"]
    config = load_config(REPO / "params.yaml", [f"env.name={env}", *section])
    spec = NetworkSpec(len(fields), 2, (8,), env)
    values = profile(config.env).action_meaning(config.env, spec.num_actions)[1]
    metadata = {"observation": json.dumps(fields)} | ({} if bounds is None else {"observation_bounds": bounds})
    onnx_export(OperatorPolicy(make_q_network(spec, seeds=[0]), values), folder / "policy.onnx", "action", metadata)
    served = OnnxPolicy()
    served.load_context(PythonModelContext(artifacts={ARTIFACT: str(folder / "policy.onnx")}, model_config={}))
    return served


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


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
    port = free_port()
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
        assert wait_for(lambda: serves(f"http://127.0.0.1:{port}/ping"), timeout=120, interval=0.5)
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
        overfull = {**example, "storage_over_capacity": 7.5}  # above capacity, as `reservoir-dqn advise` refuses
        status, refusal = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_records": [example, overfull]})
        assert status == 400, refusal
        assert "storage_over_capacity = 7.5 is outside [0, 1] (rows [1])" in refusal["message"], refusal
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_served_model_refuses_an_observation_outside_the_space_naming_field_and_bounds(tmp_path: Path) -> None:
    config = load_config(REPO / "params.yaml").env
    bounds = profile(config).observation_bounds(config, len(FIELDS))
    served = _served(tmp_path, "reservoir", FIELDS, bounds_metadata(bounds))
    inside = {"storage_over_capacity": 1.0, "sin_month": -1.0, "cos_month": 0.0, "months_left_over_horizon": 0.0}
    assert len(served.predict(None, pd.DataFrame([inside]))) == 1  # the bounds themselves are inside
    rows = [inside, {**inside, "storage_over_capacity": 7.5}, {**inside, "cos_month": -1.5}, {**inside, "sin_month": 2}]
    with pytest.raises(MlflowException) as refused:
        served.predict(None, pd.DataFrame(rows))
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"  # HTTP 400 when served
    assert refused.value.message == (
        "observations outside the observation space: storage_over_capacity = 7.5 is outside [0, 1] (rows [1]); "
        "sin_month = 2 is outside [-1, 1] (rows [3]); cos_month = -1.5 is outside [-1, 1] (rows [2])"
    )


def test_a_model_exported_before_the_bounds_is_served_without_the_bounds_check(tmp_path: Path) -> None:
    served = _served(tmp_path, "reservoir", FIELDS, bounds=None)
    overfull = {"storage_over_capacity": 7.5, "sin_month": -1.0, "cos_month": 0.0, "months_left_over_horizon": 1.0}
    assert len(served.predict(None, pd.DataFrame([overfull]))) == 1


def test_a_gymnasium_ids_bounds_are_its_box_and_an_infinite_bound_checks_only_finiteness(tmp_path: Path) -> None:
    config = load_config(REPO / "params.yaml", ["env.name=CartPole-v1", "env.section=gym"]).env
    fields = [f"observation_{index}" for index in range(4)]
    bounds = profile(config).observation_bounds(config, len(fields))
    flat = [bound for pair in bounds for bound in pair]
    assert flat == pytest.approx([-4.8, 4.8, -math.inf, math.inf, -0.418879, 0.418879, -math.inf, math.inf])
    served = _served(tmp_path, "CartPole-v1", fields, bounds_metadata(bounds))
    fast = {"observation_0": 4.8, "observation_1": 1e30, "observation_2": 0.0, "observation_3": -1e30}
    assert len(served.predict(None, pd.DataFrame([fast]))) == 1
    with pytest.raises(MlflowException, match=r"observation_0 = -5 is outside \[-4.8, 4.8\] \(rows \[0\]\)$"):
        served.predict(None, pd.DataFrame([{**fast, "observation_0": -5.0}]))
    with pytest.raises(MlflowException, match=r"NaN or infinite values \(rows \[0\]\)"):
        served.predict(None, pd.DataFrame([{**fast, "observation_1": math.inf}]))
