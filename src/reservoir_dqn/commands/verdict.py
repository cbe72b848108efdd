"""The CI gate's verdict: whether a change moved the metrics, with statistics over seeds; no git, no DVC.

It judges only what can be judged. Both sides must have been measured the same way (the
MDP's params, the test scenarios and the score's reference, which ``eval.json`` records as
its *conditions*) and have at least :data:`~reservoir_dqn.evaluation.statistics.MIN_SEEDS` seeds;
otherwise :class:`CannotJudge` says why in one line, naming the differing keys. A change that
alters the MDP or the evaluation on purpose names the keys it accepts (a key or a prefix
such as ``env.reservoir``); the report lists every accepted difference.

One metric is gated (``compare.metric``, the score by default) with a tolerance in its own
units (``compare.tolerance``). Its verdict comes from Welch's one-sided test of the
hypothesis a user means (:func:`reservoir_dqn.evaluation.statistics.compare`): *regression* only when
the data show, at ``compare.significance``, a drop larger than the tolerance
(:func:`exit_status`: :attr:`Exit.REGRESSION`). The other headline metrics are shown with a
plain one-sided test, ungated, and so are the utility losses to an exact front (a reservoir's
energy against supply) and a record-driven reservoir's score on its held-out years
(:func:`held_out_comparison` says why). ``reservoir-dqn compare``
(:mod:`reservoir_dqn.commands.compare`) finds the two sides in git and DVC and runs this.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from reservoir_dqn.commands.exits import Exit
from reservoir_dqn.config import Config, ConfigError
from reservoir_dqn.evaluation.metric_names import held_out_name
from reservoir_dqn.evaluation.results import Evaluation
from reservoir_dqn.evaluation.scoring import UTILITY_LOSSES
from reservoir_dqn.evaluation.statistics import Comparison, Summary, TooFewSeeds, compare

FLOAT_AGREEMENT = 1e-9  # relative: a recorded float (the score's reference) that differs by less is equal


class CannotJudge(ValueError):
    """The two sides cannot be compared: the message says why, in one line."""


def parse_evaluation(text: str, what: str) -> Evaluation:
    """An ``eval.json``'s text as an evaluation; one that an older version wrote cannot be judged."""
    try:
        return Evaluation.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as error:
        raise CannotJudge(
            f"{what} predates this version's evaluation format ({error!r} is missing or invalid)"
        ) from None


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, float) and isinstance(new, float):
        return math.isclose(old, new, rel_tol=FLOAT_AGREEMENT, abs_tol=FLOAT_AGREEMENT)
    return bool(old == new)


def _accepted(key: str, accept: Sequence[str]) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in accept)


def condition_differences(baseline: Evaluation, change: Evaluation) -> list[tuple[str, Any, Any]]:
    """The conditions of measurement that differ, as (key, baseline's, change's), in key order.

    :raises CannotJudge: when the baseline recorded no conditions (written by an older version).
    """
    if baseline.conditions is None or change.conditions is None:
        side = "baseline" if baseline.conditions is None else "change"
        raise CannotJudge(
            f"the {side}'s eval.json predates recorded evaluation conditions (the MDP's params, the test scenarios, "
            "the score's reference), so equal measurement cannot be checked: re-run its pipeline with this version"
        )
    keys = sorted(set(baseline.conditions) | set(change.conditions))
    return [
        (key, baseline.conditions.get(key), change.conditions.get(key))
        for key in keys
        if not _same(baseline.conditions.get(key), change.conditions.get(key))
    ]


@dataclass(frozen=True)
class Judgement:
    """Every headline metric compared, and the measurement differences that were accepted."""

    metric: str
    tolerance: float
    significance: float
    rows: dict[str, Comparison]
    accepted: list[tuple[str, Any, Any]]
    held_out: Comparison | None = None
    held_out_note: str = ""

    @property
    def gated(self) -> Comparison:
        return self.rows[self.metric]


def judge(baseline: Evaluation, change: Evaluation, config: Config, accept: Sequence[str] = ()) -> Judgement:
    """Compare every headline metric of the change with the baseline's, and the utility losses to an exact front
    where both sides have them (never gated), or raise :class:`CannotJudge`."""
    settings = config.compare
    differences = condition_differences(baseline, change)
    refused = [difference for difference in differences if not _accepted(difference[0], accept)]
    if refused:
        listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in refused)
        raise CannotJudge(
            f"the two sides were measured differently ({listed}); compare only equal measurements, or accept the "
            "keys on purpose with --accept KEY"
        )
    if settings.metric not in change.headline or settings.metric not in baseline.agents["final"]:
        raise ConfigError(
            f"compare.metric: {settings.metric!r} is not a headline metric of both sides ({list(change.headline)})"
        )
    rows: dict[str, Comparison] = {}
    try:
        for name in (*change.headline, *UTILITY_LOSSES):
            if name in baseline.agents["final"] and name in change.agents["final"]:
                tolerance = settings.tolerance if name == settings.metric else 0.0
                old, new = baseline.metric(name), change.metric(name)
                compared = compare(old.per_seed, new.per_seed, tolerance, settings.significance)
                rows[name] = replace(compared, baseline=old, change=new)  # each side's interval as evaluate clipped it
    except TooFewSeeds as error:
        raise CannotJudge(f"{error}: train more seeds (train.seeds)") from None
    held_out, note = held_out_comparison(baseline, change, settings.significance)
    return Judgement(settings.metric, settings.tolerance, settings.significance, rows, differences, held_out, note)


def held_out_comparison(baseline: Evaluation, change: Evaluation, significance: float) -> tuple[Comparison | None, str]:
    """The agents' score on the held-out record (final networks, per seed), compared but never gated; or why not.

    Not gated: the held-out years are few (about 20 on the shipped example) and every seed
    plays the same ones, so a test over seeds says nothing about other years; and a gate that
    accepts changes by their held-out score makes those years a validation set, which they
    are held out from.
    """
    sides = {"baseline": baseline.held_out, "change": change.held_out}
    if not any(sides.values()):
        return None, ""
    if baseline.held_out is None or change.held_out is None:
        side = next(name for name, held_out in sides.items() if held_out is None)
        return None, f"Held-out record: the {side} did not replay one, so it is not compared."
    if baseline.held_out.windows != change.held_out.windows:
        return None, "Held-out record: the two sides replayed different windows, so it is not compared."
    old, new = (side.dqn_per_seed["final"].per_seed for side in (baseline.held_out, change.held_out))
    return compare(old, new, 0.0, significance), (
        f"Held-out score: the agents' score on the record's {len(change.held_out.windows)} held-out windows (random 0, "
        "perfect foresight 1), per seed; reported, never gated (the same few years for every seed, and a gate on them "
        "would make them a validation set)."
    )


def _interval(summary: Summary) -> str:
    text = f"{summary.mean:.4g}"
    return text if summary.ci_low is None else f"{text} [{summary.ci_low:.4g}, {summary.ci_high:.4g}]"


HELD_OUT_SCORE = held_out_name("score")  # the held-out score's row, named as MLflow names its value
UNGATED_VERDICTS = {"regression": "lower", "improvement": "higher", "inconclusive": "no significant change"}


def verdict_word(result: Comparison, gated: bool) -> str:
    """The verdict as the report says it: the gate's own words for the gated metric, plain ones for the others."""
    return result.verdict if gated else UNGATED_VERDICTS.get(result.verdict, result.verdict)


def compared_rows(judgement: Judgement) -> list[tuple[str, Comparison, bool]]:
    """Every row the report shows, as (name, comparison, gated): the headline metrics, then the held-out score."""
    rows = [(name, result, name == judgement.metric) for name, result in judgement.rows.items()]
    if judgement.held_out is not None:
        rows.append((HELD_OUT_SCORE, judgement.held_out, False))
    return rows


def _row(name: str, result: Comparison, gated: bool) -> str:
    gate = f"-{result.tolerance:g}" if gated else "not gated"
    relative = f" ({result.difference / result.baseline.mean:+.1%})" if result.baseline.mean > 0 else ""
    difference = f"{result.difference:+.4g} [{result.ci_low:+.4g}, {result.ci_high:+.4g}]{relative}"
    verdict = verdict_word(result, gated)
    if gated and verdict in ("regression", "improvement"):
        verdict = f"**{verdict}**"
    return (
        f"| {name} | {gate} | {_interval(result.baseline)} | {_interval(result.change)} | {difference} | "
        f"{result.p:.3g} | {verdict} |"
    )


def markdown_report(
    label: str,
    change_label: str,
    baseline: Evaluation,
    change: Evaluation,
    judgement: Judgement,
    params: Sequence[tuple[str, Any, Any]],
) -> str:
    """The table a pull request shows: one row per headline metric, then what was accepted and what changed."""
    level = judgement.significance
    lines = [
        f"#### {change.env}: {change_label} against `{label}`",
        "",
        f"Final networks on {change.episodes} test episodes; {baseline.seeds} baseline seeds, {change.seeds} change "
        f"seeds. Each side: mean [95% Student-t interval over seeds, given the test scenarios]. Difference: "
        f"[{1 - 2 * level:.0%} Welch interval], whose ends are the one-sided bounds the verdict uses. p: of the "
        f"verdict's test (for *inconclusive*, of the gate's test that the drop exceeds the tolerance). Gated: "
        f"`{judgement.metric}`, a regression when the drop is shown larger than {judgement.tolerance:g} at "
        f"{level:g}.",
        "",
        "| metric | gate | baseline | change | difference | p | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result, gated in compared_rows(judgement):
        lines.append(_row("held-out score" if name == HELD_OUT_SCORE else name, result, gated))
    lines.append("")
    if baseline.converged or change.converged:
        lines += [
            f"Training: baseline {baseline.converged or 'not said'}; change {change.converged or 'not said'}.",
            "",
        ]
    if judgement.held_out_note:
        lines += [judgement.held_out_note, ""]
    if judgement.accepted:
        accepted = ", ".join(f"`{key}` {old!r} -> {new!r}" for key, old, new in judgement.accepted)
        lines += [f"Measured differently, accepted on purpose (--accept): {accepted}", ""]
    if params:
        lines.append(
            f"Params that differ from `{label}`: " + ", ".join(f"`{k}` {old!r} -> {new!r}" for k, old, new in params)
        )
    else:
        lines.append(f"No parameter differs from `{label}`.")
    return "\n".join(lines) + "\n"


def exit_status(judgement: Judgement) -> Exit:
    """The gate's status: 1 for a regression of the gated metric, else 0 (improvement, within tolerance, unclear)."""
    return Exit.REGRESSION if judgement.gated.verdict == "regression" else Exit.OK
