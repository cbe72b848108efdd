"""The champion moves only on evidence, and only to committed work: hand-made metrics, a real MLflow store.

Each test builds a git repository holding hand-made ``metrics/train.json`` and
``metrics/eval.json`` (the committed eval.json's layout, with chosen per-seed scores) and
registers hand-made model versions in a real SQLite MLflow store; no training runs.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from reservoir_dqn.commands import promote
from reservoir_dqn.commands.exits import Exit
from reservoir_dqn.tracking.champion import CHAMPION, HISTORY_TAG, STATUS_TAG, Evidence, decide, record_candidate
from tests.conftest import REPO, training_json, write_params

NAME = "reservoir-dqn-reservoir"
BUDGET = (800, 5)
HOLDER = [0.951, 0.962, 0.948, 0.957, 0.966]  # per-seed scores of the champion's run
SEED_ONLY = [0.958, 0.949, 0.963, 0.952, 0.960]  # the same configuration, another master seed
TINY_RISE = [score + 0.0004 for score in HOLDER]
REAL_RISE = [score + 0.03 for score in HOLDER]


def _evidence(version: str, scores: list[float], conditions: str = "c1", budget: tuple[int, int] = BUDGET) -> Evidence:
    return Evidence(version, tuple(scores), conditions, *budget)


@pytest.mark.parametrize(
    ("scores", "moves"),
    [(SEED_ONLY, False), (TINY_RISE, False), (REAL_RISE, True), ([s - 0.03 for s in HOLDER], False)],
    ids=["seed-only change", "+0.0004", "+0.03", "-0.03"],
)
def test_the_alias_moves_only_on_a_significant_improvement(scores: list[float], moves: bool) -> None:
    decision = decide(_evidence("2", scores), _evidence("1", HOLDER), BUDGET, 0.05)
    assert decision.move is moves, decision.reason
    assert decision.reason.startswith("version 2 is the new champion" if moves else "version 2 stays a candidate")


def test_other_conditions_too_few_seeds_or_another_budget_never_move_it() -> None:
    holder = _evidence("1", HOLDER)
    other = decide(_evidence("2", REAL_RISE, conditions="c2"), holder, BUDGET, 0.05)
    assert not other.move and not other.comparable and "other conditions" in other.reason
    few = decide(_evidence("2", REAL_RISE[:1]), holder, BUDGET, 0.05)
    assert not few.move and not few.comparable and "at least 2" in few.reason
    smoke = decide(_evidence("2", REAL_RISE, budget=(400, 5)), holder, BUDGET, 0.05)
    assert not smoke.move and smoke.comparable and "champion budget" in smoke.reason
    assert decide(_evidence("2", REAL_RISE), None, BUDGET, 0.05).move  # the first champion


def _eval_json(scores: list[float], conditions_change: dict | None = None) -> dict:
    data = json.loads((REPO / "metrics/eval.json").read_text())
    data = copy.deepcopy(data)
    data["seeds"] = len(scores)
    data["shipped"] = {"agent": 0, "network": "final"}
    data["dqn"]["final"]["score"] = {"per_seed": scores, "mean": sum(scores) / len(scores), "iqm": 0.0}
    data["dqn"]["final"]["score"] |= {"ci_low": None, "ci_high": None}
    data["conditions"] = {**data["conditions"], **(conditions_change or {})}
    return data


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


class Registry:
    """A real SQLite store with hand-made runs and versions, and a committed project pointing at one of them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
        self.experiment = self.client.create_experiment("reservoir-dqn/reservoir", artifact_location=root.as_uri())
        self.client.create_registered_model(NAME)
        write_params(
            root / "params.yaml",
            **{
                "tracking.enabled": True,
                "tracking.champion_budget.reservoir.total_frames": BUDGET[0],
                "tracking.champion_budget.reservoir.seeds": BUDGET[1],
            },
        )
        (root / "metrics").mkdir()
        _git(root, "init", "-q", "-b", "main")

    def version(self, scores: list[float], conditions_change: dict | None = None) -> tuple[str, str]:
        """A run with a registered version that recorded ``scores`` (as evaluate does); (run id, version)."""
        run = self.client.create_run(self.experiment)
        version = self.client.create_model_version(NAME, source=self.root.as_uri(), run_id=run.info.run_id).version
        for key, value in {"total_frames": BUDGET[0], "seeds": BUDGET[1]}.items():
            self.client.set_model_version_tag(NAME, str(version), key, str(value))
        self.client.set_tag(run.info.run_id, "model_version", str(version))
        conditions = _eval_json(scores, conditions_change)["conditions"]
        record_candidate(self.client, NAME, str(version), scores, conditions)
        return run.info.run_id, str(version)

    def commit(self, run_id: str, scores: list[float], conditions_change: dict | None = None) -> None:
        """Commit the results of ``run_id`` as the workspace's metrics (what `dvc exp apply` + commit does)."""
        train = training_json(run_ids={"parent": run_id})
        (self.root / "metrics/train.json").write_text(json.dumps(train))
        (self.root / "metrics/eval.json").write_text(json.dumps(_eval_json(scores, conditions_change)))
        _git(self.root, "add", "params.yaml", "metrics")
        _git(self.root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results")

    def holder(self) -> str:
        return str(self.client.get_model_version_by_alias(NAME, CHAMPION).version)


@pytest.fixture
def registry(project: Path) -> Registry:
    return Registry(project)


def _promote(capsys, *args: str) -> tuple[int, str]:
    status = promote.main(list(args))
    captured = capsys.readouterr()
    return status, (captured.out + captured.err).strip().splitlines()[-1]


@pytest.mark.slow
def test_promote_moves_on_evidence_only_and_never_to_an_unapplied_experiment(registry: Registry, capsys) -> None:
    first_run, first = registry.version(HOLDER)
    registry.commit(first_run, HOLDER)
    assert _promote(capsys) == (Exit.OK, f"{NAME}: version {first} is the first champion (score 0.9568)")

    for scores in (SEED_ONLY, TINY_RISE):  # committed, but not significantly better
        run_id, version = registry.version(scores)
        registry.commit(run_id, scores)
        status, line = _promote(capsys)
        assert status == Exit.OK and f"version {version} stays a candidate: not significantly better" in line, line
        assert registry.holder() == first

    queued_run, queued = registry.version(REAL_RISE)  # a queued experiment's: evaluated, never applied
    assert registry.client.get_model_version(NAME, queued).tags[STATUS_TAG] == "candidate"
    status, line = _promote(capsys)  # the commit still holds the +0.0004 run
    assert registry.holder() == first

    registry.commit(queued_run, REAL_RISE)  # applied and committed: now it is work somebody kept
    status, line = _promote(capsys)
    assert status == Exit.OK and f"version {queued} is the new champion: significantly better" in line, line
    assert registry.holder() == queued

    model = registry.client.get_registered_model(NAME)
    history = json.loads(model.tags[HISTORY_TAG])
    assert [(entry["from"], entry["to"]) for entry in history] == [("-", first), (first, queued)]
    assert f"'champion' {first} -> {queued}" in model.description

    status, line = _promote(capsys, "--back")
    assert status == Exit.OK and f"'champion' {queued} -> {first} (moved back from version {queued}" in line, line
    assert registry.holder() == first


@pytest.mark.slow
def test_promote_refuses_uncommitted_results_and_other_conditions(registry: Registry, capsys) -> None:
    first_run, _ = registry.version(HOLDER)
    registry.commit(first_run, HOLDER)
    assert _promote(capsys)[0] == Exit.OK
    (registry.root / "metrics/eval.json").write_text("{}")
    status, line = _promote(capsys)
    assert status == Exit.BAD_INPUT and line.startswith("error: metrics/eval.json differs from the last commit"), line

    changed = {"evaluate.episodes": 7}
    run_id, version = registry.version(REAL_RISE, changed)
    registry.commit(run_id, REAL_RISE, changed)
    status, line = _promote(capsys)
    assert status == Exit.CANNOT_JUDGE and "evaluated under other conditions" in line, line
    status, line = _promote(capsys, "--force")
    assert status == Exit.OK and registry.holder() == version and "forced" in line, line
