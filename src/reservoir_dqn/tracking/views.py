"""What the MLflow UI shows first: the pipeline runs' key metrics, and a saved runs-table view of them.

The parent run's metrics have the names of ``metrics/summary.json`` (what ``dvc exp show``
shows): a metric's mean over seeds is its own name (``score``), its 95% interval
``score_lo``..``score_hi``, its interquartile mean ``score_iqm``; the best-validated snapshots'
mean is ``best_snapshot_score`` and the training time ``train_minutes``. Short names, so a
table shows each header whole.

MLflow's runs table cannot preselect columns from the server, but it opens views shared as
experiment tags (``mlflow.sharedViewState.<key>``, what its "Share" button writes). Every
experiment gets one, :data:`KEY_VIEW`: the pipeline runs, best score first, with the
score's 95% interval, the best snapshots' score, the other headline metrics, the training
time and the budget. The view's UI state orders those columns (``columnOrder``; without it
the table sorts metric columns by name) and sizes each to show its header whole
(``columnWidths``): both are keys of the runs table's UI state in MLflow 3.17, which an older
UI ignores. The experiment's description (shown above its runs table) links to the view.

A second view, :data:`COMPARED_VIEW`, shows what ``reservoir-dqn compare`` judged
(:mod:`.comparisons`): the runs it compared, each with its score, the baseline it was compared
to, the baseline's score, the difference with its interval and the verdict. It is a view of its
own because the key view already fills the table's width; the description links to both, and a
judged run's page shows its whole comparison.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from reservoir_dqn.evaluation.metric_names import TRAIN_MINUTES, best_snapshot_name, stat_name
from reservoir_dqn.tracking.naming import RUN_KIND, RunKind, Tag

KEY_VIEW = "key-metrics"  # the share key of the view
COMPARED_VIEW = "compared"  # the share key of the view of compare's judgements
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
# The runs table's own columns, first and always shown (their column ids in MLflow 3.17's UI).
FIXED_COLUMNS = {"attributes.`Run Name`": 200, "runDateAndNestInfo": 150, "duration": 80}
BUDGET_COLUMN = "tags.`budget`"
BUDGET_WIDTH = 170  # px: "100,000 frames x 5 seeds"
COMPARED_TO_WIDTH = 170  # px: "main (0123456789)"
VERDICT_WIDTH = 130  # px: "within tolerance"
# A header's width: its text (about 5.3 px a character in the table's font) and the cell's
# padding and menu; the sorted column also shows the sort arrow. Measured in headless Chromium.
CHARACTER_PX, HEADER_PAD_PX, SORT_ARROW_PX = 5.3, 38, 16


def key_metrics(headline: Sequence[str]) -> list[str]:
    """The key view's metrics in reading order: the main one, its interval, the best snapshots', the others, time."""
    main, *others = headline
    return [
        stat_name(main),
        stat_name(main, "ci_low"),
        stat_name(main, "ci_high"),
        best_snapshot_name(main),
        *(stat_name(name) for name in others),
        TRAIN_MINUTES,
    ]


def comparison_name(metric: str, what: str) -> str:
    """A figure ``compare`` leaves on the change's run: ``score_baseline``, ``score_diff``, ``score_diff_lo``, ...

    :param what: ``baseline`` (the baseline's mean), ``diff``, ``diff_lo`` or ``diff_hi`` (the difference and the
        ends of its interval).
    """
    return f"{metric}_{what}"


def verdict_tag(metric: str) -> str:
    """The tag holding ``compare``'s verdict on ``metric``: ``score_verdict``."""
    return f"{metric}_verdict"


def header_width(name: str, sorted_by: bool = False) -> int:
    """Pixels a runs-table column needs to show the header ``name`` whole."""
    return math.ceil(CHARACTER_PX * len(name) + HEADER_PAD_PX + (SORT_ARROW_PX if sorted_by else 0))


def _view_state(search: str, columns: Sequence[str], widths: dict[str, int]) -> str:
    """MLflow's shared-view state (JSON) of the runs table: these runs and ``columns``, sorted by the first."""
    return json.dumps(
        {
            "searchFilter": search,
            "orderByKey": columns[0],
            "orderByAsc": False,
            "lifecycleFilter": "Active",
            "selectedColumns": list(columns),
            "columnOrder": [*FIXED_COLUMNS, *columns],
            "columnWidths": FIXED_COLUMNS | widths,
        }
    )


PIPELINE_RUNS = f"tags.{RUN_KIND} = '{RunKind.PIPELINE}'"


def key_view_state(headline: Sequence[str]) -> str:
    """MLflow's shared-view state (JSON) of the runs table with the key columns, best main metric first."""
    metrics = key_metrics(headline)
    columns = [f"metrics.`{name}`" for name in metrics] + [BUDGET_COLUMN]
    widths = {f"metrics.`{name}`": header_width(name, sorted_by=index == 0) for index, name in enumerate(metrics)}
    return _view_state(PIPELINE_RUNS, columns, widths | {BUDGET_COLUMN: BUDGET_WIDTH})


def compared_columns(main: str) -> list[str]:
    """The columns of :data:`COMPARED_VIEW`: the main metric, the baseline, its mean, the difference with its
    interval, the verdict."""
    figures = [comparison_name(main, what) for what in ("baseline", "diff", "diff_lo", "diff_hi")]
    return [
        f"metrics.`{stat_name(main)}`",
        f"tags.`{Tag.COMPARED_TO}`",
        *(f"metrics.`{name}`" for name in figures),
        f"tags.`{verdict_tag(main)}`",
    ]


def compared_view_state(headline: Sequence[str]) -> str:
    """MLflow's shared-view state (JSON) of the pipeline runs ``compare`` judged, largest difference first."""
    main = headline[0]
    columns = compared_columns(main)
    columns.insert(0, columns.pop(columns.index(f"metrics.`{comparison_name(main, 'diff')}`")))  # sorted by it
    widths = {column: header_width(column.split("`")[1], sorted_by=index == 0) for index, column in enumerate(columns)}
    widths |= {f"tags.`{Tag.COMPARED_TO}`": COMPARED_TO_WIDTH, f"tags.`{verdict_tag(main)}`": VERDICT_WIDTH}
    return _view_state(f"{PIPELINE_RUNS} and tags.{Tag.COMPARED_TO} LIKE '%'", columns, widths)


def view_link(experiment_id: str, key: str) -> str:
    """The in-app link (relative to the MLflow UI's address) that opens the shared view ``key``."""
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={key}"


def key_view_link(experiment_id: str) -> str:
    """The in-app link (relative to the MLflow UI's address) that opens :data:`KEY_VIEW`."""
    return view_link(experiment_id, KEY_VIEW)


def experiment_tags(experiment_id: str, headline: Sequence[str]) -> dict[str, str]:
    """The experiment's kind, its description with the links to the views, and the views themselves."""
    main, *others = headline
    note = (
        f"**[Compare experiments]({key_view_link(experiment_id)})**: the pipeline runs, best {main} first, "
        f"with its 95% interval over seeds ({stat_name(main, 'ci_low')}..{stat_name(main, 'ci_high')}), "
        f"the best snapshots' {main}, {''.join(f'{name}, ' for name in others)}and training time. "
        f"**[Compared with a baseline]({view_link(experiment_id, COMPARED_VIEW)})**: the runs `reservoir-dqn "
        f"compare` judged, with the baseline, its {main}, the difference with its interval and the verdict (a "
        "judged run's page shows the whole comparison).\n\n"
        "DQN agents of reservoir_dqn: a parent run per pipeline execution (named by what it changed against "
        "its baseline; params, test metrics with 95% intervals over seeds, figures, model), a child run per "
        "seed (training curves), and a run of the baseline policies."
    )
    return {
        # The MLflow UI opens a "model training" experiment on its runs table (not the GenAI overview).
        "mlflow.experimentKind": "custom_model_development",
        "mlflow.note.content": note,
        VIEW_TAG_PREFIX + KEY_VIEW: key_view_state(headline),
        VIEW_TAG_PREFIX + COMPARED_VIEW: compared_view_state(headline),
    }
