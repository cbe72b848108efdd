"""The first hour on a fresh clone, as a user follows the README: `make run`, `promote`, then the champion served
and loaded, with nothing committed in between.

The repository is a user's fresh ``git clone`` after `make run` (tiny budget) and nothing more
(:func:`tests.dvc_repo.baseline_repo`): its results carry new MLflow run ids and times, so they
differ from what main holds, and ``promote`` must accept them as what they are, the pipeline's
outputs of the commit's code and params. The commands are the README's, the port aside (another
test serves the README's own).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from reservoir_dqn.commands.dvc_files import Pipeline
from reservoir_dqn.commands.exits import Exit
from reservoir_dqn.commands.promote import REPRODUCED
from reservoir_dqn.config import flatten, read_params
from reservoir_dqn.tracking.champion import HISTORY_TAG
from tests.conftest import wait_for
from tests.dvc_repo import baseline_repo, clean_env, clone_repo, run
from tests.servers import free_port, serves

pytestmark = pytest.mark.slow

MODEL = "reservoir-dqn-reservoir"
PROMOTE = ".venv/bin/reservoir-dqn promote"
SERVE = (
    'PATH="$PWD/.venv/bin:$PATH" MLFLOW_TRACKING_URI=sqlite:///mlflow.db mlflow models serve '
    f"-m models:/{MODEL}@champion --env-manager local -h 127.0.0.1 -p {{port}}"
)
STATE = {"storage_over_capacity": 0.6, "sin_month": -1.0, "cos_month": 0.0, "months_left_over_horizon": 1.0}
ASK = "curl -s http://127.0.0.1:{port}/invocations -H 'Content-Type: application/json' -d '{body}'"
LOAD = f"""
import mlflow, pandas
mlflow.set_tracking_uri("sqlite:///mlflow.db")
policy = mlflow.pyfunc.load_model("models:/{MODEL}@champion")
print(policy.predict(pandas.DataFrame([{STATE!r}])))
"""
RELEASES = {0, 20, 30, 40, 50, 60, 80, 100, 120, 160, 200}  # hm3/month, the reservoir's 11 actions


@pytest.fixture
def repo(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    return clone_repo(baseline_repo(tmp_path_factory), tmp_path / "repo")


def sh(repo: Path, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(repo, "bash", "-c", command, check=check, env=clean_env(repo))


def test_make_run_leaves_only_the_pipelines_own_outputs_changed(repo: Path) -> None:
    """What `make run` changes in a fresh clone is its outputs (new run ids and times), exactly as dvc.lock records."""
    status = run(repo, "git", "status", "--porcelain", "--untracked-files=all").stdout.splitlines()
    pipeline = Pipeline.read(repo, flatten(read_params(repo / "params.yaml")))
    assert status, "a fresh clone's results were expected to differ from main's (run ids, times)"
    assert all(pipeline.writes(line[3:]) for line in status), status
    assert "up to date" in run(repo, ".venv/bin/dvc", "status").stdout


def test_after_make_run_promote_makes_the_first_champion_which_loads_and_serves(repo: Path) -> None:
    promoted = sh(repo, PROMOTE)
    assert f"{MODEL}: version 1 is the first champion" in promoted.stdout, promoted.stdout
    history = json.loads(MlflowClient(f"sqlite:///{repo / 'mlflow.db'}").get_registered_model(MODEL).tags[HISTORY_TAG])
    head = run(repo, "git", "rev-parse", "HEAD").stdout.strip()
    assert [(entry["to"], entry["commit"]) for entry in history] == [("1", head)]
    assert REPRODUCED in history[0]["verdict"]  # the alias's history says the results were not committed

    loaded = subprocess.run([".venv/bin/python", "-c", LOAD], cwd=repo, env=clean_env(repo), capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "release_hm3" in loaded.stdout and "q_values" in loaded.stdout, loaded.stdout

    port = free_port()
    server = subprocess.Popen(["bash", "-c", SERVE.format(port=port)], cwd=repo, env=clean_env(repo),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)  # fmt: skip
    try:
        assert wait_for(lambda: server.poll() is None and serves(f"http://127.0.0.1:{port}/ping"), 120, 0.5)
        body = json.dumps({"dataframe_records": [STATE]})
        (answer,) = json.loads(sh(repo, ASK.format(port=port, body=body)).stdout)["predictions"]
        assert answer["release_hm3"] in RELEASES and len(answer["q_values"]) == len(RELEASES)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def test_promote_still_refuses_changed_params_or_outputs_dvc_lock_does_not_record(repo: Path) -> None:
    params = repo / "params.yaml"
    committed = params.read_text()
    params.write_text(committed.replace("gamma: 0.995", "gamma: 0.95", 1))
    refused = sh(repo, PROMOTE, check=False)
    assert refused.returncode == Exit.BAD_INPUT, refused.stderr
    assert refused.stderr.strip() == (
        "error: params.yaml differs from the last commit: promote runs on committed code and params "
        "(commit them, or `git checkout` them)"
    )
    params.write_text(committed)
    summary = repo / "metrics/summary.json"
    summary.write_text(summary.read_text().replace('"score"', '"score" ', 1))  # not what evaluate wrote
    refused = sh(repo, PROMOTE, check=False)
    assert refused.returncode == Exit.BAD_INPUT, refused.stderr
    assert refused.stderr.strip().startswith("error: the outputs of evaluate are not what dvc.lock records")
