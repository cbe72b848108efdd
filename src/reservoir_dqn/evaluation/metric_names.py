"""The name of every test result, declared once: in the metrics files, DVC, MLflow and TensorBoard.

A headline metric ``m`` of an environment (``score``, ``return``, ``reliability``, ``solved``:
its profile declares them) and the measures against the optimum (``regret``, ``exact_gap``:
:mod:`reservoir_dqn.evaluation.scoring`) are summarised over seeds. Each statistic of one has one name,
:func:`stat_name` (``score``, ``score_lo``, ``score_hi``, ``score_iqm``), used alike by

- ``metrics/summary.json``, the few numbers DVC tracks (``dvc exp show``, ``dvc metrics diff``);
- the pipeline's parent MLflow run and its saved key-metrics view (:mod:`reservoir_dqn.tracking.views`);
- TensorBoard, under the environment and the test group (:func:`tensorboard_tag`:
  ``reservoir/test/score_lo``), so that no chart mixes two environments.

The training curves are named by their :class:`~reservoir_dqn.common.metrics.MetricGroup` (the CSV
file and column, MLflow's and TensorBoard's ``group/field``); this module holds the results of
the evaluate stage, which the train stage never imports, so renaming one re-runs evaluate, not
training. ``tests/test_metric_names.py`` renames a statistic and checks that every place follows,
and that the committed ``metrics/summary.json`` and ``dvc.yaml`` hold the declared names.
"""

from __future__ import annotations

# The suffix of each statistic over seeds (the mean has none): ``score_lo`` .. ``score_hi``.
STATISTICS = {"mean": "", "ci_low": "_lo", "ci_high": "_hi", "iqm": "_iqm"}
TEST_GROUP = "test"  # TensorBoard's group of the test results: <env>/test/<name>
TRAIN_MINUTES = "train_minutes"  # the training's wall time, beside the results
CONVERGED = "converged_agents"  # how many agents' training converged (train.json's converged_at_frames)
HELD_OUT = "held_out"  # the prefix of every figure of the held-out record (results.HeldOut.metrics)
FRONT_CERTIFICATE = "front_certificate"  # the largest utility a weighting could gain over the exact front (results)


def stat_name(metric: str, statistic: str = "mean") -> str:
    """The name of one statistic over seeds of ``metric``: ``score``, ``score_lo``, ``score_hi``, ``score_iqm``.

    :param statistic: ``mean``, ``ci_low``, ``ci_high`` or ``iqm`` (keys of :data:`STATISTICS`).
    """
    return metric + STATISTICS[statistic]


def best_snapshot_name(metric: str) -> str:
    """The mean over seeds of ``metric`` for the best-validated snapshots, beside the final networks' mean."""
    return f"best_snapshot_{metric}"


def held_out_name(figure: str, statistic: str = "mean") -> str:
    """A figure of the held-out record: ``held_out_score``, ``held_out_score_lo``, ``held_out_sdp``, ..."""
    return stat_name(f"{HELD_OUT}_{figure}", statistic)


def tensorboard_tag(env: str, name: str) -> str:
    """TensorBoard's tag of a test result named ``name`` (one of the names above): ``reservoir/test/score_lo``."""
    return f"{env}/{TEST_GROUP}/{name}"
