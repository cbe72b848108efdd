"""``reservoir-dqn compare``: how a change moved the metrics, as a markdown table with gates.

Built on DVC's own diffs: ``dvc metrics diff <baseline> --json --all`` and ``dvc params
diff <baseline> --json`` compare the workspace with a git revision (or a DVC experiment).
Each metric in ``compare.gates`` (params.yaml) is "higher is better" with the largest
relative drop it may take; the command exits 1 when any gate fails, so CI fails too.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reservoir_dqn.config import add_config_arguments, config_from_args
from reservoir_dqn.stages import StageFailed, run_stage

EXIT_REGRESSION = 1


@dataclass(frozen=True)
class MetricChange:
    """One metric in the baseline and in the workspace."""

    path: str
    name: str
    old: Any
    new: Any

    @property
    def relative_change(self) -> float | None:
        if not _is_number(self.old) or not _is_number(self.new) or self.old == 0:
            return None
        return (float(self.new) - float(self.old)) / abs(float(self.old))


@dataclass(frozen=True)
class GateResult:
    metric: str
    max_drop: float
    change: MetricChange | None
    passed: bool
    reason: str


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _dvc(*args: str) -> Any:
    """Run a dvc command of this environment and parse its JSON output."""
    result = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise StageFailed(f"dvc {' '.join(args)} failed: {message[-1] if message else 'no output'}")
    return json.loads(result.stdout or "{}")


def resolve_revision(revision: str) -> str:
    """A git revision as given, or the commit of the DVC experiment of that name."""
    probe = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"], capture_output=True, text=True
    )
    if probe.returncode == 0:
        return revision
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"], capture_output=True, text=True
    )
    for line in refs.stdout.splitlines():
        ref, commit = line.split()
        if ref.rsplit("/", 1)[-1] == revision:
            return commit
    raise StageFailed(f"baseline '{revision}' is neither a git revision nor a DVC experiment of this repository")


def metric_changes(baseline: str) -> list[MetricChange]:
    """Every metric of dvc.yaml in the baseline and the workspace (``dvc metrics diff --all``)."""
    diff = _dvc("metrics", "diff", baseline, "--json", "--all")
    return [
        MetricChange(path, name, values.get("old"), values.get("new"))
        for path, metrics in diff.items()
        for name, values in metrics.items()
    ]


def param_changes(baseline: str) -> list[tuple[str, str, Any, Any]]:
    """The parameters that differ from the baseline (``dvc params diff``)."""
    diff = _dvc("params", "diff", baseline, "--json")
    return [
        (path, name, values.get("old"), values.get("new"))
        for path, params in diff.items()
        for name, values in params.items()
    ]


def check_gates(changes: Sequence[MetricChange], gates: Mapping[str, float]) -> list[GateResult]:
    """A gated metric fails when it fell by more than its allowed share of the baseline, or vanished."""
    results = []
    for metric, max_drop in gates.items():
        change = next((c for c in changes if c.name == metric), None)
        if change is None or (change.old is None and change.new is None):
            # Not measured here, e.g. fraction_of_optimum on CartPole: shown, never failed.
            results.append(GateResult(metric, max_drop, None, True, "not measured in either revision"))
            continue
        if change.old is None:
            results.append(GateResult(metric, max_drop, change, True, "new metric, no baseline"))
        elif not _is_number(change.new):
            results.append(GateResult(metric, max_drop, change, False, "missing from the workspace"))
        else:
            relative = change.relative_change
            dropped = relative is not None and relative < -max_drop
            reason = "unchanged" if relative in (None, 0.0) else f"{relative:+.1%}"
            results.append(GateResult(metric, max_drop, change, not dropped, reason))
    return results


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if _is_number(value):
        return f"{value:.6g}"
    return str(value)


def markdown_report(
    baseline: str,
    changes: Sequence[MetricChange],
    params: Sequence[tuple[str, str, Any, Any]],
    gates: Sequence[GateResult],
) -> str:
    """The table a pull request shows: gates first, then every metric, then the params that changed."""
    lines = [f"### Metrics: workspace against `{baseline}`", ""]
    if gates:
        lines += ["| Gate | Allowed drop | Baseline | Workspace | Change | Result |", "|---|---|---|---|---|---|"]
        for gate in gates:
            old = _cell(gate.change.old if gate.change else None)
            new = _cell(gate.change.new if gate.change else None)
            verdict = "pass" if gate.passed else "**FAIL**"
            lines.append(f"| `{gate.metric}` | {gate.max_drop:.0%} | {old} | {new} | {gate.reason} | {verdict} |")
        lines.append("")
    lines += ["| File | Metric | Baseline | Workspace | Change |", "|---|---|---|---|---|"]
    for change in changes:
        relative = change.relative_change
        moved = "" if relative is None else f"{relative:+.1%}"
        lines.append(f"| {change.path} | `{change.name}` | {_cell(change.old)} | {_cell(change.new)} | {moved} |")
    lines.append("")
    if params:
        lines += ["| File | Param | Baseline | Workspace |", "|---|---|---|---|"]
        lines += [f"| {path} | `{name}` | {_cell(old)} | {_cell(new)} |" for path, name, old, new in params]
    else:
        lines.append(f"No parameter differs from `{baseline}`.")
    return "\n".join(lines) + "\n"


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="reservoir-dqn compare",
        description="Markdown table of params and metrics between a git revision and the workspace; "
        "exits 1 when a gated metric regresses (compare.gates in params.yaml).",
    )
    add_config_arguments(parser)
    parser.add_argument("--baseline", help="git revision or DVC experiment (default: compare.baseline)")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    baseline = args.baseline or config.compare.baseline
    revision = resolve_revision(baseline)
    changes = metric_changes(revision)
    gates = check_gates(changes, config.compare.gates)
    report = markdown_report(baseline, changes, param_changes(revision), gates)
    print(report)
    if args.output is not None:
        args.output.write_text(report, encoding="utf-8")
    failed = [gate for gate in gates if not gate.passed]
    for gate in failed:
        print(f"error: {gate.metric} regressed ({gate.reason}; allowed drop {gate.max_drop:.0%})", file=sys.stderr)
    return EXIT_REGRESSION if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    status = 0

    def body(arguments: Sequence[str] | None) -> None:
        nonlocal status
        status = run(arguments)

    return run_stage(body, argv) or status


if __name__ == "__main__":
    sys.exit(main())
