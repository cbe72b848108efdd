"""Can the Q-network hold the optimum? The SDP's Q-values fitted by regression, then scored exactly.

Usage (from the repository root; about ten minutes on 2 cores, 50 s a fit)::

    .venv/bin/python -m bench.capacity

DQN's final networks stop at about 0.96 of the optimum on the Delaware recipe and 0.92 on its
small reservoir (``bench/results/held_out_agents.md``). That is either what a network of the
recipe's shape can represent, or what DQN's learning reaches. This bench separates the two: for
each case it fits a network of the recipe's shape (one agent, the same observation and input
scale) to the SDP optimum's Q-values in every state of the grid, by plain supervised
regression (Adam, mean squared error on standardised targets, minibatches drawn uniformly over
the states), and scores its greedy policy exactly, as the evaluate stage's exact account does:
``(V_pi - V_random) / (V* - V_random)`` from the initial storage, with the uniformly random
policy's exact value as 0. It also reports the share of the optimal policy's visits where the
network takes the optimum's release. Several seeds per case; writes ``bench/results/capacity.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from bench.common import REPO, RESULTS, machine, write_results
from bench.held_out import CASES as HELD_OUT_CASES
from reservoir_dqn.agent import NetworkSpec, StackedMLP
from reservoir_dqn.commands.recipe import overrides
from reservoir_dqn.config import load_config
from reservoir_dqn.envs import profile
from reservoir_dqn.envs.reservoir.account import _next_classes, account, greedy_tables, grid_observations
from reservoir_dqn.envs.reservoir.baselines import reservoir_optimum
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.profile import reservoir_settings
from reservoir_dqn.envs.reservoir.sdp import month_outcomes

REPO_PARAMS = REPO / "params.yaml"
CASES = {
    "default": [],
    "delaware-40": [*overrides("reservoir-delaware")],
    "delaware-10": [*overrides("reservoir-delaware"), *HELD_OUT_CASES["delaware-10"]],
    "delaware-80": [*overrides("reservoir-delaware"), *HELD_OUT_CASES["delaware-80"]],
}
CHECKS = (2_000, 10_000, 40_000)  # regression steps at which the policy is scored
BATCH, LR = 512, 1e-3


def random_value(model: ReservoirModel) -> float:
    """The uniformly random policy's exact expected return from the initial storage (its classes as the SDP's)."""
    rewards, next_storage = month_outcomes(model)
    solution = reservoir_optimum(model.config)
    horizon = solution.policy.shape[0]
    values = solution.values[-1].clone()  # the end value, as the SDP's
    for t in reversed(range(horizon)):
        month = int(model.month(torch.tensor(t)))
        probabilities, column = _next_classes(model, month)
        future = values[next_storage[month], column]  # [S, A, K]
        values = ((rewards[month] + future).mean(dim=1).unsqueeze(1) * probabilities.unsqueeze(0)).sum(-1)
    return float((values[model.config.initial_storage] * solution.initial_classes).sum())


def fit(case: str, settings: list[str], seed: int, variant: argparse.Namespace) -> dict[str, Any]:
    config = load_config(REPO_PARAMS, settings)
    reservoir = reservoir_settings(config.env)
    model = ReservoirModel.from_config(reservoir)
    solution = reservoir_optimum(reservoir)
    observations = grid_observations(model)
    targets = solution.q_values.reshape(observations.shape[0], -1)
    if variant.target == "advantage":  # each release's value less the state's best: the action gaps alone
        targets = targets - targets.max(dim=-1, keepdim=True).values
    targets = ((targets - targets.mean()) / targets.std()).float()
    spec = NetworkSpec(
        obs_dim=model.observation_size,
        num_actions=model.num_actions,
        hidden_sizes=tuple(variant.hidden or config.dqn.hidden_sizes),
        env_name=config.env.name,
        obs_scale=profile(config.env).observation_scale(config.env),
        head=variant.head,
    )
    generator = torch.Generator().manual_seed(seed)
    network = StackedMLP(spec, [torch.Generator().manual_seed(seed)])
    optimiser = torch.optim.Adam(network.parameters(), lr=LR)
    optimum, random = solution.expected_return, random_value(model)
    checks, started = [], time.perf_counter()
    for step in range(1, CHECKS[-1] + 1):
        rows = torch.randint(observations.shape[0], (BATCH,), generator=generator)
        loss = torch.nn.functional.mse_loss(network(observations[rows]), targets[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step in CHECKS:
            table = greedy_tables(model, network, 1)[0]
            exact = account(model, solution, table)
            agree = float((exact.visits * (table == solution.policy)).sum() / exact.visits.sum())
            score = (exact.policy_return - random) / (optimum - random)
            checks.append({"steps": step, "score": score, "agreement": agree, "loss": float(loss.detach())})
    return {
        "case": case,
        "seed": seed,
        "states": observations.shape[0],
        "hidden_sizes": list(spec.hidden_sizes),
        "variant": label(spec, variant.target),
        "checks": checks,
        "seconds": time.perf_counter() - started,
    }


def label(spec: NetworkSpec, target: str) -> str:
    """A row's network and target, as the table names it."""
    network = " x ".join(str(width) for width in spec.hidden_sizes) + ("" if spec.head == "plain" else f", {spec.head}")
    return network + ("" if target == "q" else f"; {target}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--hidden", type=lambda text: tuple(int(w) for w in text.split(",")), help="e.g. 256,256")
    parser.add_argument("--head", default="plain", help="the output head: plain or dueling")
    parser.add_argument(
        "--target", choices=("q", "advantage"), default="q", help="fit the Q-values, or each release's gap to the best"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    fresh = [fit(case, CASES[case], seed, args) for case in args.cases.split(",") for seed in range(args.seeds)]
    path = RESULTS / "capacity.json"
    kept = json.loads(path.read_text())["runs"] if path.exists() else []  # other rows stay: each run adds its own
    keys = {(run["case"], run["variant"]) for run in fresh}
    runs = [run for run in kept if (run["case"], run.get("variant")) not in keys] + fresh
    write_results("capacity", {"machine": machine(), "runs": runs, "checks": CHECKS, "batch": BATCH, "lr": LR})
    lines = [
        "# Can the Q-network hold the optimum?",
        "",
        f"Measured with `.venv/bin/python -m bench.capacity` (its `--hidden`, `--head` and `--target` for the "
        f"other rows; {args.seeds} seeds) on {time.strftime('%Y-%m-%d')} (2 cores, one thread a run). A network of "
        "the case's shape (`dqn.hidden_sizes`, one agent, the same observation; other rows as named) regressed on "
        "the SDP optimum's Q-values in every state of the grid (or, `advantages`, on each release's value less the "
        f"state's best) (Adam, lr {LR:g}, batches of {BATCH} states drawn uniformly, standardised targets), then its "
        "greedy policy scored exactly: 0 the random policy's exact value, 1 the SDP optimum's. Agreement: the share "
        "of the optimal policy's visits where the network takes the optimum's release. Min / median over seeds.",
        "",
        "| case | states | network | " + " | ".join(f"{steps:,} steps: score" for steps in CHECKS) + " | agreement |",
        "|---|---|---|" + "---|" * (len(CHECKS) + 1),
    ]
    for case, variant in sorted({(run["case"], run.get("variant", "")) for run in runs}, key=_order):
        rows = [run for run in runs if (run["case"], run.get("variant", "")) == (case, variant)]
        cells = []
        for index in range(len(CHECKS)):
            scores = [run["checks"][index]["score"] for run in rows]
            cells.append(f"{min(scores):.4f} / {statistics.median(scores):.4f}")
        agreement = [run["checks"][-1]["agreement"] for run in rows]
        lines.append(
            f"| {case} | {rows[0]['states']:,} | {variant} | {' | '.join(cells)} "
            f"| {min(agreement):.3f} / {statistics.median(agreement):.3f} |"
        )
    text = "\n".join(lines) + "\n"
    (RESULTS / "capacity.md").write_text(text)
    print(text)


def _order(key: tuple[str, str]) -> tuple[int, str]:
    return list(CASES).index(key[0]), key[1]


if __name__ == "__main__":
    main()
