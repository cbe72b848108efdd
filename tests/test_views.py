"""What a reader takes in at a glance: the MLflow key-metrics view, TensorBoard's tags and HPARAMS tab, the figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib
import pytest
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

from reservoir_dqn.commands import plot
from reservoir_dqn.commands.exits import Exit
from reservoir_dqn.common.files import read_csv, read_json
from reservoir_dqn.common.metrics import Record
from reservoir_dqn.config import load_config
from reservoir_dqn.envs import PROFILES
from reservoir_dqn.envs.reservoir.figures import reservoir_figures
from reservoir_dqn.envs.reservoir.front_figure import front_figure
from reservoir_dqn.evaluation.report import tracked_metrics
from reservoir_dqn.evaluation.results import Evaluation
from reservoir_dqn.tracking.comparisons import MetricChange, comparison_metrics, comparison_tags, described
from reservoir_dqn.tracking.hparams import log_hparams, score_layout
from reservoir_dqn.tracking.sinks import MEAN_OVER_AGENTS, TensorBoardSink
from reservoir_dqn.tracking.views import (
    COMPARED_VIEW,
    FIXED_COLUMNS,
    KEY_VIEW,
    VIEW_TAG_PREFIX,
    compared_view_state,
    experiment_tags,
    header_width,
    key_metrics,
    key_view_state,
)
from reservoir_dqn.training.curves import PROGRESS, VALIDATION
from reservoir_dqn.training.summary import Training
from tests.conftest import REPO, write_params

matplotlib.use("Agg")

# The runs table's width in a 1600-pixel browser window with MLflow's side bar open (measured).
TABLE_PX = 1346
RESERVOIR = [metric.name for metric in PROFILES["reservoir"].headline]


def _committed_evaluation() -> Evaluation:
    return Evaluation.from_json(read_json(REPO / "metrics/eval.json"))


def test_the_key_view_orders_its_columns_by_meaning_and_shows_every_header_whole() -> None:
    view = json.loads(key_view_state(RESERVOIR))
    columns = [f"metrics.`{name}`" for name in key_metrics(RESERVOIR)] + ["tags.`budget`"]
    assert key_metrics(RESERVOIR) == [
        "score",
        "score_lo",
        "score_hi",
        "best_snapshot_score",
        "return",
        "reliability",
        "train_minutes",
    ]
    assert view["selectedColumns"] == columns and view["orderByKey"] == columns[0] and not view["orderByAsc"]
    assert view["columnOrder"] == [*FIXED_COLUMNS, *columns]  # MLflow sorts metric columns by name otherwise
    for column, name in zip(columns, key_metrics(RESERVOIR), strict=False):
        assert view["columnWidths"][column] >= header_width(name)
    assert sum(view["columnWidths"][column] for column in view["columnOrder"]) + 73 <= TABLE_PX  # + the checkboxes


def test_the_compared_view_shows_the_baseline_the_difference_with_its_interval_and_the_verdict() -> None:
    view = json.loads(compared_view_state(RESERVOIR))
    assert view["selectedColumns"] == [
        "metrics.`score_diff`",  # sorted by it: the largest improvement first
        "metrics.`score`",
        "tags.`compared_to`",
        "metrics.`score_baseline`",
        "metrics.`score_diff_lo`",
        "metrics.`score_diff_hi`",
        "tags.`score_verdict`",
    ]
    assert view["orderByKey"] == "metrics.`score_diff`" and "tags.compared_to LIKE '%'" in view["searchFilter"]
    for column in view["selectedColumns"]:
        assert view["columnWidths"][column] >= header_width(column.split("`")[1])
    assert sum(view["columnWidths"][column] for column in view["columnOrder"]) + 73 <= TABLE_PX
    tags = experiment_tags("7", RESERVOIR)
    assert {VIEW_TAG_PREFIX + KEY_VIEW, VIEW_TAG_PREFIX + COMPARED_VIEW} <= set(tags)
    assert f"viewStateShareKey={COMPARED_VIEW}" in tags["mlflow.note.content"]


def test_a_comparison_is_logged_as_the_views_name_it_and_replaces_an_earlier_one() -> None:
    change = MetricChange("score", 0.91, 0.03, 0.01, 0.05, "improvement")
    assert comparison_metrics([change]) == {
        "score_baseline": 0.91,
        "score_diff": 0.03,
        "score_diff_lo": 0.01,
        "score_diff_hi": 0.05,
    }
    assert comparison_tags([change], "main (0123456789)") == {
        "compared_to": "main (0123456789)",
        "score_verdict": "improvement",
    }
    assert described(None, "| score | +0.01 [-0.8, +0.8] (+0.2%) |").endswith(
        r"| score | +0.01 \[-0.8, +0.8\] (+0.2%) |"
    )
    first = described("**gamma=0.95**: what the run is.", "| metric | ... first |")
    again = described(first, "| metric | ... second |")
    assert again.startswith("**gamma=0.95**: what the run is.") and "first" not in again and again.endswith("second |")


def test_the_run_folder_gets_the_validation_mean_and_the_test_results_at_the_trained_frames(
    tmp_path: Path, project: Path
) -> None:
    assert (VALIDATION.name,) == MEAN_OVER_AGENTS
    folder = tmp_path / "runs" / "reservoir" / "baseline [0123abcd]"
    sink = TensorBoardSink(folder, agents=2)
    for step, scores in ((400, [0.2, 0.4]), (800, [0.5, 0.7])):
        sink.emit([Record.of(VALIDATION, step, {"return": [1.0, 3.0], "score": scores})], [])
    sink.close()
    evaluation = _committed_evaluation()
    log_hparams(folder, load_config(project / "params.yaml"), evaluation, frames=800)
    events = EventAccumulator(str(folder)).Reload()
    line = [(event.step, round(event.value, 6)) for event in events.Scalars("reservoir/validation/score")]
    assert line == [(400, 0.3), (800, 0.6)]  # the run's own line: the mean over its agents
    assert [event.step for event in events.Scalars("reservoir/test/score")] == [800]  # where its line ends
    chart = score_layout("reservoir", "score")["reservoir"]
    ((title, (kind, tags)),) = chart.items()
    assert kind == "Multiline" and tags[:2] == ["^reservoir/validation/score$", "^reservoir/test/score$"], title
    assert events.PluginTagToContent("custom_scalars")


def test_the_parent_run_names_its_metrics_as_dvc_does() -> None:
    """``score``, ``score_lo``, ... in MLflow as in metrics/summary.json: one name per metric."""
    evaluation = _committed_evaluation()
    metrics = tracked_metrics(evaluation, 2.5)
    assert set(evaluation.headline_metrics()) | {"train_minutes"} <= set(metrics)
    assert set(key_metrics(evaluation.headline)) <= set(metrics)
    assert all(len(name) <= 20 for name in metrics), sorted(metrics)


def test_tensorboard_tags_start_with_the_environment(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "CartPole-v1" / "baseline [0123abcd]"
    sink = TensorBoardSink(folder, agents=1)
    sink.emit([Record.of(PROGRESS, 100, {"epsilon": 0.5, "lr": 0.001, "updates": 1.0, "frames_per_second": 9.0})], [])
    sink.close()
    tags = EventAccumulator(str(folder / "seed-0")).Reload().Tags()["scalars"]
    assert sorted(tags) == sorted(f"CartPole-v1/progress/{field}" for field in PROGRESS.fields)


def _hparams_session(folder: Path) -> tuple[object, dict[str, float]]:
    events = EventAccumulator(str(folder)).Reload()
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert start.group_name == folder.name  # the trial's name in the tab: the run's, not its path
    scalars = {tag: events.Scalars(tag)[0].value for tag in events.Tags()["scalars"]}
    return metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG]), scalars


def test_every_hparams_session_defines_the_same_readable_columns(project: Path) -> None:
    """TensorBoard reads the columns of one session, any: each holds every environment's, named in words."""
    evaluation = _committed_evaluation()
    sessions = []
    for env in PROFILES:
        config = load_config(project / "params.yaml", [f"env.name={env}", f"env.section={PROFILES[env].section}"])
        folder = project / "runs" / env / "baseline [0123abcd]"
        log_hparams(folder, config, evaluation)
        sessions.append(_hparams_session(folder))
    (experiment, scalars), (other, _) = sessions
    assert experiment.hparam_infos == other.hparam_infos and experiment.metric_infos == other.metric_infos
    hparams = sorted(experiment.hparam_infos, key=lambda info: info.name)  # TensorBoard's order; it shows 5
    assert [info.display_name for info in hparams[:5]] == ["environment", "batch size", "lr", "gamma", "tau"]
    assert all("_" not in info.display_name and info.description.startswith("params.yaml ") for info in hparams)
    names = [info.display_name for info in experiment.metric_infos]
    assert names[:5] == [
        f"reservoir: {name}" for name in ("score", "score low (95%)", "score high (95%)", *RESERVOIR[1:])
    ]
    assert "CartPole-v1: solved" in names
    summary = evaluation.metric("score")
    assert scalars["reservoir/test/score"] == pytest.approx(summary.mean)
    assert scalars["reservoir/test/score_lo"] == pytest.approx(summary.ci_low)
    assert all(tag.startswith("reservoir/test/") for tag in scalars)  # no chart mixes two environments


def _copy_outputs(project: Path) -> None:
    """The committed outputs, and the environment they were trained on (plot refuses another)."""
    for path in ("metrics", "logs"):
        shutil.copytree(REPO / path, project / path)
    write_params(project / "params.yaml", **{"env.num_envs": load_config(REPO / "params.yaml").env.num_envs})


@pytest.mark.parametrize(
    ("missing", "named"),
    [("logs/train", "logs/train/progress.csv"), ("metrics/eval.json", "metrics/eval.json")],
)
def test_plot_without_an_input_fails_in_one_line_and_keeps_the_figures(
    project: Path, capsys: pytest.CaptureFixture[str], missing: str, named: str
) -> None:
    _copy_outputs(project)
    target = project / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    (project / "plots").mkdir()
    (project / "plots/training_curves.png").write_bytes(b"the previous figure")
    assert plot.main([]) == Exit.FAILED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and "run the" in err[0], err
    assert [path.name for path in (project / "plots").iterdir()] == ["training_curves.png"]
    assert (project / "plots/training_curves.png").read_bytes() == b"the previous figure"


def test_plot_refuses_a_training_made_on_another_environment_and_keeps_the_figures(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _copy_outputs(project)
    trained = json.loads((project / "metrics/train.json").read_text())
    trained["params"] = {**trained.get("params", {}), "env.reservoir.capacity": 30}
    (project / "metrics/train.json").write_text(json.dumps(trained))
    (project / "plots").mkdir()
    (project / "plots/training_curves.png").write_bytes(b"the previous figure")
    assert plot.main([]) == Exit.FAILED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "env.reservoir.capacity: 30 -> 40" in err[0] and "run the train stage" in err[0], err
    assert [path.name for path in (project / "plots").iterdir()] == ["training_curves.png"]


def _overlaps(figure: Figure) -> list[str]:
    """Each legend that covers an axes or falls outside the figure."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    legends = [*figure.legends, *(ax.get_legend() for ax in figure.axes if ax.get_legend() is not None)]
    whole = figure.bbox
    faults = []
    for legend in legends:
        box = legend.get_window_extent(renderer)
        if any(box.overlaps(ax.get_window_extent(renderer)) for ax in figure.axes):
            faults.append(f"covers an axes: {[text.get_text() for text in legend.get_texts()]}")
        if box.x0 < whole.x0 - 1 or box.x1 > whole.x1 + 1 or box.y0 < whole.y0 - 1 or box.y1 > whole.y1 + 1:
            faults.append(f"cut off: {[text.get_text() for text in legend.get_texts()]}")
    return faults


def test_no_figure_of_the_plot_stage_has_a_legend_over_its_axes(project: Path) -> None:
    config = load_config(project / "params.yaml")
    evaluation, episodes = _committed_evaluation(), read_csv(REPO / "logs/eval_episodes.csv")
    figures = {
        "training_curves.png": plot.training_curves(
            plot.read_training_log(REPO / "logs/train"), Training.from_json(read_json(REPO / "metrics/train.json"))
        ),
        "evaluation_returns.png": plot.evaluation_returns(episodes, evaluation),
        "regret.png": plot.regret(episodes, evaluation, "sdp"),
        **reservoir_figures(
            config.env.reservoir,
            read_csv(REPO / "logs/trajectories.csv"),
            episodes,
            read_csv(REPO / "logs/policy_states.csv"),
        ),
    }
    assert evaluation.trade_offs is not None
    figures["front.png"] = front_figure(evaluation.trade_offs.figure_input(), config.env.name)
    faults = {name: problems for name, figure in figures.items() if (problems := _overlaps(figure))}
    assert not faults
