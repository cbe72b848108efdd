"""What the evaluate stage reports: the table a person reads, and the figures the parent run records."""

from __future__ import annotations

from collections.abc import Sequence

from reservoir_dqn.evaluation.metric_names import CONVERGED, TRAIN_MINUTES, best_snapshot_name, stat_name
from reservoir_dqn.evaluation.results import NETWORKS, Continuous, Evaluation, HeldOut
from reservoir_dqn.evaluation.scoring import (
    EXACT_GAP,
    EXACT_RETURN,
    EXACT_Z,
    REGRET,
    UTILITY_LOSS_MAX,
    UTILITY_LOSS_MEAN,
    UTILITY_LOSSES,
)
from reservoir_dqn.evaluation.statistics import Summary


def tracked_metrics(evaluation: Evaluation, train_minutes: float) -> dict[str, float]:
    """The parent run's metrics: each headline metric's mean, IQM and interval (final networks), the time, the
    regret to the optimum and the exact gap where there are, how many agents converged, the held-out record's
    figures where there is one (named as in ``summary.json``, :meth:`HeldOut.metrics`), and the trade-off's where
    there is an exact front (:meth:`Evaluation.trade_off_metrics`).

    Named as in ``metrics/summary.json`` (``score``, ``score_lo``, ``score_hi``, ``score_iqm``, ...;
    :mod:`reservoir_dqn.tracking.views`). Rounded to 4 significant digits, so that MLflow's runs
    table shows them whole (``eval.json``, a run artifact, keeps every digit).
    """
    metrics: dict[str, float] = {}
    for name in evaluation.headline:
        summary = evaluation.metric(name)
        metrics |= {stat_name(name): summary.mean, stat_name(name, "iqm"): summary.iqm}
        if summary.ci_low is not None and summary.ci_high is not None:
            metrics |= {stat_name(name, "ci_low"): summary.ci_low, stat_name(name, "ci_high"): summary.ci_high}
    main = evaluation.headline[0]
    metrics[best_snapshot_name(main)] = evaluation.metric(main, "best").mean
    metrics[TRAIN_MINUTES] = train_minutes
    metrics |= evaluation.optimum_metrics()
    if evaluation.converged_at_frames is not None:
        metrics[CONVERGED] = float(sum(frames is not None for frames in evaluation.converged_at_frames))
    if evaluation.held_out is not None:
        metrics |= evaluation.held_out.metrics()
    metrics |= evaluation.trade_off_metrics()
    return {name: float(f"{value:.4g}") for name, value in metrics.items()}


def _number(name: str, value: float) -> str:
    return f"{value:,.1f}" if name == "return" else f"{value:.3f}"


def _cell(name: str, summary: Summary) -> str:
    """A metric's mean over seeds, with its interval where there is one."""
    text = _number(name, summary.mean)
    if summary.ci_low is not None and summary.ci_high is not None:
        text += f" [{_number(name, summary.ci_low)}, {_number(name, summary.ci_high)}]"
    return text


def _aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """``rows`` (the header first) as indented lines: the first column left-aligned and the others right-aligned,
    each as wide as its widest cell and two spaces from the next, whatever the signs and magnitudes."""
    first, *widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        f"  {row[0]:<{first}}" + "".join(f"  {cell:>{width}}" for cell, width in zip(row[1:], widths, strict=True))
        for row in rows
    ]


def report(evaluation: Evaluation) -> str:
    """The table a person reads after the stage: each headline metric per policy, with its interval over seeds."""
    names = evaluation.headline
    rows = [["policy", *names]]
    for network in NETWORKS:
        label = "DQN, final networks" if network == "final" else "DQN, best snapshots"
        rows.append([label, *(_cell(name, evaluation.metric(name, network)) for name in names)])
    for policy, values in sorted(evaluation.baselines.items(), key=lambda item: -item[1][names[0]]):
        rows.append([policy, *(_number(name, values[name]) for name in names)])
    lines = [
        f"{evaluation.env}: {evaluation.seeds} agents x {evaluation.episodes} test episodes; "
        f"score 0 = random, 1 = {evaluation.optimum_label}",
        *_aligned(rows),
    ]
    lines.append(
        f"  DQN: mean [95% Student-t interval] over {evaluation.seeds} seeds. Shipped: "
        f"seed {evaluation.shipped_agent}'s {evaluation.shipped_network} network, the best on the validation seeds."
    )
    lines += optimum_report(evaluation)
    lines += trade_off_report(evaluation)
    if evaluation.held_out is not None:
        lines += ["", *held_out_report(evaluation.held_out, evaluation.seeds)]
    return "\n".join(lines)


def trade_off_report(evaluation: Evaluation) -> list[str]:
    """Where the reward trades objectives with an exact front: its size and certificate, and what the final networks
    and SOP lose to it over every weighting."""
    trade_offs = evaluation.trade_offs
    if trade_offs is None:
        return []
    final = evaluation.agents["final"]
    return [
        f"  Trade-off of energy against supply: the exact front has {len(trade_offs.vertices)} vertices, certified to "
        f"{trade_offs.certificate:.3g} reward units; over weightings uniform in [0, 1] the DQN final networks lose "
        f"{final[UTILITY_LOSS_MEAN].text()} of utility on average and {final[UTILITY_LOSS_MAX].text()} at most "
        f"(SOP: {trade_offs.sop[UTILITY_LOSSES[UTILITY_LOSS_MEAN]]:,.1f} and "
        f"{trade_offs.sop[UTILITY_LOSSES[UTILITY_LOSS_MAX]]:,.1f}; "
        "plots/front.png)"
    ]


def optimum_report(evaluation: Evaluation) -> list[str]:
    """The final networks' paired regret and exact account, where the environment has them."""
    final, lines = evaluation.agents["final"], []
    if REGRET in final:
        per_seed = ", ".join(f"{value:,.1f}" for value in final[REGRET].per_seed)
        lines.append(
            f"  DQN final networks' regret (the optimum's return minus theirs, scenario by scenario): "
            f"{final[REGRET].text()}; per seed: {per_seed}"
        )
    if EXACT_RETURN in final:
        largest = max(abs(value) for value in final[EXACT_Z].per_seed)
        lines.append(
            f"  Exact account (no sampling): expected return {final[EXACT_RETURN].text()} against the optimum's "
            f"{final[EXACT_RETURN].mean + final[EXACT_GAP].mean:,.1f}, a gap of {final[EXACT_GAP].text()}; "
            f"each agent's test mean is within {largest:.1f} standard errors of its exact value"
        )
    return lines


def held_out_report(held_out: HeldOut, seeds: int) -> list[str]:
    """The re-operation of the held-out record: each policy's score against foresight, with its interval."""
    first, last = held_out.windows[0], held_out.windows[-1]
    policies = [(f"DQN, {network} networks (mean of seeds)", score) for network, score in held_out.dqn.items()]
    policies += sorted(held_out.baselines.items(), key=lambda item: -item[1].score)
    criteria = [key for key, _, _ in CRITERIA if any(key in score.performance for _, score in policies)]
    rows = [["policy", "score [95% block bootstrap]", "return per window", *(HEADERS[key] for key in criteria)]]
    rows += [
        [
            label,
            f"{score.score:.3f} [{score.score_lo:.3f}, {score.score_hi:.3f}]",
            f"{score.mean_return:,.1f}",
            *(_criterion(key, score.performance) for key in criteria),
        ]
        for label, score in policies
    ]
    years = "" if held_out.continuous is None else " to ".join(held_out.continuous.period) + ", "
    lines = [
        f"held-out record: {years}{len(held_out.windows)} windows starting {first} to {last}; "
        "score 0 = random, 1 = foresight (deterministic DP knowing the inflows)",
        *_aligned(rows),
    ]
    for network, (value, low, high) in held_out.dqn_over_sdp.items():
        per_seed = ", ".join(f"{score:.3f}" for score in held_out.dqn_per_seed[network].per_seed)
        lines.append(
            f"  DQN {network} over the Markov SDP: {value:.3f} [{low:.3f}, {high:.3f}]; each seed's score against "
            f"foresight ({seeds}): {per_seed}"
        )
    for network, summaries in held_out.dqn_performance.items():
        shown = [
            f"{header} {summaries[key].text(3 if form == '.3f' else 1)}"
            for key, header, form in CRITERIA
            if key in summaries
        ]
        lines.append(f"  DQN {network}, over {seeds} seeds: " + "; ".join(shown))
    lines.append(f"  Intervals: moving blocks of {held_out.block_years} water years, {held_out.resamples:,} resamples.")
    if "random" in held_out.baselines and held_out.baselines["random"].performance:
        lines.append("  Random: its return is its exact expectation; its criteria, pooled over 100 seeded replays.")
    if held_out.continuous is not None:
        lines += ["", *continuous_report(held_out.continuous, seeds)]
    return lines


def continuous_report(continuous: Continuous, seeds: int) -> list[str]:
    """The held-out period operated in one run: each policy's score over it and its criteria per year."""
    first, last = continuous.period
    keys = [key for key, _, _ in CRITERIA if key in continuous.baselines.get("foresight", {})]
    headers = [HEADERS[key].replace("/window", "/year") for key in keys]
    rows = [["policy", "score", *headers]]
    for network, summaries in continuous.dqn.items():
        rows.append(
            [
                f"DQN, {network} networks ({seeds} seeds)",
                summaries["score"].text(3),
                *(summaries[key].text(3 if form == ".3f" else 1) for key, _, form in CRITERIA if key in keys),
            ]
        )
    ranked = sorted(continuous.baselines.items(), key=lambda item: -item[1]["score"])
    rows += [[name, f"{row['score']:.3f}", *(_criterion(key, row) for key in keys)] for name, row in ranked]
    return [
        f"held-out years in one run, {first} to {last}: storage carried from year to year, each year played as the "
        "first of a fresh horizon; score 0 = random, 1 = foresight over the whole period",
        *_aligned(rows),
    ]


# The held-out performance criteria the table shows: key, header, format.
CRITERIA = (
    ("reliability", "reliability", ".3f"),
    ("resilience", "resilience", ".3f"),
    ("vulnerability_hm3", "vulnerability hm3", ",.1f"),
    ("deficit_hm3", "deficit hm3/window", ",.1f"),
    ("energy_gwh", "energy GWh/window", ",.1f"),
)
HEADERS = {key: header for key, header, _ in CRITERIA}


def _criterion(key: str, performance: dict[str, float]) -> str:
    number = next(form for name, _, form in CRITERIA if name == key)
    return format(performance[key], number) if key in performance else "-"
