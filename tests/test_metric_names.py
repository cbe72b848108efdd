"""Every metric is named once: renaming it in its declaration renames it everywhere, and the committed files follow."""

from __future__ import annotations

import json

import pytest
import yaml

from reservoir_dqn.commands.plot import CURVES, dvc_plots
from reservoir_dqn.evaluation import metric_names
from reservoir_dqn.evaluation.metric_names import TRAIN_MINUTES, stat_name
from reservoir_dqn.evaluation.report import tracked_metrics
from reservoir_dqn.evaluation.results import Evaluation
from reservoir_dqn.tracking.hparams import metric_tag
from reservoir_dqn.tracking.views import experiment_tags, key_metrics
from tests.conftest import REPO, evaluation_json


def test_dvc_yaml_plots_are_the_declared_curves() -> None:
    """dvc.yaml's plots, the figure's panels and the training log's CSV columns come from one declaration."""
    assert yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"] == dvc_plots()
    for curve in CURVES:
        assert curve.field in curve.group.fields, f"{curve.title}: {curve.group.name} has no field {curve.field!r}"


def test_a_renamed_statistic_is_renamed_in_the_metrics_files_mlflow_and_tensorboard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(metric_names.STATISTICS, "ci_low", "_low")
    evaluation = Evaluation.from_json(json.loads(json.dumps(evaluation_json([0.97, 0.98, 0.975]))))
    assert "score_low" in evaluation.headline_metrics() and "score_lo" not in evaluation.headline_metrics()  # DVC
    assert "score_low" in tracked_metrics(evaluation, 1.0)  # the parent MLflow run
    assert "score_low" in key_metrics(evaluation.headline)  # MLflow's saved view
    assert "score_low" in experiment_tags("1", evaluation.headline)["mlflow.note.content"]
    assert metric_tag("reservoir", "score", "ci_low") == "reservoir/test/score_low"  # TensorBoard


def test_the_committed_summary_json_holds_the_declared_names() -> None:
    """metrics/summary.json (what DVC shows) has exactly the names the declaration gives the committed evaluation."""
    evaluation = Evaluation.from_json(json.loads((REPO / "metrics/eval.json").read_text()))
    summary = json.loads((REPO / "metrics/summary.json").read_text())
    assert set(summary) == {*evaluation.headline_metrics(), TRAIN_MINUTES}
    assert summary[stat_name("score", "ci_low")] == evaluation.metric("score").ci_low
