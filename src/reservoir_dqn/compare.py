"""``reservoir-dqn compare``: how a change moved the metrics, with statistics over seeds, and the CI gate.

Reads the per-seed results (``metrics/eval.json``, final networks, test episodes) of a
baseline revision (a git revision or a DVC experiment) and of the workspace (or of another
revision, ``--change``). A workspace whose params.yaml or code did not produce its metrics
(``dvc status`` is not clean, as after a failed ``dvc exp run -S``) is refused, so one run's
metrics are never paired with another's params.

It judges only what can be judged. Both sides must have been measured the same way (the
MDP's params, the test scenarios and the score's reference, which ``eval.json`` records as
its *conditions*) and have at least :data:`~reservoir_dqn.statistics.MIN_SEEDS` seeds;
otherwise it says so in one line, naming the differing keys, and exits with
:attr:`Exit.CANNOT_JUDGE`. A change that alters the MDP or the evaluation on purpose names
the keys it accepts (``--accept KEY``, a key or a prefix such as ``env.reservoir``); the
report lists every accepted difference.

One metric is gated (``compare.metric``, the score by default) with a tolerance in its own
units (``compare.tolerance``). Its verdict comes from Welch's one-sided test of the
hypothesis a user means (:func:`reservoir_dqn.statistics.compare`): *regression* only when
the data show, at ``compare.significance``, a drop larger than the tolerance; then the
command exits :attr:`Exit.REGRESSION`. The other headline metrics are shown with a plain
one-sided test, ungated, and so is a record-driven reservoir's score on its held-out years
(:func:`held_out_comparison` says why). The parameters that differ from the baseline
(``dvc params diff``) are listed under the table.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reservoir_dqn.commands import StageFailed, run_stage
from reservoir_dqn.config import Config, ConfigError, add_config_arguments, config_from_args
from reservoir_dqn.exits import Exit
from reservoir_dqn.files import write_text
from reservoir_dqn.process import exit_process
from reservoir_dqn.results import Evaluation
from reservoir_dqn.statistics import Comparison, Summary, TooFewSeeds, compare

FLOAT_AGREEMENT = 1e-9  # relative: a recorded float (the score's reference) that differs by less is equal


class CannotJudge(StageFailed):
    """The two sides cannot be compared: the message says why, in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message, Exit.CANNOT_JUDGE)


def resolve_revision(revision: str) -> str:
    """The commit of a git revision, or of the DVC experiment of that name."""
    probe = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"], capture_output=True, text=True
    )
    if probe.returncode == 0:
        return probe.stdout.strip()
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"], capture_output=True, text=True
    )
    for line in refs.stdout.splitlines():
        ref, commit = line.split()
        if ref.rsplit("/", 1)[-1] == revision:
            return commit
    raise StageFailed(f"'{revision}' is neither a git revision nor a DVC experiment of this repository", Exit.BAD_INPUT)


def evaluation_at(commit: str, path: str, label: str) -> Evaluation:
    """The evaluation a revision committed at ``path``."""
    shown = subprocess.run(["git", "show", f"{commit}:{path}"], capture_output=True, text=True)
    if shown.returncode != 0:
        raise StageFailed(f"{label} has no {path}: run the pipeline there and commit its metrics")
    return _parse(shown.stdout, f"{path} of {label}")


def _parse(text: str, what: str) -> Evaluation:
    try:
        return Evaluation.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as error:
        raise CannotJudge(
            f"{what} predates this version's evaluation format ({error!r} is missing or invalid)"
        ) from None


def _dvc_json(*args: str) -> Any:
    result = subprocess.run([sys.executable, "-m", "dvc", *args, "--json"], capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise StageFailed(f"dvc {' '.join(args)} failed: {message[-1] if message else 'no output'}")
    return json.loads(result.stdout or "{}")


def param_changes(baseline: str, change: str | None) -> list[tuple[str, Any, Any]]:
    """The parameters that differ between ``baseline`` and ``change`` (the workspace when None), as (key, old, new)."""
    diff = _dvc_json("params", "diff", baseline, *([change] if change else []))
    return [(name, values.get("old"), values.get("new")) for params in diff.values() for name, values in params.items()]


def _changes_meaning(change: object) -> bool:
    """A ``dvc status`` entry that changes what the metrics mean: a changed param, a modified dependency."""
    if not isinstance(change, dict):
        return False
    deps = change.get("changed deps", {})
    return bool(change.get("changed params")) or any(state != "deleted" for state in deps.values())


def check_reproduced() -> None:
    """Refuse a workspace whose params.yaml (or code) did not produce its metrics: they would be mispaired.

    Only changed params and dependencies count: outputs that are merely absent (models not
    pulled in a fresh clone) do not change what the metrics mean.
    """
    status = _dvc_json("status")
    changed = [stage for stage, changes in status.items() if any(_changes_meaning(change) for change in changes)]
    if changed:
        raise ConfigError(
            f"the workspace's metrics were not produced by its params.yaml and code (dvc status: {', '.join(changed)} "
            "changed); run `dvc repro`, or `git checkout params.yaml` to undo a failed `dvc exp run -S`"
        )


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
    """Compare every headline metric of the change with the baseline's, or raise :class:`CannotJudge`."""
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
        raise StageFailed(
            f"compare.metric: {settings.metric!r} is not a headline metric of both sides ({list(change.headline)})",
            Exit.BAD_INPUT,
        )
    rows: dict[str, Comparison] = {}
    try:
        for name in change.headline:
            if name in baseline.agents["final"]:
                tolerance = settings.tolerance if name == settings.metric else 0.0
                rows[name] = compare(
                    baseline.metric(name).per_seed, change.metric(name).per_seed, tolerance, settings.significance
                )
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


UNGATED_VERDICTS = {"regression": "lower", "improvement": "higher", "inconclusive": "no significant change"}


def _row(name: str, result: Comparison, gated: bool) -> str:
    gate = f"-{result.tolerance:g}" if gated else "not gated"
    relative = f" ({result.difference / result.baseline.mean:+.1%})" if result.baseline.mean > 0 else ""
    difference = f"{result.difference:+.4g} [{result.ci_low:+.4g}, {result.ci_high:+.4g}]{relative}"
    verdict = result.verdict if gated else UNGATED_VERDICTS.get(result.verdict, result.verdict)
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
    lines += [_row(name, result, name == judgement.metric) for name, result in judgement.rows.items()]
    if judgement.held_out is not None:
        lines.append(_row("held-out score", judgement.held_out, gated=False))
    lines.append("")
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


def _load_sides(args: argparse.Namespace, config: Config) -> tuple[str, Evaluation, str | None, Evaluation]:
    """The baseline's commit and evaluation; the change's commit (None: the workspace) and evaluation."""
    path = config.paths.eval_metrics
    label = args.baseline or config.compare.baseline
    commit = resolve_revision(label)
    baseline = evaluation_at(commit, path, f"baseline '{label}'")
    if args.change:
        change_commit = resolve_revision(args.change)
        return commit, baseline, change_commit, evaluation_at(change_commit, path, f"'{args.change}'")
    check_reproduced()
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise StageFailed(f"{path} is missing: run the pipeline (dvc repro) first") from None
    return commit, baseline, None, _parse(text, f"the workspace's {path}")


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="reservoir-dqn compare",
        description="Per-seed results of a git revision (or DVC experiment) against the workspace, with intervals "
        "and a verdict per metric. Exit status: 0 no gated regression, 1 regression, 2 bad input, 3 cannot judge "
        "(too few seeds, or measured differently), 4 could not complete.",
    )
    add_config_arguments(parser)
    parser.add_argument("--baseline", help="git revision or DVC experiment (default: compare.baseline)")
    parser.add_argument("--change", help="git revision or DVC experiment to compare (default: the workspace)")
    parser.add_argument("--output", type=Path, help="also write the report (or the cannot-judge line) to this file")
    parser.add_argument(
        "--accept",
        action="append",
        default=[],
        metavar="KEY",
        help="a condition of measurement (or a prefix, e.g. env.reservoir) that may differ on purpose; repeatable",
    )
    args = parser.parse_args(argv)
    config = config_from_args(args)
    label = args.baseline or config.compare.baseline
    try:
        commit, baseline, change_commit, change = _load_sides(args, config)
        if baseline.env != change.env:
            raise CannotJudge(f"the baseline evaluated {baseline.env} and the change {change.env}: nothing to compare")
        judgement = judge(baseline, change, config, args.accept)
    except CannotJudge as error:
        if args.output is not None:
            write_text(args.output, f"cannot judge: {error}\n")
        raise
    report = markdown_report(
        label, args.change or "the workspace", baseline, change, judgement, param_changes(commit, change_commit)
    )
    print(report)
    if args.output is not None:
        write_text(args.output, report)
    status = exit_status(judgement)
    if status == Exit.REGRESSION:
        gated = judgement.gated
        print(
            f"error: {judgement.metric} regressed by more than {judgement.tolerance:g}: {gated.difference:+.4g} "
            f"(upper bound {gated.ci_high:+.4g}, p = {gated.p:.3g})",
            file=sys.stderr,
        )
    return status


def exit_status(judgement: Judgement) -> Exit:
    """The gate's status: 1 for a regression of the gated metric, else 0 (improvement, within tolerance, unclear)."""
    return Exit.REGRESSION if judgement.gated.verdict == "regression" else Exit.OK


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)


if __name__ == "__main__":
    exit_process(main())
