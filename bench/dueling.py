"""The dueling head against the plain one: 5 seeds each on the reservoir and on CartPole, as a user runs them.

Usage (from the repository root; about 10 minutes on 2 cores)::

    .venv/bin/python -m bench.dueling

Each environment's settings (the default params; CartPole's recipe) are trained and evaluated
with ``dqn.head=plain`` and ``dqn.head=dueling`` and nothing else changed (tracking off), so the
agents' seeds, exploration and replay draws are the same. Reported: the final networks' and the
best snapshots' test score (reservoir: 0 random, 1 the SDP optimum; CartPole: 1 = 500) per
seed with 95% Student-t intervals, and the gate's verdict on the final networks (Welch's
one-sided tests at the gate's tolerance, 0.02 of score). Writes ``bench/results/dueling.{json,md}``.
"""

from __future__ import annotations

from typing import Any

from bench.common import QUIET, REPO, RESULTS, machine, run_pipeline, write_results
from reservoir_dqn.commands.recipe import overrides
from reservoir_dqn.config import load_config
from reservoir_dqn.evaluation.statistics import compare

ENVIRONMENTS = {"reservoir": [], "CartPole-v1": overrides("CartPole-v1", REPO / "recipes")}
HEADS = ("plain", "dueling")


def run(settings: list[str], head: str) -> dict[str, Any]:
    """One 5-seed training and evaluation with ``dqn.head=head``."""
    result = run_pipeline([*QUIET, *settings, f"dqn.head={head}"])
    assert result.eval is not None
    final, best = result.eval["dqn"]["final"]["score"], result.eval["dqn"]["best"]["score"]
    return {
        "final": {key: final[key] for key in ("per_seed", "mean", "ci_low", "ci_high")},
        "best": {key: best[key] for key in ("per_seed", "mean", "ci_low", "ci_high")},
        "train_process_s": round(result.wall_s, 1),
        "frames_per_agent": result.train["frames"],
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Dueling head against the plain head: 5 seeds each",
        "",
        f"Measured on {results['machine']['cpu']} ({results['machine']['cores']} cores), "
        f"{results['machine']['date']}, with `.venv/bin/python -m bench.dueling`: one 5-seed run per "
        "environment and head, tracking off, only `dqn.head` changed. Test scores over the evaluation stage's "
        "episodes (reservoir: 0 random, 1 the SDP optimum; CartPole: the return over 500); 95% Student-t "
        "intervals over seeds. Verdict: the gate's Welch tests on the final networks at tolerance "
        f"{results['tolerance']}.",
        "",
        "| environment | head | final networks: mean [95% CI] | per seed | best snapshots: mean | train process s |",
        "|---|---|---|---|---|---|",
    ]
    for env, row in results["environments"].items():
        for head in HEADS:
            final, best = row[head]["final"], row[head]["best"]
            lines.append(
                f"| {env} | {head} | {final['mean']:.4f} [{final['ci_low']:.4f}, {final['ci_high']:.4f}] "
                f"| {', '.join(f'{value:.4f}' for value in final['per_seed'])} | {best['mean']:.4f} "
                f"| {row[head]['train_process_s']:.0f} |"
            )
    lines += ["", "| environment | dueling - plain (final networks) | 90% interval | verdict |", "|---|---|---|---|"]
    for env, row in results["environments"].items():
        verdict = row["verdict"]
        lines.append(
            f"| {env} | {verdict['difference']:+.4f} | [{verdict['low']:+.4f}, {verdict['high']:+.4f}] "
            f"| {verdict['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    tolerance = load_config(REPO / "params.yaml").compare.tolerance
    environments: dict[str, Any] = {}
    for env, settings in ENVIRONMENTS.items():
        row = {head: run(settings, head) for head in HEADS}
        verdict = compare(row["plain"]["final"]["per_seed"], row["dueling"]["final"]["per_seed"], tolerance)
        row["verdict"] = {
            "difference": verdict.difference,
            "low": verdict.ci_low,
            "high": verdict.ci_high,
            "verdict": verdict.verdict,
        }
        environments[env] = row
    results = {"machine": machine(), "tolerance": tolerance, "environments": environments}
    write_results("dueling", results)
    (RESULTS / "dueling.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
