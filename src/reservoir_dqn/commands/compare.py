"""``reservoir-dqn compare``: how a change moved the metrics, with statistics over seeds, and the CI gate.

The command finds the two sides and reports; the judgement is :mod:`reservoir_dqn.commands.verdict`'s.
It reads the per-seed results (``metrics/eval.json``, final networks, test episodes) of a
baseline revision (a git revision or a DVC experiment) and of the workspace (or of another
revision, ``--change``). A workspace whose params.yaml or code did not produce its metrics
(``dvc status`` is not clean, as after a failed ``dvc exp run -S``) is refused, so one run's
metrics are never paired with another's params.

The parameters that differ from the baseline (``dvc params diff``) are listed under the
table. With tracking on, the judgement is also left on the change's pipeline run
(:mod:`reservoir_dqn.tracking.comparisons`: per metric the baseline's mean, the difference with
its interval and the verdict, the report on the run's page); a store that fails costs a warning,
never the verdict. Exit status: 0 no gated regression, 1 a regression, 3 the sides cannot be judged.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reservoir_dqn.commands.exits import Exit
from reservoir_dqn.commands.plumbing import StageFailed, run_stage
from reservoir_dqn.commands.verdict import (
    CannotJudge,
    Judgement,
    compared_rows,
    exit_status,
    judge,
    markdown_report,
    parse_evaluation,
    verdict_word,
)
from reservoir_dqn.common.errors import first_line
from reservoir_dqn.common.files import write_text
from reservoir_dqn.common.process import exit_process
from reservoir_dqn.config import Config, ConfigError, add_config_arguments, config_from_args
from reservoir_dqn.evaluation.results import Evaluation


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
    return parse_evaluation(shown.stdout, f"{path} of {label}")


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
    return commit, baseline, None, parse_evaluation(text, f"the workspace's {path}")


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
        raise StageFailed(str(error), Exit.CANNOT_JUDGE) from None
    report = markdown_report(
        label, args.change or "the workspace", baseline, change, judgement, param_changes(commit, change_commit)
    )
    print(report)
    if args.output is not None:
        write_text(args.output, report)
    if config.tracking.enabled:
        track_judgement(config, judgement, change, f"{label} ({commit[:10]})", change_commit, report)
    status = exit_status(judgement)
    if status == Exit.REGRESSION:
        gated = judgement.gated
        print(
            f"error: {judgement.metric} regressed by more than {judgement.tolerance:g}: {gated.difference:+.4g} "
            f"(upper bound {gated.ci_high:+.4g}, p = {gated.p:.3g})",
            file=sys.stderr,
        )
    return status


def _change_run_ids(config: Config, change_commit: str | None) -> dict[str, str]:
    """The MLflow runs of the change's training (its train.json's), or none when it names none."""
    path = config.paths.train_metrics
    if change_commit is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError:
            return {}
    else:
        shown = subprocess.run(["git", "show", f"{change_commit}:{path}"], capture_output=True, text=True)
        text = shown.stdout if shown.returncode == 0 else "{}"
    try:
        run_ids = json.loads(text).get("run_ids") or {}
    except (ValueError, AttributeError):
        return {}
    return {str(key): str(value) for key, value in run_ids.items()} if isinstance(run_ids, dict) else {}


def track_judgement(
    config: Config, judgement: Judgement, change: Evaluation, baseline: str, change_commit: str | None, report: str
) -> None:
    """Leave the judgement on the change's pipeline run (:mod:`reservoir_dqn.tracking.comparisons`); warn, never
    fail, when that cannot be done."""
    from reservoir_dqn.tracking import Tracking  # MLflow only when tracking is on
    from reservoir_dqn.tracking.comparisons import MetricChange, log_comparison, store_exists
    from reservoir_dqn.tracking.outcomes import describe_experiment
    from reservoir_dqn.tracking.store import experiment_name

    run_ids = _change_run_ids(config, change_commit)
    if not run_ids.get("parent") or not store_exists(config):
        return
    changes = [
        MetricChange(name, result.baseline.mean, result.difference, result.ci_low, result.ci_high,
                     verdict_word(result, gated))
        for name, result, gated in compared_rows(judgement)
    ]  # fmt: skip
    try:  # stdout is the report alone (CI posts it): what tracking says goes to stderr
        tracking = Tracking.connect(config, experiment_name(change.env))
        if log_comparison(tracking, run_ids, changes, baseline, report):
            describe_experiment(tracking, change.headline)  # its views, the judgements' view among them
    except Exception as error:  # noqa: BLE001 - the store never decides the gate
        print(f"warning: the comparison was not tracked ({first_line(error)})", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)


if __name__ == "__main__":
    exit_process(main())
