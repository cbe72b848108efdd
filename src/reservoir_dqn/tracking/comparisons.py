"""What ``reservoir-dqn compare`` leaves on the change's pipeline run when tracking is on: difference and verdict.

Per compared metric ``m`` (each headline metric, and the held-out score), the run gets the
baseline's mean ``m_baseline``, the difference ``m_diff`` with its Welch interval
``m_diff_lo``..``m_diff_hi`` (the ends the verdict uses) as metrics, and the verdict as the tag
``m_verdict``: *regression*, *improvement*, *within tolerance* or *inconclusive* for the gated
metric, *lower*, *higher* or *no significant change* for the others, as the report says them.
The tag ``compared_to`` names the baseline. The key-metrics view (:mod:`.views`) shows the
gated metric's columns beside its score; the whole report (every metric, p-values, what was
accepted, the params that differ) is the run's description, below what the run is, so the
run's page shows it as a table. A later comparison of the same run replaces all of it.

Only a store that exists is written to: a compare run where no pipeline ever tracked (a CI
checkout without ``mlflow.db``) creates nothing. Tracking never changes the gate's verdict: a
store that fails is one warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from reservoir_dqn.config import Config
from reservoir_dqn.tracking import Tracking
from reservoir_dqn.tracking.naming import Tag
from reservoir_dqn.tracking.store import project_root, tracking_uri
from reservoir_dqn.tracking.views import comparison_name, verdict_tag

log = logging.getLogger(__name__)

DESCRIPTION = "mlflow.note.content"  # the run's description, which its page renders as Markdown
REPORT_START = "\n\n<!-- reservoir-dqn compare -->\n"  # where the comparison starts in the description
SIGNIFICANT_DIGITS = 4  # of the figures logged, as the report shows them


@dataclass(frozen=True)
class MetricChange:
    """One metric of the change against the baseline: means, the difference with its interval, the verdict."""

    name: str
    baseline: float
    difference: float
    low: float
    high: float
    verdict: str


def _digits(value: float) -> float:
    """``value`` to the report's four significant digits, so that the runs table's narrow columns show it whole."""
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def comparison_metrics(changes: Sequence[MetricChange]) -> dict[str, float]:
    """``score_baseline``, ``score_diff``, ``score_diff_lo``, ``score_diff_hi``, ... of every change."""
    metrics: dict[str, float] = {}
    for change in changes:
        metrics[comparison_name(change.name, "baseline")] = _digits(change.baseline)
        metrics[comparison_name(change.name, "diff")] = _digits(change.difference)
        metrics[comparison_name(change.name, "diff_lo")] = _digits(change.low)
        metrics[comparison_name(change.name, "diff_hi")] = _digits(change.high)
    return metrics


def comparison_tags(changes: Sequence[MetricChange], baseline: str) -> dict[str, str]:
    """``score_verdict``, ... and ``compared_to``."""
    return {Tag.COMPARED_TO: baseline} | {verdict_tag(change.name): change.verdict for change in changes}


def described(current: str | None, report: str) -> str:
    """The run's description with ``report`` in place of an earlier comparison's.

    Its brackets are escaped: MLflow's Markdown reads an interval followed by a percentage, ``[-0.81, +0.81] (+0.2%)``,
    as a link.
    """
    own = (current or "").split(REPORT_START, 1)[0]
    escaped = report.replace("[", "\\[").replace("]", "\\]")
    return f"{own}{REPORT_START}{escaped}"


def store_exists(config: Config) -> bool:
    """Whether the store compare would write to exists: any server, or an SQLite file that is there."""
    uri = tracking_uri(config.tracking.uri, project_root())
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return True
    return Path(parsed.path[1:] if parsed.path.startswith("//") else parsed.path).exists()


def log_comparison(
    tracking: Tracking, run_ids: Mapping[str, str], changes: Sequence[MetricChange], baseline: str, report: str
) -> bool:
    """Leave the comparison on the change's run (``run_ids``: its training's); ``False`` when the run is not here."""
    run = tracking.find(run_ids)
    if run is None:
        return False
    run.log_metrics(comparison_metrics(changes))
    run.set_tags(comparison_tags(changes, baseline) | {DESCRIPTION: described(run.tag(DESCRIPTION), report)})
    return True
