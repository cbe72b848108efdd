"""The exact front of the trade-off a reward makes, and where the policies sit on it: ``eval.json``'s ``trade_offs``.

Written by the evaluate stage where the environment's profile computes a front
(:meth:`~reservoir_dqn.envs.EnvProfile.trade_offs`; the reservoir: energy against supply deficit,
:mod:`reservoir_dqn.envs.reservoir.front`); read by plot (``front.png``), the report, DVC's and
MLflow's figures (:meth:`TradeOffs.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reservoir_dqn.evaluation.metric_names import FRONT_CERTIFICATE, stat_name
from reservoir_dqn.evaluation.scoring import UTILITY_LOSS_MAX, UTILITY_LOSS_MEAN
from reservoir_dqn.evaluation.statistics import Summary

# The trade-off's figures metrics/summary.json carries (DVC's columns); MLflow carries all of TradeOffs.metrics.
TRADE_OFF_SUMMARY = (UTILITY_LOSS_MEAN, FRONT_CERTIFICATE)


@dataclass(frozen=True)
class TradeOffs:
    """The exact front of the objectives the reward trades (the reservoir: energy against supply deficit,
    :mod:`reservoir_dqn.envs.reservoir.front`) and where the policies sit on it, in engineering units per year.

    :ivar vertices: the front's vertices in order of their weight ``lam`` (each: ``lam`` and the yearly figures).
    :ivar corners: weights at which the search solved between two vertices.
    :ivar certificate: the largest utility any weighting could still gain over the front (reward units).
    :ivar certificate_share: that, as a share of the configured optimum's utility.
    :ivar solves: SDP solves the search made.
    :ivar configured_optimum: the configured reward's optimum (``lam = 1/2``): its utility and yearly figures.
    :ivar sop: the standard operating policy's yearly figures and utility losses.
    :ivar agents: per network, each agent's yearly figures and utility losses (its metrics carry the losses too).
    """

    objectives: str
    scalarisation: str
    vertices: tuple[dict[str, float], ...]
    corners: tuple[float, ...]
    certificate: float
    certificate_share: float
    solves: int
    configured_optimum: dict[str, float]
    sop: dict[str, float]
    agents: dict[str, tuple[dict[str, float], ...]]

    @classmethod
    def from_described(cls, described: dict[str, Any]) -> TradeOffs:
        """From what the environment's profile describes (one ``agents`` entry per network and agent)."""
        agents: dict[str, list[dict[str, float]]] = {}
        for entry in described["agents"]:
            values = {key: float(value) for key, value in entry.items() if key not in ("model", "seed_index")}
            agents.setdefault(entry["model"], []).append(values)
        return cls.from_json(described | {"agents": agents})

    def metrics(self, final: dict[str, Summary]) -> dict[str, float]:
        """The trade-off figures MLflow carries (``summary.json``: the mean loss and the certificate): the final
        networks' utility loss averaged over weightings, with its interval over seeds
        (``utility_loss_mean``, ``_lo``, ``_hi``), and at the weighting where it is largest (``utility_loss_max``),
        both in reward units; and the front's certificate (``front_certificate``: the largest utility any weighting
        could still gain over it). Named here once for DVC and MLflow; ``eval.json`` keeps the rest (the front's
        vertices, every agent's point), and ``compare`` shows both losses, ungated.

        :param final: the final networks' metrics, summarised over seeds.
        """
        mean, largest = final[UTILITY_LOSS_MEAN], final[UTILITY_LOSS_MAX]
        values = {stat_name(UTILITY_LOSS_MEAN): mean.mean, stat_name(UTILITY_LOSS_MAX): largest.mean}
        if mean.ci_low is not None and mean.ci_high is not None:
            values[stat_name(UTILITY_LOSS_MEAN, "ci_low")] = mean.ci_low
            values[stat_name(UTILITY_LOSS_MEAN, "ci_high")] = mean.ci_high
        return values | {FRONT_CERTIFICATE: self.certificate}

    def figure_input(self, network: str = "final") -> dict[str, Any]:
        """What :func:`~reservoir_dqn.envs.reservoir.front_figure.front_figure` draws: the front and one network's
        agents."""
        agents = [{"model": "DQN", "seed_index": index, **entry} for index, entry in enumerate(self.agents[network])]
        return self.to_json() | {"agents": agents}

    def to_json(self) -> dict[str, Any]:
        return {
            "objectives": self.objectives,
            "scalarisation": self.scalarisation,
            "vertices": [dict(vertex) for vertex in self.vertices],
            "corners": list(self.corners),
            "certificate": self.certificate,
            "certificate_share": self.certificate_share,
            "solves": self.solves,
            "configured_optimum": dict(self.configured_optimum),
            "sop": dict(self.sop),
            "agents": {network: [dict(entry) for entry in entries] for network, entries in self.agents.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TradeOffs:
        return cls(
            objectives=str(data["objectives"]),
            scalarisation=str(data["scalarisation"]),
            vertices=tuple({key: float(value) for key, value in vertex.items()} for vertex in data["vertices"]),
            corners=tuple(float(corner) for corner in data["corners"]),
            certificate=float(data["certificate"]),
            certificate_share=float(data["certificate_share"]),
            solves=int(data["solves"]),
            configured_optimum={key: float(value) for key, value in data["configured_optimum"].items()},
            sop={key: float(value) for key, value in data["sop"].items()},
            agents={
                network: tuple({key: float(value) for key, value in entry.items()} for entry in entries)
                for network, entries in data["agents"].items()
            },
        )
