"""bench/results/benchmark.md: the tables of bench/results/benchmark.json, for people."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def cell(stats: dict[str, float] | None, digits: int = 1) -> str:
    if not stats:
        return "-"
    return f"{stats['median']:,.{digits}f} ({stats['min']:,.{digits}f}-{stats['max']:,.{digits}f}, n={stats['n']})"


def _header(section: dict[str, Any]) -> str:
    m = section["machine"]
    return (
        f"_{m['date']}; {m['cores']} cores, {m['torch_threads']} torch thread(s) in training, torch {m['torch']}, "
        f"torchrl {m['torchrl']}. Median (min-max, n runs)._"
    )


def _section(title: str, section: dict[str, Any], columns: Sequence[str] = (), intro: str = "") -> list[str]:
    """A section's opening: its title, the machine it was measured on, a paragraph, its table's head."""
    lines = [f"## {title}", "", _header(section), ""]
    if intro:
        lines += [intro, ""]
    if columns:
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines


def markdown(results: dict[str, Any]) -> str:
    """Every measured section as a table, with the date and machine it was measured on."""
    lines = ["# Benchmarks", "", "Written by `make bench` (`bench/run.py`); the raw numbers are in benchmark.json.", ""]
    if "seeds" in results:
        s = results["seeds"]
        lines += _section(
            "Seeds trained together (reservoir, 30,000 frames per seed)",
            s,
            ("seeds", "whole train process s", "training loop s", "peak RSS MiB", "process time / 1 seed"),
        )
        lines += [
            f"| {count} | {cell(s[count]['process_s'])} | {cell(s[count]['loop_s'])} | "
            f"{cell(s[count]['peak_rss_mb'], 0)} | {s['ratio_to_one_seed'][count]:.2f}x |"
            for count in s["ratio_to_one_seed"]
        ]
        lines += ["", "![seeds](seeds.png)", ""]
    if "reservoir" in results:
        r = results["reservoir"]
        lines += _section(
            "Reservoir, default settings (100,000 frames x 5 seeds)",
            r,
            (
                "master seed",
                "agent",
                "final: fraction of SDP optimum",
                "best snapshot",
                "final score",
                "best score",
                "best at frames",
            ),
        )
        for run in r["runs"]:
            lines += [
                f"| {run['seed']} | {a['agent']} | {a['final_fraction']:.4f} | {a['best_fraction']:.4f} | "
                f"{a['final_score']:.4f} | {a['best_score']:.4f} | {a['best_validation_frames']:,} |"
                for a in run["agents"]
            ]
        lines += [
            "",
            f"Final network, fraction of the optimum over all {r['agents']} agents: "
            f"{cell(r['final_fraction'], 4)}; at least 0.95: {r['final_at_least_0.95']} of {r['agents']}.",
            "",
        ]
        if "master_seed_change" in r:
            change = r["master_seed_change"]
            lines += [
                f"The CI gate on master seed {change['change_seed']} against master seed {change['baseline_seed']} "
                "(a change that only moves the seeds):",
                "",
                "| gated metric | difference of means | p of the verdict's test | verdict |",
                "|---|---|---|---|",
                *(
                    f"| {name} | {v['difference']:+.4g} | {v['p']:.3f} | {v['verdict']} |"
                    for name, v in change["verdicts"].items()
                ),
                "",
            ]
    if "cartpole" in results:
        c = results["cartpole"]
        lines += _section(
            "CartPole-v1, the recipe (5 seeds, stop at a validation return of 475, 50,000 frames at most)",
            c,
            ("agent", "validation reached 475 at frames", "after s", "final greedy mean, 100 test episodes"),
        )
        lines += [
            f"| {a['agent']} | {a['stopped_at_frames'] or 'not reached'} | {a['stopped_after_seconds'] or '-'} | "
            f"{a['final_test_mean']:.1f} |"
            for a in c["agents"]
        ]
        lines += [
            "",
            f"Solved (final >= 475): {c['solved_agents']} of {len(c['agents'])}. Whole train process "
            f"{cell(c['process_s'])} s, training loop {cell(c['loop_s'])} s (periodic validation "
            f"{cell(c['validation_s'])} s): process / loop {cell(c['process_over_loop'], 2)}.",
            "",
        ]
        if "full_50k" in c:
            f = c["full_50k"]
            lines += [
                "All 50,000 frames, no early stop (5 seeds): whole train process "
                f"{cell(f['process_s'])} s, training loop {cell(f['loop_s'])} s (periodic validation "
                f"{cell(f['validation_s'])} s): process / loop {cell(f['process_over_loop'], 2)}.",
                "",
            ]
    if "repro" in results:
        lines += _section(
            "Default `dvc repro` (train, evaluate, plot; 5 seeds)",
            results["repro"],
            intro=f"Wall time {cell(results['repro']['wall_s'])} s.",
        )
    if "tune" in results:
        t = results["tune"]
        lines += _section(
            "A 12-trial study (`reservoir-dqn tune`, SQLite storage)",
            t,
            ("workers", "wall s"),
            intro=f"Trials: {', '.join(t['trial_overrides'])}.",
        )
        lines += [f"| {w} | {cell(t[w]['wall_s'])} |" for w in ("1", "2")]
        lines.append("")
    if "gate" in results:
        g = results["gate"]
        lines += _section(
            "False alarms of the CI gate",
            g,
            ("metric", "20 seeds: median (min-max)", "false alarms"),
            intro=f"{g['pairs']} pairs of disjoint 5-seed groups drawn from one 20-seed default run "
            "(final networks, test episodes); a pair is a false alarm when the gate calls it a regression.",
        )
        lines += [
            f"| {name} | {cell(g['pool'][name], 4)} | {rate:.2%} |" for name, rate in g["false_alarm_rate"].items()
        ]
        for name, drop in g.get("largest_drop", {}).items():
            lines += [
                "",
                f"The largest drop of `{name}` in any pair was {drop:.4f}, against a tolerance of "
                f"{g['tolerance']:g}"
                + (": the tolerance alone rules out an alarm at an exact no-change." if drop <= g["tolerance"] else ".")
                + " How often the gate calls drops near the tolerance a regression is `bench/results/gate.md` "
                "(`python -m bench.gate`).",
            ]
        lines.append("")
    if "throughput" in results:
        t = results["throughput"]
        lines += _section("Throughput (reservoir)", t, ("measurement", "median (min-max, n)"))
        lines += [f"| env steps/s, batch {b} | {cell(v, 0)} |" for b, v in t["env_steps_per_s"].items()]
        lines += [
            f"| {'collection frames/s' if 'collection' in k else 'optimiser updates/s'}, "
            f"{k.split('_')[-1]} agent(s) | {cell(v, 0)} |"
            for k, v in t["updates_per_s"].items()
        ]
        lines.append("")
    if "tracking" in results:
        tr = results["tracking"]
        lines += _section(
            "Tracking overhead (5 seeds, 30,000 frames)",
            tr,
            ("tracking", "training loop s", "whole train process s"),
        )
        lines += [f"| {k} | {cell(tr[k]['loop_s'])} | {cell(tr[k]['process_s'])} |" for k in ("off", "on")]
        lines += [
            "",
            f"Overhead: {tr['loop_overhead']:+.1%} of the loop, {tr['process_overhead']:+.1%} of the "
            "process (model logging and uploads included).",
            "",
        ]
    return "\n".join(lines)
