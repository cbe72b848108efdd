"""The evaluation's results, typed: written by the evaluate stage, read by plot, compare and tune.

``metrics/eval.json`` is :meth:`Evaluation.to_json`: for the agents' final networks and for
their best-validated snapshots, every metric as per-seed values with mean, interquartile
mean and 95% Student-t interval over seeds; the baselines' metrics; what the score is
measured against; the conditions of the measurement (the MDP's params, the test scenarios,
the score's reference), which ``compare`` requires equal on both sides; which agent was
shipped. ``metrics/summary.json`` (:meth:`Evaluation.headline`)
holds the few numbers DVC tracks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reservoir_dqn.evaluation.metric_names import CONVERGED, held_out_name, stat_name
from reservoir_dqn.evaluation.scoring import EXACT_GAP, REGRET, Reference
from reservoir_dqn.evaluation.statistics import Summary, summarize
from reservoir_dqn.evaluation.trade_offs import TRADE_OFF_SUMMARY, TradeOffs

NETWORKS = ("final", "best")


# What summary.json (DVC), MLflow and TensorBoard carry of the held-out performance, for the final networks.
OPERATOR_FIGURES = ("reliability", "deficit_hm3", "energy_gwh")


@dataclass(frozen=True)
class HeldOutScore:
    """One policy on the held-out record: its pooled score (random 0, foresight 1) with the
    block-bootstrap interval over water years, its mean return per window and each window's score;
    and what an operator weighs beside the score: the environment's performance criteria pooled
    over the windows (the reservoir: reliability, resilience, vulnerability in hm3, deficit in hm3
    and energy in GWh per window) and each window's (reliability, deficit, energy). Files written
    before the criteria were measured hold none."""

    score: float
    score_lo: float
    score_hi: float
    mean_return: float
    per_window: tuple[float, ...]
    performance: dict[str, float] = field(default_factory=dict)
    performance_per_window: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "score_lo": self.score_lo,
            "score_hi": self.score_hi,
            "return": self.mean_return,
            "per_window": list(self.per_window),
            "performance": dict(self.performance),
            "performance_per_window": {key: list(values) for key, values in self.performance_per_window.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeldOutScore:
        return cls(
            float(data["score"]),
            float(data["score_lo"]),
            float(data["score_hi"]),
            float(data["return"]),
            tuple(float(value) for value in data["per_window"]),
            {key: float(value) for key, value in data.get("performance", {}).items()},
            {key: tuple(float(v) for v in values) for key, values in data.get("performance_per_window", {}).items()},
        )


@dataclass(frozen=True)
class Continuous:
    """The whole held-out period operated in one run, storage carried from year to year, as an operator would
    have lived it (each year played as the first of a fresh horizon; foresight one DP over the period).

    :ivar period: its first and last month, ``YYYY-MM``.
    :ivar baselines: per reference policy (``random`` and ``foresight`` included), its score over the period
        (random 0, foresight 1) and its criteria pooled over the months (deficit and energy per year).
    :ivar dqn: per network, the score and each criterion of each agent, summarised over seeds.
    """

    period: tuple[str, str]
    baselines: dict[str, dict[str, float]]
    dqn: dict[str, dict[str, Summary]]

    def to_json(self) -> dict[str, Any]:
        return {
            "period": list(self.period),
            "baselines": self.baselines,
            "dqn": {network: {key: row.as_dict() for key, row in rows.items()} for network, rows in self.dqn.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Continuous:
        first, last = data["period"]
        return cls(
            (str(first), str(last)),
            {name: {key: float(value) for key, value in row.items()} for name, row in data["baselines"].items()},
            {
                network: {key: Summary.from_dict(value) for key, value in rows.items()}
                for network, rows in data["dqn"].items()
            },
        )


@dataclass(frozen=True)
class HeldOut:
    """Every policy replaying the held-out record (:mod:`reservoir_dqn.evaluation.reoperation`).

    :ivar windows: each window's first month.
    :ivar baselines: per reference policy (``sdp``, ``sdp_independent``, ``sop``, ``random``, ``foresight``).
    :ivar dqn: per network, the agents' mean (their window-year returns averaged over seeds).
    :ivar dqn_per_seed: per network, each agent's pooled score, summarised over seeds.
    :ivar dqn_over_sdp: per network, the agents' mean score over the Markov SDP's, with its
        block-bootstrap interval, as ``(ratio, low, high)``.
    :ivar dqn_performance: per network, each performance criterion of each agent, summarised over seeds
        (the ``dqn`` rows hold their means).
    :ivar continuous: the held-out period in one run (files written before it was measured hold none).
    """

    windows: tuple[str, ...]
    block_years: int
    resamples: int
    baselines: dict[str, HeldOutScore]
    dqn: dict[str, HeldOutScore]
    dqn_per_seed: dict[str, Summary]
    dqn_over_sdp: dict[str, tuple[float, float, float]]
    dqn_performance: dict[str, dict[str, Summary]] = field(default_factory=dict)
    continuous: Continuous | None = None

    def metrics(self) -> dict[str, float]:
        """The held-out figures that ``metrics/summary.json`` (DVC), MLflow and TensorBoard track, named here once.

        ``held_out_score`` with its interval (``_lo``, ``_hi``): the agents' final networks, their
        window-year returns averaged over seeds; ``held_out_over_sdp``: that score over the Markov
        SDP's, with its interval; ``held_out_<policy>``: each reference policy's score (random is 0
        and foresight 1 by definition, so neither is listed); ``held_out_reliability``, ``held_out_deficit_hm3``
        and ``held_out_energy_gwh``: the final networks' (mean of seeds), and ``held_out_sdp_reliability``,
        where the record was replayed with them; ``held_out_continuous_score`` and ``held_out_continuous_sdp``: the
        final networks' (mean of seeds) and the Markov SDP's score on the period operated in one run.
        """
        final = self.dqn["final"]
        ratio, low, high = self.dqn_over_sdp["final"]
        values = {
            held_out_name("score"): final.score,
            held_out_name("score", "ci_low"): final.score_lo,
            held_out_name("score", "ci_high"): final.score_hi,
            held_out_name("over_sdp"): ratio,
            held_out_name("over_sdp", "ci_low"): low,
            held_out_name("over_sdp", "ci_high"): high,
        }
        values |= {held_out_name(key): final.performance[key] for key in OPERATOR_FIGURES if key in final.performance}
        sdp = self.baselines.get("sdp")
        if sdp is not None and "reliability" in sdp.performance:
            values[held_out_name("sdp_reliability")] = sdp.performance["reliability"]
        if self.continuous is not None:
            values[held_out_name("continuous_score")] = self.continuous.dqn["final"]["score"].mean
            if "sdp" in self.continuous.baselines:
                values[held_out_name("continuous_sdp")] = self.continuous.baselines["sdp"]["score"]
        return values | {
            held_out_name(name): score.score
            for name, score in self.baselines.items()
            if name not in ("random", "foresight")
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "windows": list(self.windows),
            "block_years": self.block_years,
            "resamples": self.resamples,
            "baselines": {name: score.as_dict() for name, score in self.baselines.items()},
            "dqn": {network: score.as_dict() for network, score in self.dqn.items()},
            "dqn_per_seed": {network: summary.as_dict() for network, summary in self.dqn_per_seed.items()},
            "dqn_over_sdp": {
                network: {"ratio": ratio, "low": low, "high": high}
                for network, (ratio, low, high) in self.dqn_over_sdp.items()
            },
            "dqn_performance": {
                network: {key: summary.as_dict() for key, summary in criteria.items()}
                for network, criteria in self.dqn_performance.items()
            },
        } | ({} if self.continuous is None else {"continuous": self.continuous.to_json()})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HeldOut:
        return cls(
            windows=tuple(data["windows"]),
            block_years=int(data["block_years"]),
            resamples=int(data["resamples"]),
            baselines={name: HeldOutScore.from_dict(score) for name, score in data["baselines"].items()},
            dqn={network: HeldOutScore.from_dict(score) for network, score in data["dqn"].items()},
            dqn_per_seed={network: Summary.from_dict(summary) for network, summary in data["dqn_per_seed"].items()},
            dqn_over_sdp={
                network: (float(value["ratio"]), float(value["low"]), float(value["high"]))
                for network, value in data["dqn_over_sdp"].items()
            },
            dqn_performance={
                network: {key: Summary.from_dict(summary) for key, summary in criteria.items()}
                for network, criteria in data.get("dqn_performance", {}).items()
            },
            continuous=Continuous.from_json(data["continuous"]) if "continuous" in data else None,
        )


@dataclass(frozen=True)
class Evaluation:
    """Every policy's results on the same test scenarios.

    :ivar agents: per network (``final``, ``best``), per metric, the summary over seeds.
    :ivar baselines: per baseline policy, its metrics (score included).
    :ivar headline: the environment profile's headline metric names, main one first.
    :ivar conditions: dotted keys -> values of what the results were measured under: the
        MDP's params, the test scenarios and the score's reference (``None`` in files
        written before they were recorded).
    :ivar held_out: every policy replaying the held-out record (a record-driven reservoir
        with held-out years; else ``None``).
    :ivar converged_at_frames: per agent, the frames at which its training converged (``None``: it had not);
        ``None`` in files written before training said so.
    :ivar trade_offs: the exact front of the reward's trade-off and the policies on it (an environment with one;
        else, and in files written before it was measured, ``None``).
    """

    env: str
    seeds: int
    episodes: int
    first_seed: int
    reference: Reference
    optimum_label: str
    headline: tuple[str, ...]
    agents: dict[str, dict[str, Summary]]
    baselines: dict[str, dict[str, float]]
    shipped_agent: int
    shipped_network: str
    conditions: dict[str, Any] | None
    held_out: HeldOut | None = None
    converged_at_frames: tuple[int | None, ...] | None = None
    trade_offs: TradeOffs | None = None

    @property
    def converged(self) -> str:
        """``3 of 5 agents converged`` (where the training said), else an empty string."""
        frames = self.converged_at_frames
        if frames is None:
            return ""
        return f"{sum(value is not None for value in frames)} of {len(frames)} agents converged"

    @classmethod
    def assemble(
        cls,
        env: str,
        first_seed: int,
        reference: Reference,
        optimum_label: str,
        headline: tuple[str, ...],
        per_agent: dict[str, list[dict[str, float]]],
        baselines: dict[str, dict[str, float]],
        shipped: tuple[int, str],
        episodes: int,
        settings: dict[str, Any],
        ranges: Mapping[str, tuple[float, float]] | None = None,
    ) -> Evaluation:
        """Summaries over seeds of the per-agent metrics (score included) of each network.

        :param settings: the params that define the environment's MDP (its profile's ``settings``).
        :param ranges: ``(low, high)`` of the metrics that have a range (the profile's declared
            :attr:`~reservoir_dqn.envs.EnvProfile.metrics`); their intervals are clipped to it.
        """
        ranges = ranges or {}
        agents = {
            network: {name: summarize([row[name] for row in rows], *ranges.get(name, ())) for name in rows[0]}
            for network, rows in per_agent.items()
        }
        seeds = len(next(iter(per_agent.values())))
        conditions = settings | {
            "evaluate.seed": first_seed,
            "evaluate.episodes": episodes,
            "score.random_return": reference.random_return,
            "score.optimum_return": reference.optimum_return,
        }
        return cls(
            env,
            seeds,
            episodes,
            first_seed,
            reference,
            optimum_label,
            headline,
            agents,
            baselines,
            *shipped,
            conditions,
        )

    def metric(self, name: str, network: str = "final") -> Summary:
        return self.agents[network][name]

    def shipped_scores(self) -> tuple[float, ...]:
        """Each seed's headline test score, of the network type that is shipped: a registered version's evidence."""
        return self.metric(self.headline[0], self.shipped_network).per_seed

    def headline_metrics(self) -> dict[str, float | None]:
        """The numbers DVC tracks (``metrics/summary.json``).

        The main metric with its 95% Student-t interval over seeds (``<name>_lo``, ``<name>_hi``), then the others,
        then the held-out record's figures where there is one (:meth:`HeldOut.metrics`), and the trade-off's mean
        utility loss and certificate where there is an exact front (MLflow has its interval and largest loss too:
        ``dvc exp show`` stays within 120 columns).
        """
        main, *others = self.headline
        summary = self.metric(main)
        values: dict[str, float | None] = {
            stat_name(main): summary.mean,
            stat_name(main, "ci_low"): summary.ci_low,
            stat_name(main, "ci_high"): summary.ci_high,
        }
        values |= {stat_name(name): self.metric(name).mean for name in others}
        values |= self.optimum_metrics()
        if self.converged_at_frames is not None:
            values[CONVERGED] = float(sum(frames is not None for frames in self.converged_at_frames))
        if self.held_out is not None:
            values |= self.held_out.metrics()
        return values | {name: value for name, value in self.trade_off_metrics().items() if name in TRADE_OFF_SUMMARY}

    def trade_off_metrics(self) -> dict[str, float]:
        """The trade-off's figures where the evaluate stage placed the agents on an exact front
        (:meth:`TradeOffs.metrics`); else none."""
        return {} if self.trade_offs is None else self.trade_offs.metrics(self.agents["final"])

    def optimum_metrics(self) -> dict[str, float]:
        """The final networks' paired regret with its interval over seeds (``regret``, ``_lo``, ``_hi``) and their
        exact gap to the optimum (``exact_gap``), where the environment has them; named here once for DVC and MLflow."""
        final = self.agents["final"]
        values: dict[str, float] = {}
        if REGRET in final:
            regret = final[REGRET]
            values[stat_name(REGRET)] = regret.mean
            if regret.ci_low is not None and regret.ci_high is not None:
                values |= {stat_name(REGRET, "ci_low"): regret.ci_low, stat_name(REGRET, "ci_high"): regret.ci_high}
        if EXACT_GAP in final:
            values[stat_name(EXACT_GAP)] = final[EXACT_GAP].mean
        return values

    def to_json(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "seeds": self.seeds,
            "episodes": self.episodes,
            "first_seed": self.first_seed,
            "score_reference": {
                "random_return": self.reference.random_return,
                "optimum_return": self.reference.optimum_return,
                "optimum": self.optimum_label,
            },
            "headline": list(self.headline),
            "shipped": {"agent": self.shipped_agent, "network": self.shipped_network},
            "dqn": {
                network: {name: summary.as_dict() for name, summary in metrics.items()}
                for network, metrics in self.agents.items()
            },
            "baselines": self.baselines,
            "conditions": self.conditions,
            **({} if self.held_out is None else {"held_out": self.held_out.to_json()}),
            **({} if self.converged_at_frames is None else {"converged_at_frames": list(self.converged_at_frames)}),
            **({} if self.trade_offs is None else {"trade_offs": self.trade_offs.to_json()}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evaluation:
        reference = data["score_reference"]
        return cls(
            env=data["env"],
            seeds=int(data["seeds"]),
            episodes=int(data["episodes"]),
            first_seed=int(data["first_seed"]),
            reference=Reference(float(reference["random_return"]), float(reference["optimum_return"])),
            optimum_label=str(reference["optimum"]),
            headline=tuple(data["headline"]),
            agents={
                network: {name: Summary.from_dict(summary) for name, summary in metrics.items()}
                for network, metrics in data["dqn"].items()
            },
            baselines={name: dict(values) for name, values in data["baselines"].items()},
            shipped_agent=int(data["shipped"]["agent"]),
            shipped_network=str(data["shipped"]["network"]),
            conditions=data.get("conditions"),
            held_out=HeldOut.from_json(data["held_out"]) if "held_out" in data else None,
            converged_at_frames=tuple(data["converged_at_frames"]) if "converged_at_frames" in data else None,
            trade_offs=TradeOffs.from_json(data["trade_offs"]) if "trade_offs" in data else None,
        )
