"""The reservoir's inflow model: a periodic first-order Markov chain over monthly inflow classes.

Month ``m``'s inflow is one of ``K`` classes, each represented by one value in whole storage
units; the class of month ``m + 1`` depends on month ``m``'s class through the matrix
``transitions[m]`` (Stedinger, Sule and Loucks, 1984, "Stochastic dynamic programming models
for reservoir operation optimization"; R's ``reservoir::sdp_hydro(Markov = TRUE)``).

- :func:`independent_chain`: the illustrative reservoir's lognormal classes, equiprobable and
  independent of the previous month (every row of every matrix is ``1/K``);
- :func:`fit_chain`: a chain fitted to a river's record (:mod:`.records`). Classes are per
  calendar month, bounded by the record's ``k/K`` quantiles of that month, and each class is
  represented by the mean of the record's flows in it, rounded to whole storage units (the
  storage grid is whole units, so the inflows are too: the rounding moves a class's value by
  at most half a unit). ``transitions[m][j, k]`` counts the years in which month ``m`` was in
  class ``j`` and month ``m + 1`` in class ``k``.

**Sparse rows.** ``pseudocount`` is added to every count of a row before it is normalised:
0 keeps the record's frequencies (a row with no observation at all then is the next month's
class frequencies, i.e. no persistence where the record says nothing); 1 is add-one
(Laplace) smoothing. Sixty years spread over ``K x K`` cells leave most cells with a few
counts, so add-one pulls every row towards uniform and halves the chain's persistence
(``bench/results/persistence.md`` measures it): the default is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from reservoir_dqn.envs.reservoir.records import MONTHS, RecordError
from reservoir_dqn.envs.reservoir.settings import RecordConfig, ReservoirConfig
from reservoir_dqn.envs.reservoir.split import load_split


@dataclass(frozen=True)
class InflowChain:
    """The inflow classes of each calendar month and how one month's class leads to the next's.

    :ivar values: ``[12, K]`` inflow of each class in storage units (whole units), January first.
    :ivar transitions: ``[12, K, K]``: row ``j`` of ``transitions[m]`` is the distribution of
        month ``m + 1``'s class given class ``j`` in month ``m`` (December leads to January).
    :ivar marginal: ``[12, K]`` how often each class occurs in each month.
    :ivar edges: ``[12, K - 1]`` the flows (storage units) between classes, where fitted to a record.
    :ivar persistent: whether a class tells anything about the next month's (the rows differ).
    """

    values: torch.Tensor
    transitions: torch.Tensor
    marginal: torch.Tensor
    edges: torch.Tensor | None
    persistent: bool

    @property
    def classes(self) -> int:
        return int(self.values.shape[1])

    def classify(self, month: int, flow: float) -> int:
        """The class of a flow (storage units) in calendar month ``month``, by the fitted edges."""
        if self.edges is None:
            raise ValueError("an independent chain has no edges between its classes")
        return int(torch.searchsorted(self.edges[month], torch.tensor([flow], dtype=torch.float64), right=True))


def independent_chain(values: torch.Tensor) -> InflowChain:
    """Equiprobable classes with ``values`` (``[12, K]``), independent from month to month."""
    classes = values.shape[1]
    uniform = torch.full((MONTHS, classes, classes), 1.0 / classes, dtype=torch.float64)
    marginal = torch.full((MONTHS, classes), 1.0 / classes, dtype=torch.float64)
    return InflowChain(values, uniform, marginal, None, persistent=False)


def without_persistence(chain: InflowChain) -> InflowChain:
    """The same classes, each month's class drawn from its frequencies whatever the previous month's was.

    The optimum of this chain is that of an operator who ignores what last month's inflow says
    about this month's (the record's classes are not quite equiprobable: 8 or 9 of 60 years).
    """
    following = chain.marginal.roll(-1, dims=0)  # month m + 1's class frequencies
    rows = following.unsqueeze(1).expand(-1, chain.classes, -1).contiguous()
    return InflowChain(chain.values, rows, chain.marginal, chain.edges, persistent=True)


def fit_chain(
    flows: np.ndarray, months: np.ndarray, classes: int, pseudocount: float, linked: np.ndarray | None = None
) -> InflowChain:
    """The periodic Markov chain of consecutive monthly ``flows`` (storage units), month ``months[i]`` (0 = January).

    ``linked[i]``: whether flows ``i`` and ``i + 1`` are consecutive months (default: all are), so that a
    transition is counted only between them. See the module's docstring for the classes, their values and the
    rule for sparse rows.
    """
    edges = np.stack([np.quantile(flows[months == m], np.arange(1, classes) / classes) for m in range(MONTHS)])
    labels = np.array([np.searchsorted(edges[m], flow, side="right") for flow, m in zip(flows, months, strict=True)])
    values = np.zeros((MONTHS, classes))
    marginal = np.zeros((MONTHS, classes))
    for m in range(MONTHS):
        in_month = months == m
        for k in range(classes):
            members = flows[in_month & (labels == k)]
            marginal[m, k] = len(members) / in_month.sum()
            # An empty class (ties at its edges, a band of zero width): its edge, never drawn (frequency 0).
            values[m, k] = members.mean() if len(members) else edges[m, min(k, classes - 2)]
    counts = np.zeros((MONTHS, classes, classes))
    pairs = np.ones(len(flows) - 1, dtype=bool) if linked is None else linked
    np.add.at(counts, (months[:-1][pairs], labels[:-1][pairs], labels[1:][pairs]), 1.0)
    counts += pseudocount
    totals = counts.sum(axis=2, keepdims=True)
    following = np.roll(marginal, -1, axis=0)[:, None, :]  # month m + 1's class frequencies
    transitions = np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), following)
    return InflowChain(
        values=torch.from_numpy(np.maximum(np.round(values), 0.0)),
        transitions=torch.from_numpy(transitions),
        marginal=torch.from_numpy(marginal),
        edges=torch.from_numpy(edges),
        persistent=True,
    )


def lag1_correlation(flows: np.ndarray, months: np.ndarray) -> np.ndarray:
    """``[12]`` per calendar month ``m``, the correlation of month ``m``'s and month ``m + 1``'s log flows.

    Log flows (plus one storage unit, so that a dry month has a logarithm) are standardised per
    calendar month first, as the hydrology literature measures monthly persistence.
    """
    logs = np.log1p(flows)
    standard = np.empty_like(logs)
    for m in range(MONTHS):
        chosen = months == m
        spread = logs[chosen].std()
        standard[chosen] = (logs[chosen] - logs[chosen].mean()) / (spread if spread > 0 else 1.0)
    pairs_from = months[:-1]
    return np.array(
        [np.corrcoef(standard[:-1][pairs_from == m], standard[1:][pairs_from == m])[0, 1] for m in range(MONTHS)]
    )


def record_chain(config: ReservoirConfig) -> InflowChain:
    """The chain fitted to ``config.record``'s fitting months (:mod:`.split`), in units of ``config.unit_hm3``."""
    settings = config.record
    record, split = load_split(config)
    chosen = split.fitting
    where = f"record {settings.path} ({settings.column}, {record.span})"
    if not chosen.any():
        raise RecordError(f"{where}: no fitting month ({_years(settings)})")
    if len(record) < config.horizon_months:
        raise RecordError(
            f"{where}: {len(record)} months, fewer than the {config.horizon_months} of horizon_months (the "
            "historical record is re-operated over a whole horizon)"
        )
    months = record.calendar_months[chosen]
    fewest = min(int((months == m).sum()) for m in range(MONTHS))
    if fewest < config.inflow_classes:
        raise RecordError(
            f"{where}: the fitting months ({_years(settings)}) hold {fewest} values of some calendar month, fewer "
            f"than the {config.inflow_classes} inflow_classes"
        )
    flows = record.volumes_hm3[chosen] / config.unit_hm3
    linked = np.diff(np.flatnonzero(chosen)) == 1  # a held-out gap breaks the chain there
    return fit_chain(flows, months, config.inflow_classes, settings.pseudocount, linked)


def _years(settings: RecordConfig) -> str:
    first = settings.first_year if settings.first_year is not None else "the first"
    last = settings.last_year if settings.last_year is not None else "the last"
    held_out = f", less the held-out {settings.held_out[0]}-{settings.held_out[1]}" if settings.held_out else ""
    validation = ""
    if settings.validation is not None:
        validation = f", less the validation {settings.validation[0]}-{settings.validation[1]}"
    return f"years {first} to {last}{held_out}{validation}"
