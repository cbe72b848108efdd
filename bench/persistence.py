"""The Delaware example's inflow chain against its record: persistence, means, and the SDP's cost.

Usage (from the repository root; about half a minute)::

    .venv/bin/python -m bench.persistence

For the recipe ``reservoir-delaware`` (USGS 01463500, fitted on 1945-2004, 7 classes, 106-hm3
units), per calendar month:

- the lag-1 correlation of standardised log flows (month ``m`` against month ``m + 1``) in the
  record, and in 3,000 years simulated from the chain fitted with pseudocount 0 (the default:
  the record's frequencies) and with 1 (add-one smoothing);
- the mean flow of the record against the chain's (its class values are the class means
  rounded to whole storage units: what the rounding moves);
- the SDP's solve time (median of 5) and the memory its tables take, with persistence and
  with the same record's classes taken as independent;
- what the persistence is worth: the persistent optimum, the optimum of the same classes
  taken as independent (an operator who ignores last month's inflow) and a random policy,
  played on the same 200 scenarios of the persistent chain.

Writes ``bench/results/persistence.{json,md}``.
"""

from __future__ import annotations

import calendar
import statistics
import time

import numpy as np
import torch

from bench.common import REPO, RESULTS, machine, write_results
from reservoir_dqn.commands.recipe import overrides
from reservoir_dqn.config import load_config
from reservoir_dqn.envs import profile
from reservoir_dqn.envs.baselines import RandomPolicy
from reservoir_dqn.envs.reservoir.baselines import SDPPolicy
from reservoir_dqn.envs.reservoir.inflows import InflowChain, fit_chain, lag1_correlation, without_persistence
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.records import load_record
from reservoir_dqn.envs.reservoir.sdp import SDPSolution, solve
from reservoir_dqn.envs.rollouts import run_episodes

YEARS = 3000
SCENARIOS = list(range(2_000_000_000, 2_000_000_200))  # the first 200 of the test seeds
PSEUDOCOUNTS = (0.0, 1.0)


def simulate(chain: InflowChain, years: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive monthly flows drawn from ``chain``, January first."""
    generator = np.random.default_rng(seed)
    k = int(generator.choice(chain.classes, p=chain.marginal[11].numpy()))
    flows, months = np.empty(12 * years), np.tile(np.arange(12), years)
    for step in range(12 * years):
        month = step % 12
        k = int(generator.choice(chain.classes, p=chain.transitions[(month - 1) % 12, k].numpy()))
        flows[step] = float(chain.values[month, k])
    return flows, months


def timed_solve(model: ReservoirModel) -> tuple[float, int, SDPSolution]:
    seconds = []
    for _ in range(5):
        started = time.perf_counter()
        solution = solve(model)
        seconds.append(time.perf_counter() - started)
    tables = solution.values, solution.policy, solution.q_values
    return statistics.median(seconds), sum(table.element_size() * table.nelement() for table in tables), solution


def main() -> None:
    env_config = load_config(REPO / "params.yaml", overrides("reservoir-delaware", REPO / "recipes")).env
    config = env_config.reservoir
    settings = config.record
    record = load_record(REPO / settings.path, settings.column, settings.units)
    chosen = (record.years >= settings.first_year) & (record.years <= settings.last_year)
    flows, months = record.volumes_hm3[chosen] / config.unit_hm3, record.calendar_months[chosen]
    observed = lag1_correlation(flows, months)
    chains = {count: fit_chain(flows, months, config.inflow_classes, count) for count in PSEUDOCOUNTS}
    simulated = {count: lag1_correlation(*simulate(chain, YEARS, seed=0)) for count, chain in chains.items()}
    chain = chains[settings.pseudocount]
    chain_means = (chain.marginal * chain.values).sum(dim=1).numpy()
    record_means = np.array([flows[months == m].mean() for m in range(12)])

    model = ReservoirModel(config, chain, *_physics(config))
    independent = ReservoirModel(config, without_persistence(chain), *_physics(config))
    persistent_s, persistent_bytes, persistent_solution = timed_solve(model)
    independent_s, independent_bytes, independent_solution = timed_solve(independent)
    players = {
        "sdp": SDPPolicy(persistent_solution),
        "sdp_ignoring_the_class": SDPPolicy(independent_solution),
        "random": RandomPolicy(model.num_actions, seed=0),
    }
    played = {}
    for name, policy in players.items():
        returns = run_episodes(profile(env_config), env_config, policy, SCENARIOS).returns.double()
        played[name] = {"mean": float(returns.mean()), "standard_error": float(returns.std()) / len(returns) ** 0.5}
    span = played["sdp"]["mean"] - played["random"]["mean"]
    for result in played.values():
        result["score"] = (result["mean"] - played["random"]["mean"]) / span
    data = {
        "machine": machine(),
        "record": f"{settings.path} column {settings.column}, {settings.first_year}-{settings.last_year}",
        "classes": config.inflow_classes,
        "unit_hm3": config.unit_hm3,
        "simulated_years": YEARS,
        "lag1_record": observed.round(3).tolist(),
        "lag1_chain": {str(count): values.round(3).tolist() for count, values in simulated.items()},
        "mean_record_units": record_means.round(2).tolist(),
        "mean_chain_units": chain_means.round(2).tolist(),
        "worth": played,
        "sdp": {
            "persistent": _solved(persistent_s, persistent_bytes, persistent_solution),
            "independent_classes": _solved(independent_s, independent_bytes, independent_solution),
        },
    }
    write_results("persistence", data)
    (RESULTS / "persistence.md").write_text(_markdown(data))
    print(_markdown(data))


def _solved(seconds: float, table_bytes: int, solution: SDPSolution) -> dict[str, float]:
    return {"seconds": seconds, "table_bytes": table_bytes, "expected_return": solution.expected_return}


def _physics(config: object) -> tuple[torch.Tensor, torch.Tensor]:
    default = ReservoirModel.from_config(config)  # type: ignore[arg-type]
    return default.release_levels, default.demand


def _markdown(data: dict) -> str:
    lines = [
        "# The Delaware example's inflow chain against its record",
        "",
        f"Measured with `.venv/bin/python -m bench.persistence` on {data['machine']['date']} "
        f"({data['machine']['cpu']}, {data['machine']['cores']} cores). Record: {data['record']}; "
        f"{data['classes']} classes per month; one storage unit is {data['unit_hm3']:g} hm3; "
        f"{data['simulated_years']:,} years simulated from each chain.",
        "",
        "## Persistence: lag-1 correlation of standardised log flows, month m against month m + 1",
        "",
        "| month m | record | chain, pseudocount 0 (default) | chain, pseudocount 1 (add-one) |",
        "|---|---|---|---|",
    ]
    zero, one = data["lag1_chain"]["0.0"], data["lag1_chain"]["1.0"]
    for month in range(12):
        lines.append(
            f"| {calendar.month_abbr[month + 1]} | {data['lag1_record'][month]:.2f} | {zero[month]:.2f} "
            f"| {one[month]:.2f} |"
        )
    lines.append(
        f"| **mean** | **{np.mean(data['lag1_record']):.2f}** | **{np.mean(zero):.2f}** | **{np.mean(one):.2f}** |"
    )
    lines += [
        "",
        "## What rounding the classes to whole units moves: mean monthly flow, storage units",
        "",
        "| month | record | chain | chain - record |",
        "|---|---|---|---|",
    ]
    for month in range(12):
        record, chain = data["mean_record_units"][month], data["mean_chain_units"][month]
        lines.append(f"| {calendar.month_abbr[month + 1]} | {record:.2f} | {chain:.2f} | {chain - record:+.2f} |")
    sdp = data["sdp"]
    lines += [
        "",
        "## The SDP over (time, storage, inflow class)",
        "",
        "| inflow model | solve time (median of 5) | tables | optimal expected return |",
        "|---|---|---|---|",
        f"| persistent (the fitted chain) | {sdp['persistent']['seconds'] * 1000:.0f} ms "
        f"| {sdp['persistent']['table_bytes'] / 2**20:.1f} MiB | {sdp['persistent']['expected_return']:.1f} |",
        f"| the same classes, independent | {sdp['independent_classes']['seconds'] * 1000:.0f} ms "
        f"| {sdp['independent_classes']['table_bytes'] / 2**20:.2f} MiB "
        f"| {sdp['independent_classes']['expected_return']:.1f} |",
        "",
        "## What the persistence is worth: returns on the same 200 scenarios of the persistent chain",
        "",
        "| policy | return (standard error) | score (random 0, the persistent optimum 1) |",
        "|---|---|---|",
        *(
            f"| {name.replace('_', ' ')} | {row['mean']:.1f} ({row['standard_error']:.1f}) | {row['score']:.3f} |"
            for name, row in data["worth"].items()
        ),
        "",
        "The independent row of the solve table is the optimum of an operator who ignores what last "
        "month's inflow says about this month's, evaluated in its own (independent) model: the two "
        "expected returns are of two different MDPs, not a policy comparison.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
