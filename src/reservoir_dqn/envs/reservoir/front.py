"""The exact trade-off between hydropower and water supply: the reservoir's convex coverage set, certified.

The reward adds four terms with fixed weights (``weight_energy``, ``weight_deficit``,
``weight_spill``, ``weight_violation``). Two of them are what an operator trades: energy
(GWh) against supply (the demand left unmet). Spill and storage below the minimum operating
level are safety terms that no operator trades for energy or supply, so they keep their
configured penalties in every scalarisation below, and each point reports their expected
amounts beside the two objectives. The scalarisation at ``lam`` in ``[0, 1]`` is the
configured reward with ``weight_energy`` times ``2 lam`` and ``weight_deficit`` times
``2 (1 - lam)``: ``lam = 1/2`` is the configured reward itself, so the configured SDP optimum,
and the agents trained on that reward, sit at ``lam = 1/2``; ``lam = 0`` serves supply alone,
``lam = 1`` energy alone (both under the safety penalties).

For a finite MDP the expected totals of all policies, stochastic ones included, form a convex
polytope, and its best scalarised utility ``u*(lam) = max_pi u_lam(pi)`` is convex and
piecewise linear in ``lam``: each piece is one deterministic policy, which backward induction
at any ``lam`` inside the piece finds (:func:`~.sdp.solve`). Optimistic linear support
(Roijers, Whiteson and Oliehoek, 2015, "Computing convex coverage sets for faster
multi-objective coordination") finds every piece: start from ``lam = 0`` and ``1``; between two
neighbouring policies, solve at the ``lam`` where their utilities cross (the corner). A policy
better there is a new piece; none better, and convexity proves that the two cover the whole
interval. An interval whose optimistic gap is already small is left unsearched: ``u*`` lies
below the chord of the two known optima (convexity), so no ``lam`` in it can gain more than
the chord's height above the set at the corner. The certificate is the largest utility any
``lam`` could still gain over the set: the largest such gap left, or gain a solve found at a
corner (0 to float64 rounding where it proved one). Points between two vertices are reached by mixing their policies
(one of the two per episode, in proportion).

Each policy's totals come from backward evaluation, exact (:func:`~.account.evaluate`), and
each vertex's utility at its own ``lam`` is checked against the SDP's value: they agree to
rounding, or the function raises.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from reservoir_dqn.envs.reservoir.account import evaluate, greedy_tables
from reservoir_dqn.envs.reservoir.baselines import StandardOperatingPolicy
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.sdp import initial_classes, month_fields, solve

# The expected totals each point reports: the two objectives first, then the safety terms.
TOTALS = ("energy_gwh", "deficit", "spill", "violation")
CONFIGURED = 0.5  # the lam of the configured reward


@dataclass(frozen=True)
class Point:
    """One deterministic policy's expected totals over the horizon from the initial storage.

    :ivar totals: :data:`TOTALS`: energy in GWh, the others in storage units.
    :ivar weight: the ``lam`` at which the SDP found it (``nan`` for a policy that is not a vertex: an agent, SOP).
    :ivar policy: ``[H, S, J]`` its action in every state.
    """

    totals: tuple[float, ...]
    weight: float
    policy: torch.Tensor

    def utility(self, model: ReservoirModel, lam: float) -> float:
        """Its expected return under the scalarisation at ``lam``."""
        return utility(model, self.totals, lam)


@dataclass(frozen=True)
class Front:
    """The convex coverage set: its vertices by rising ``lam`` (rising energy, rising deficit), and how it was proven.

    :ivar lines: ``[V, 2]`` each vertex's utility as a line in ``lam``: slope and value at 0.
    :ivar corners: the ``lam`` where neighbouring vertices' utilities cross (one fewer than the vertices).
    :ivar certificate: the largest utility, in reward units, that any ``lam`` could still gain over the set.
    :ivar solves: backward inductions run; :ivar seconds: their wall time with the evaluations.
    """

    vertices: list[Point]
    lines: torch.Tensor
    corners: list[float]
    certificate: float
    solves: int
    seconds: float

    def best(self, lam: float) -> float:
        """``u*(lam)``: the best utility at ``lam`` (a vertex's, by convexity)."""
        return float((self.lines[:, 0] * lam + self.lines[:, 1]).max())


def utility(model: ReservoirModel, totals: tuple[float, ...], lam: float) -> float:
    """The scalarised expected return of ``totals`` at ``lam`` (the configured reward at ``lam = 1/2``)."""
    c = model.config
    energy, deficit, spill, violation = totals
    return (
        2.0 * lam * c.weight_energy * energy
        - 2.0 * (1.0 - lam) * c.weight_deficit * deficit
        - c.weight_spill * spill
        - c.weight_violation * violation
    )


def weighted(model: ReservoirModel, lam: float) -> ReservoirModel:
    """The reservoir whose reward is the scalarisation at ``lam``."""
    c = model.config
    config = c.model_copy(
        update={"weight_energy": 2.0 * lam * c.weight_energy, "weight_deficit": 2.0 * (1.0 - lam) * c.weight_deficit}
    )
    return dataclasses.replace(model, config=config)


class Evaluator:
    """Exact expected totals of deterministic policies (``[H, S, J]`` tables) on one reservoir."""

    def __init__(self, model: ReservoirModel) -> None:
        if model.config.end_value != "none":
            raise ValueError(
                f"env.reservoir.end_value ({model.config.end_value}): the front values what a horizon delivers; "
                "the end's water value is in reward units, not energy or supply (set end_value: none)"
            )
        self.model = model
        fields = month_fields(model, (*TOTALS, "next_storage"))
        self.next_storage = fields.pop("next_storage").long()
        self.components = fields
        self.initial = initial_classes(model)
        columns = model.chain.classes if model.chain.persistent else 1
        self.end = torch.zeros(model.num_storages, columns, dtype=torch.float64)

    def totals(self, policy: torch.Tensor) -> tuple[float, ...]:
        start = self.model.config.initial_storage
        return tuple(
            float((evaluate(self.model, policy, self.components[name], self.next_storage, self.end)[0, start]
                   * self.initial).sum())
            for name in TOTALS
        )  # fmt: skip

    def point(self, policy: torch.Tensor, weight: float = math.nan) -> Point:
        return Point(self.totals(policy), weight, policy)


def exact_front(model: ReservoirModel, tolerance: float = 1e-4, max_solves: int = 1000) -> Front:
    """The convex coverage set of energy against supply by optimistic linear support (see the module's text).

    :param tolerance: an interval whose optimistic gap (the chord of the known optima above the set, largest at
        the corner) is at most this share of ``|u*(1/2)|`` (the configured reward's optimum) is not searched
        further; the certificate reports the largest such gap. 0: search until a solve proves every corner.
    :param max_solves: at most this many backward inductions; the largest gap left open is the certificate.
    """
    started = time.perf_counter()
    evaluator = Evaluator(model)
    solves = 0

    def optimum(lam: float) -> Point:
        nonlocal solves
        solution = solve(weighted(model, lam))
        solves += 1
        found = evaluator.point(solution.policy, lam)
        value = found.utility(model, lam)
        if not math.isclose(value, solution.expected_return, rel_tol=1e-9, abs_tol=1e-6):
            raise RuntimeError(
                f"the SDP's value at lam={lam} ({solution.expected_return}) is not its policy's ({value})"
            )
        return found

    known = [optimum(0.0), optimum(CONFIGURED), optimum(1.0)]  # the configured reward's optimum is on it exactly
    scale = max(1.0, abs(known[1].utility(model, CONFIGURED)))
    # The intervals still to prove, the largest optimistic gap first: where a solve can gain the most.
    intervals: list[tuple[float, float, int, int]] = []

    def open_interval(first: int, second: int) -> None:
        corner = _corner(model, known[first], known[second])
        if corner is not None:  # else one policy, or two with the same utility everywhere
            gap = _chord(model, known[first], known[second], corner) - known[first].utility(model, corner)
            heapq.heappush(intervals, (-gap, corner, first, second))

    open_interval(0, 1)
    open_interval(1, 2)
    certificate = 0.0
    while intervals:
        gap, corner, first, second = heapq.heappop(intervals)
        if -gap <= tolerance * scale or solves >= max_solves:
            certificate = max(certificate, -gap)  # the largest open gap: every other is smaller
            break
        found = optimum(corner)
        gain = found.utility(model, corner) - known[first].utility(model, corner)
        if gain > 1e-9 * scale:
            known.append(found)
            open_interval(first, len(known) - 1)
            open_interval(len(known) - 1, second)
        else:
            certificate = max(certificate, gain)  # proven: no policy beats the two at their corner
    vertices = _distinct(sorted(known, key=lambda point: point.weight))
    corners = [_corner(model, a, b) or a.weight for a, b in itertools.pairwise(vertices)]
    lines = torch.tensor(
        [[v.utility(model, 1.0) - v.utility(model, 0.0), v.utility(model, 0.0)] for v in vertices], dtype=torch.float64
    )
    return Front(vertices, lines, corners, certificate, solves, time.perf_counter() - started)


def _corner(model: ReservoirModel, left: Point, right: Point) -> float | None:
    """The ``lam`` between ``left.weight`` and ``right.weight`` where the two policies' utilities are equal."""
    slope = (
        right.utility(model, 1.0) - right.utility(model, 0.0) - (left.utility(model, 1.0) - left.utility(model, 0.0))
    )
    if abs(slope) < 1e-12:
        return None
    lam = (left.utility(model, 0.0) - right.utility(model, 0.0)) / slope
    return min(max(lam, left.weight), right.weight)


def _chord(model: ReservoirModel, left: Point, right: Point, lam: float) -> float:
    """The optimistic bound on ``u*(lam)`` between two known optima: the chord of ``u*`` (convex) above the set."""
    share = (lam - left.weight) / (right.weight - left.weight)
    return (1 - share) * left.utility(model, left.weight) + share * right.utility(model, right.weight)


def _distinct(points: list[Point]) -> list[Point]:
    """Neighbouring points with the same totals once (the first, at the smallest ``lam``)."""
    kept: list[Point] = []
    for point in points:
        if not kept or not all(
            math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9) for a, b in zip(kept[-1].totals, point.totals, strict=True)
        ):
            kept.append(point)
    return kept


def sop_table(model: ReservoirModel) -> torch.Tensor:
    """``[H, S, J]`` the standard operating policy's action in every state (it looks at the month only)."""
    columns = model.chain.classes if model.chain.persistent else 1
    by_month: torch.Tensor = StandardOperatingPolicy(model).action_by_month
    months = model.month(torch.arange(model.config.horizon_months))
    return by_month[months].view(-1, 1, 1).expand(-1, model.num_storages, columns).clone()


def agent_points(model: ReservoirModel, q_values: Callable[[torch.Tensor], torch.Tensor], agents: int) -> list[Point]:
    """Each greedy agent's point: its action in every state of the grid, evaluated exactly."""
    evaluator = Evaluator(model)
    return [evaluator.point(table) for table in greedy_tables(model, q_values, agents)]


def expected_utility_loss(front: Front, model: ReservoirModel, point: Point) -> float:
    """``E[u*(lam) - u_pi(lam)]`` over ``lam`` uniform on ``[0, 1]``: exact, as both are piecewise linear.

    ``u*`` is one vertex's line on each piece between corners, so its mean is the pieces' lengths times their
    midpoints' utilities; ``u_pi`` is one line, whose mean is its value at ``1/2``.
    """
    edges = [0.0, *front.corners, 1.0]
    mean_best = sum(
        (right - left) * vertex.utility(model, (left + right) / 2)
        for vertex, left, right in zip(front.vertices, edges, edges[1:], strict=False)
    )
    return mean_best - point.utility(model, 0.5)


def maximum_utility_loss(front: Front, model: ReservoirModel, point: Point) -> float:
    """``max_lam u*(lam) - u_pi(lam)``: convex less linear, so at 0, 1 or a corner."""
    return max(front.best(lam) - point.utility(model, lam) for lam in [0.0, *front.corners, 1.0])


def set_utility_losses(
    front: Front, model: ReservoirModel, points: list[Point], grid: int = 100_001
) -> tuple[float, float]:
    """A set of policies' expected and largest utility loss over ``lam`` uniform on ``[0, 1]``: at each ``lam`` the
    set's best member against ``u*``, on a grid of ``grid`` weightings (both are piecewise linear; the grid's step
    bounds the error by the lines' slopes times ``1 / (grid - 1)``)."""
    lam = torch.linspace(0.0, 1.0, grid, dtype=torch.float64)
    best = (front.lines[:, :1] * lam + front.lines[:, 1:]).max(dim=0).values
    lines = torch.tensor(
        [[p.utility(model, 1.0) - p.utility(model, 0.0), p.utility(model, 0.0)] for p in points], dtype=torch.float64
    )
    covered = (lines[:, :1] * lam + lines[:, 1:]).max(dim=0).values
    loss = best - covered
    return float(torch.trapezoid(loss, lam)), float(loss.max())


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """The area dominated by ``points`` (energy, deficit: more energy, less deficit) and bounded by ``reference``."""
    kept = sorted((e, d) for e, d in points if e > reference[0] and d < reference[1])
    area, deficit_floor = 0.0, reference[1]
    for energy, deficit in reversed(kept):  # from the most energy down: each adds the strip its deficit opens
        if deficit < deficit_floor:
            area += (energy - reference[0]) * (deficit_floor - deficit)
            deficit_floor = deficit
    return area


def per_year(model: ReservoirModel, point: Point) -> dict[str, float]:
    """A point's expected totals as yearly figures: GWh a year, hm3 a year."""
    config = model.config
    years = config.horizon_months / 12
    energy, deficit, spill, violation = point.totals
    return {
        "energy_gwh_per_year": energy / years,
        "deficit_hm3_per_year": deficit * config.unit_hm3 / years,
        "spill_hm3_per_year": spill * config.unit_hm3 / years,
        "violation_hm3_per_year": violation * config.unit_hm3 / years,
    }


def policy_entry(front: Front, model: ReservoirModel, point: Point) -> dict[str, float]:
    """A policy's point in engineering units and its utility losses against the front (reward units): at the
    configured reward (``lam = 1/2``), and expected and largest over ``lam`` uniform on ``[0, 1]``."""
    return per_year(model, point) | {
        "utility_loss_at_configured": front.best(CONFIGURED) - point.utility(model, CONFIGURED),
        "expected_utility_loss": expected_utility_loss(front, model, point),
        "maximum_utility_loss": maximum_utility_loss(front, model, point),
    }


def describe(front: Front, model: ReservoirModel, sop: Point, agents: dict[str, list[Point]]) -> dict[str, Any]:
    """The front, SOP and each group's agents (a model file's, or a network's) in engineering units with their
    losses: what ``front.json`` and the evaluation's trade-offs hold, and what ``front.png`` draws."""
    scale = max(1.0, abs(front.best(CONFIGURED)))
    configured = max(front.vertices, key=lambda vertex: vertex.utility(model, CONFIGURED))
    return {
        "objectives": "energy (GWh a year, more is better) against supply deficit (hm3 a year, less is better)",
        "scalarisation": "the reward with weight_energy x 2 lam and weight_deficit x 2 (1 - lam); spill and "
        "violation keep their configured penalties; lam = 0.5 is the configured reward",
        "vertices": [{"lam": vertex.weight, **per_year(model, vertex)} for vertex in front.vertices],
        "corners": front.corners,
        "certificate": front.certificate,
        "certificate_share": front.certificate / scale,
        "solves": front.solves,
        "configured_optimum": {"lam": CONFIGURED, "utility": front.best(CONFIGURED), **per_year(model, configured)},
        "sop": policy_entry(front, model, sop),
        "agents": [
            {"model": group, "seed_index": index, **policy_entry(front, model, point)}
            for group, points in agents.items()
            for index, point in enumerate(points)
        ],
    }
