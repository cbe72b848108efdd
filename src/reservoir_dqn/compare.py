"""``reservoir-dqn compare``: how a change moved the metrics, with statistics over seeds, and the CI gate.

Reads the per-seed results (``metrics/eval.json``, final networks, test episodes) of a
baseline revision (a git revision or a DVC experiment) and of the workspace (or of another
revision, ``--change``). A workspace whose params.yaml or code did not produce its metrics
(``dvc status`` is not clean, as after a failed ``dvc exp run -S``) is refused, so one run's
metrics are never paired with another's params. For each
headline metric it shows both sides as a mean with its 95% bootstrap interval, the
difference with its interval, the one-sided permutation p-value, and a verdict:

- *regression*: the mean dropped by more than the gate's tolerance (``compare.gates``, a
  share of the baseline mean) **and** the drop is significant (``p < compare.significance``);
- *improvement*: the same, upwards;
- *within tolerance*: significant, but no larger than the tolerance (ungated metrics have none);
- *no significant change*: anything else, whatever the sign.

The command exits 1 only when a gated metric regressed; the parameters that differ from
the baseline (``dvc params diff``) are listed under the table.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reservoir_dqn.config import Config, ConfigError, add_config_arguments, config_from_args
from reservoir_dqn.files import read_json, write_text
from reservoir_dqn.process import exit_process
from reservoir_dqn.results import Evaluation
from reservoir_dqn.stages import StageFailed, run_stage
from reservoir_dqn.statistics import Comparison, Summary, compare

EXIT_REGRESSION = 1


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
    raise StageFailed(f"baseline '{revision}' is neither a git revision nor a DVC experiment of this repository")


def evaluation_at(commit: str, path: str, label: str) -> Evaluation:
    """The evaluation a revision committed at ``path``."""
    shown = subprocess.run(["git", "show", f"{commit}:{path}"], capture_output=True, text=True)
    if shown.returncode != 0:
        raise StageFailed(f"{label} has no {path}: run the pipeline there and commit its metrics")
    try:
        return Evaluation.from_json(json.loads(shown.stdout))
    except (ValueError, KeyError) as error:
        raise StageFailed(f"{path} of {label} is not an evaluation of this version ({error})") from None


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


def comparisons(baseline: Evaluation, change: Evaluation, config: Config) -> dict[str, Comparison]:
    """Every headline metric of the change against the baseline (gated ones with their tolerance)."""
    if baseline.env != change.env:
        raise StageFailed(f"the baseline evaluated {baseline.env} and the workspace {change.env}: nothing to compare")
    settings = config.compare
    unknown = [name for name in settings.gates if name not in change.headline]
    if unknown:
        raise StageFailed(
            f"compare.gates: {unknown} are not headline metrics of {change.env} ({list(change.headline)})"
        )
    return {
        name: compare(
            baseline.metric(name).per_seed,
            change.metric(name).per_seed,
            settings.gates.get(name, 0.0),
            settings.significance,
            settings.resamples,
        )
        for name in change.headline
        if name in baseline.agents["final"]
    }


def _interval(summary: Summary) -> str:
    text = f"{summary.mean:.4g}"
    return text if summary.ci_low is None else f"{text} [{summary.ci_low:.4g}, {summary.ci_high:.4g}]"


def markdown_report(
    label: str,
    change_label: str,
    baseline: Evaluation,
    change: Evaluation,
    results: dict[str, Comparison],
    gates: dict[str, float],
    significance: float,
    params: Sequence[tuple[str, Any, Any]],
) -> str:
    """The table a pull request shows: one row per headline metric, then the params that changed."""
    lines = [
        f"### {change.env}: {change_label} against `{label}`",
        "",
        f"Final networks on {change.episodes} test episodes; {baseline.seeds} baseline seeds, {change.seeds} "
        "change seeds; mean [95% bootstrap interval], one-sided permutation p-value.",
        "",
        "| metric | gate | baseline | change | difference [95% CI] | p | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        gate = f"-{gates[name]:.0%}" if name in gates else "not gated"
        interval = "" if result.ci_low is None else f" [{result.ci_low:+.4g}, {result.ci_high:+.4g}]"
        difference = f"{result.difference:+.4g}{interval} ({result.relative:+.1%})"
        p = result.p_lower if result.difference < 0 else result.p_higher
        verdict = f"**{result.verdict}**" if result.verdict in ("regression", "improvement") else result.verdict
        lines.append(
            f"| {name} | {gate} | {_interval(result.baseline)} | {_interval(result.change)} | {difference} | "
            f"{p:.3g} | {verdict} |"
        )
    lines.append("")
    smallest_p = 1 / math.comb(baseline.seeds + change.seeds, change.seeds)
    if smallest_p >= significance:
        lines += [
            f"With {baseline.seeds} and {change.seeds} seeds the smallest possible p is {smallest_p:.3g}, not below "
            f"{significance}: no change can be significant. Train 4 or more seeds a side (train.seeds).",
            "",
        ]
    if params:
        lines.append(
            f"Params that differ from `{label}`: " + ", ".join(f"`{k}` {old!r} -> {new!r}" for k, old, new in params)
        )
    else:
        lines.append(f"No parameter differs from `{label}`.")
    return "\n".join(lines) + "\n"


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="reservoir-dqn compare",
        description="Per-seed results of a git revision (or DVC experiment) against the workspace, with intervals "
        "and a verdict per metric; exits 1 when a gated metric (compare.gates) regressed significantly.",
    )
    add_config_arguments(parser)
    parser.add_argument("--baseline", help="git revision or DVC experiment (default: compare.baseline)")
    parser.add_argument("--change", help="git revision or DVC experiment to compare (default: the workspace)")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    label = args.baseline or config.compare.baseline
    commit = resolve_revision(label)
    path = config.paths.eval_metrics
    baseline = evaluation_at(commit, path, f"baseline '{label}'")
    if args.change:
        change_commit = resolve_revision(args.change)
        change = evaluation_at(change_commit, path, f"'{args.change}'")
    else:
        change_commit = None
        check_reproduced()
        try:
            change = Evaluation.from_json(read_json(Path(path)))
        except FileNotFoundError:
            raise StageFailed(f"{path} is missing: run the pipeline (dvc repro) first") from None
    results = comparisons(baseline, change, config)
    gates = dict(config.compare.gates)
    changes = param_changes(commit, change_commit)
    report = markdown_report(
        label, args.change or "the workspace", baseline, change, results, gates, config.compare.significance, changes
    )
    print(report)
    if args.output is not None:
        write_text(args.output, report)
    failed = [name for name, result in results.items() if name in gates and result.verdict == "regression"]
    for name in failed:
        result = results[name]
        print(
            f"error: {name} regressed: {result.relative:+.1%} (p = {result.p_lower:.3g}; allowed drop "
            f"{gates[name]:.0%})",
            file=sys.stderr,
        )
    return EXIT_REGRESSION if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    status = 0

    def body(arguments: Sequence[str] | None) -> None:
        nonlocal status
        status = run(arguments)

    return run_stage(body, argv) or status


if __name__ == "__main__":
    exit_process(main())
