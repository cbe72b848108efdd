"""What the MLflow UI shows first: the pipeline runs' key metrics, and a saved runs-table view of them.

MLflow's runs table cannot preselect columns from the server, but it opens views shared as
experiment tags (``mlflow.sharedViewState.<key>``, what its "Share" button writes). Every
experiment gets one, :data:`KEY_VIEW`: the pipeline runs, best score first, with the
score's 95% interval, the best snapshots' score, the other headline metrics, the training
time and the budget. The experiment's description (shown above its runs table) links to it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

KEY_VIEW = "key-metrics"  # the share key of the view
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
TRAIN_MINUTES = "train/minutes"


def eval_metric(name: str, statistic: str) -> str:
    """A parent run's test metric: ``eval/score_mean``, ``eval/score_ci_low``, ... (sorted before ``train/``)."""
    return f"eval/{name}_{statistic}"


def best_snapshot_metric(name: str) -> str:
    """The mean over seeds of ``name`` for the best-validated snapshots, next to the final networks' mean."""
    return f"eval/best_snapshot_{name}_mean"


def key_view_state(headline: Sequence[str]) -> str:
    """MLflow's shared-view state (JSON) of the runs table with the key columns, best main metric first."""
    main, *others = headline
    metrics = [
        eval_metric(main, "mean"),
        eval_metric(main, "ci_low"),
        eval_metric(main, "ci_high"),
        best_snapshot_metric(main),
        *(eval_metric(name, "mean") for name in others),
        TRAIN_MINUTES,
    ]
    columns = [f"metrics.`{name}`" for name in metrics] + ["tags.`budget`"]
    return json.dumps(
        {
            "searchFilter": "tags.run_kind = 'pipeline'",
            "orderByKey": columns[0],
            "orderByAsc": False,
            "lifecycleFilter": "Active",
            "selectedColumns": columns,
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
        f"with its 95% interval over seeds, {''.join(f'{name}, ' for name in others)}and training time.\n\n"
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
