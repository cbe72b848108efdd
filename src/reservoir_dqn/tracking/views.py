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
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from reservoir_dqn.evaluation.metric_names import TRAIN_MINUTES, best_snapshot_name, stat_name
from reservoir_dqn.tracking.naming import RUN_KIND, RunKind

KEY_VIEW = "key-metrics"  # the share key of the view
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
# The runs table's own columns, first and always shown (their column ids in MLflow 3.17's UI).
FIXED_COLUMNS = {"attributes.`Run Name`": 200, "runDateAndNestInfo": 150, "duration": 80}
BUDGET_COLUMN = "tags.`budget`"
BUDGET_WIDTH = 170  # px: "100,000 frames x 5 seeds"
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


def header_width(name: str, sorted_by: bool = False) -> int:
    """Pixels a runs-table column needs to show the header ``name`` whole."""
    return math.ceil(CHARACTER_PX * len(name) + HEADER_PAD_PX + (SORT_ARROW_PX if sorted_by else 0))


def key_view_state(headline: Sequence[str]) -> str:
    """MLflow's shared-view state (JSON) of the runs table with the key columns, best main metric first."""
    metrics = key_metrics(headline)
    columns = [f"metrics.`{name}`" for name in metrics] + [BUDGET_COLUMN]
    widths = {f"metrics.`{name}`": header_width(name, sorted_by=index == 0) for index, name in enumerate(metrics)}
    return json.dumps(
        {
            "searchFilter": f"tags.{RUN_KIND} = '{RunKind.PIPELINE}'",
            "orderByKey": columns[0],
            "orderByAsc": False,
            "lifecycleFilter": "Active",
            "selectedColumns": columns,
            "columnOrder": [*FIXED_COLUMNS, *columns],
            "columnWidths": FIXED_COLUMNS | widths | {BUDGET_COLUMN: BUDGET_WIDTH},
        }
    )


def key_view_link(experiment_id: str) -> str:
    """The in-app link (relative to the MLflow UI's address) that opens :data:`KEY_VIEW`."""
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={KEY_VIEW}"


def experiment_tags(experiment_id: str, headline: Sequence[str]) -> dict[str, str]:
    """The experiment's kind, its description with the link to the key view, and the view itself."""
    main, *others = headline
    note = (
        f"**[Compare experiments]({key_view_link(experiment_id)})**: the pipeline runs, best {main} first, "
        f"with its 95% interval over seeds ({stat_name(main, 'ci_low')}..{stat_name(main, 'ci_high')}), "
        f"the best snapshots' {main}, {''.join(f'{name}, ' for name in others)}and training time.\n\n"
        "DQN agents of reservoir_dqn: a parent run per pipeline execution (named by what it changed against "
        "its baseline; params, test metrics with 95% intervals over seeds, figures, model), a child run per "
        "seed (training curves), and a run of the baseline policies."
    )
    return {
        # The MLflow UI opens a "model training" experiment on its runs table (not the GenAI overview).
        "mlflow.experimentKind": "custom_model_development",
        "mlflow.note.content": note,
        VIEW_TAG_PREFIX + KEY_VIEW: key_view_state(headline),
    }
