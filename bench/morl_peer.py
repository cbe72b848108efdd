"""morl-baselines' Envelope Q-learning on the reservoir's MO-Gymnasium port, scored against the exact front (issue 43).

Usage (from the repository root; about 35 minutes on 2 cores with the defaults)::

    .venv/bin/python -m bench.morl_peer [--seeds 5] [--frames 100000] [--workers 2] [--rescore]

The peer: :class:`morl_baselines.multi_policy.envelope.envelope.Envelope` (Yang, Sun and Narasimhan,
2019), one network that takes the weighting as input, trained on ``reservoir_dqn/Reservoir-v0``
(:mod:`reservoir_dqn.envs.reservoir.mo_gym`: the default params' reservoir, its two objectives
energy and supply, each with the safety penalties), a weighting drawn at random every episode as
its paper and library do. Its settings are ours where the two algorithms share one (``params.yaml``'s
``dqn``: the 128 x 128 network, gamma 0.995, learning rate 1e-3, batch 128, a buffer of 50,000, epsilon
from 1 to 0.02 over 10,000 frames, 1,000 frames before learning, a Polyak target at 0.01, gradients
clipped at 10, rewards times 0.01) and the library's where they are its own (prioritized replay, 4
weightings sampled per update, the homotopy of its two losses, here over 10,000 frames). It updates
once a frame, so ``--frames`` frames (default 100,000, the frames of one of our agents) make as many
updates as our 5 agents of a sweep make together (5 x 100,000 frames x 0.2 updates a frame), on a fifth
of their frames.

Each seed's network is then asked for its greedy action in every state of the SDP's grid at each
weighting ``lam`` (the weighting ``(lam, 1 - lam)``, the front's scalarisation at ``lam``), and each
such policy is evaluated exactly (:mod:`reservoir_dqn.envs.reservoir.front`): its point, its utility
loss at its own ``lam``, and, as ``bench/front_sweep.py`` scores our sweep, seed ``i``'s set (its
policies at the sweep's 5 weightings) by expected and largest utility loss over ``lam`` uniform on
[0, 1] and hypervolume as a share of the front's, with 95% t intervals over seeds; and the same for
its policies at 21 weightings, what one conditioned network offers beyond 5. Writes
``bench/results/morl_peer.{json,md}``.

Our side is each sweep of ``bench/front_sweep.py`` in ``bench/results/`` (:data:`SWEEPS`): the
default's, 100,000 frames an agent (the peer's number of updates: same updates), and one of 20,000
frames an agent (its 5 agents of a set collect the peer's 100,000 frames: same frames).
``--rescore`` scores the peer's stored results against the sweeps as they are now, without training it again.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from bench.common import REPO, RESULTS, machine, write_results
from bench.front_sweep import DEFAULT_LAMS
from reservoir_dqn.commands.front import set_scores
from reservoir_dqn.config import load_config
from reservoir_dqn.envs.reservoir.front import CONFIGURED, Evaluator, Point, exact_front, per_year
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.profile import reservoir_settings
from reservoir_dqn.evaluation.statistics import Summary, summarize

DENSE = tuple(round(index / 20, 2) for index in range(21))
# Our sweeps set beside it (bench/results/<name>.json, from bench.front_sweep --name): the default's and 20,000 frames.
SWEEPS = ("front_sweep", "front_sweep_20000")
# The score of a set, its words on the page and its digits.
SCORES = (
    ("expected_utility_loss", "expected utility loss over lam uniform on [0, 1] (reward units)", 1),
    ("maximum_utility_loss", "largest utility loss over lam (reward units)", 1),
    ("hypervolume_ratio", "hypervolume, share of the front's (energy against deficit)", 3),
)
REWARD_SCALE = 0.01  # params.yaml's dqn.reward_scale: Q-values of order 10, not 1000


def envelope_settings(seed: int) -> dict[str, Any]:
    """Envelope's arguments: ours where the two algorithms share a setting, the library's defaults otherwise."""
    config = load_config(REPO / "params.yaml")
    dqn = config.dqn
    return {
        "learning_rate": dqn.lr,
        "initial_epsilon": dqn.eps_start,
        "final_epsilon": dqn.eps_end,
        "epsilon_decay_steps": dqn.eps_decay_frames,
        "tau": dqn.tau,
        "buffer_size": dqn.buffer_size,
        "net_arch": list(dqn.hidden_sizes),
        "batch_size": dqn.batch_size,
        "learning_starts": config.train.min_replay_size,
        "gamma": dqn.gamma,
        "max_grad_norm": dqn.max_grad_norm,
        "homotopy_decay_steps": dqn.eps_decay_frames,
        "log": False,
        "seed": seed,
        "device": "cpu",
    }


def train_and_place(seed: int, frames: int) -> tuple[float, dict[float, Point]]:
    """One seed: Envelope trained for ``frames`` frames; its greedy policy at every weighting, evaluated exactly."""
    import gymnasium
    import torch
    from morl_baselines.multi_policy.envelope.envelope import Envelope

    from reservoir_dqn.envs.reservoir.account import greedy_tables
    from reservoir_dqn.envs.reservoir.mo_gym import ReservoirMOEnv

    torch.set_num_threads(1)

    class Scaled(gymnasium.Wrapper):  # the reward scale our agents learn with; the greedy policy is the same
        def step(self, action: Any) -> Any:
            observation, reward, terminated, truncated, info = self.env.step(action)
            return observation, reward * REWARD_SCALE, terminated, truncated, info

    env = Scaled(ReservoirMOEnv())
    env.reset(seed=seed)
    agent = Envelope(env, **envelope_settings(seed))
    started = time.perf_counter()
    agent.train(total_timesteps=frames, eval_env=None)
    seconds = time.perf_counter() - started
    model = ReservoirModel.from_config(reservoir_settings(load_config(REPO / "params.yaml").env))
    evaluator = Evaluator(model)
    points = {}
    for lam in sorted({*DEFAULT_LAMS, *DENSE}):
        weight = torch.tensor([lam, 1.0 - lam], dtype=torch.float32)

        def q_values(observations: torch.Tensor, weight: torch.Tensor = weight) -> torch.Tensor:
            values = agent.q_net(observations.float(), weight.expand(len(observations), 2))
            return torch.einsum("r,bar->ba", weight, values)

        points[lam] = evaluator.point(greedy_tables(model, q_values, 1)[0], lam)
    return seconds, points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=100_000, help="frames per seed (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="seeds trained at once, one thread each")
    parser.add_argument("--rescore", action="store_true", help="the stored peer against the sweeps, not trained again")
    args = parser.parse_args()
    stored = json.loads((RESULTS / "morl_peer.json").read_text()) if args.rescore else None
    sweeps = ours(stored["frames"] if stored else args.frames)  # first: a missing sweep stops before any training
    results = stored or trained(args.seeds, args.frames, args.workers)
    results["ours"] = sweeps
    page = markdown(results)
    write_results("morl_peer", results)
    (RESULTS / "morl_peer.md").write_text(page)
    print(page)


def trained(seeds: int, frames: int, workers: int) -> dict[str, Any]:
    """The peer trained (``seeds`` seeds of ``frames`` frames, ``workers`` at once) and scored against the front."""
    with ProcessPoolExecutor(workers) as pool:
        placed = list(pool.map(train_and_place, range(seeds), [frames] * seeds))
    model = ReservoirModel.from_config(reservoir_settings(load_config(REPO / "params.yaml").env))
    front = exact_front(model)
    utility = front.best(CONFIGURED)
    rows = []
    for lam in DEFAULT_LAMS:
        points = [points[lam] for _, points in placed]
        yearly = [per_year(model, point) for point in points]
        own = [(front.best(lam) - point.utility(model, lam)) / utility for point in points]
        rows.append({
            "lam": lam,
            "energy": summarize([y["energy_gwh_per_year"] for y in yearly], low=0.0).text(1),
            "deficit": summarize([y["deficit_hm3_per_year"] for y in yearly], low=0.0).text(2),
            "spill": summarize([y["spill_hm3_per_year"] for y in yearly], low=0.0).text(1),
            "own_loss_share": summarize(own, low=0.0).text(4),
            "points": yearly,
        })  # fmt: skip
    return {
        "machine": machine(),
        "frames": frames,
        "seeds": seeds,
        "settings": {key: value for key, value in envelope_settings(0).items() if key != "seed"},
        "train_s": [seconds for seconds, _ in placed],
        "front": {"vertices": len(front.vertices), "certificate_share": front.certificate / abs(utility)},
        "configured_utility": utility,
        "lams": rows,
        "sets": set_scores(front, model, [[points[lam] for _, points in placed] for lam in DEFAULT_LAMS]),
        "dense_sets": set_scores(front, model, [[points[lam] for _, points in placed] for lam in DENSE]),
    }


def ours(peer_frames: int) -> list[dict[str, Any]]:
    """Each of our sweeps in bench/results/ (:data:`SWEEPS`): its budget against the peer's, date and set scores.

    The peer updates once a frame, our agents at ``params.yaml``'s rate; both counted from the first frame.
    """
    train = load_config(REPO / "params.yaml").train
    per_frame = train.updates_per_batch / train.frames_per_batch
    sweeps = []
    for name in SWEEPS:
        sweep = json.loads((RESULTS / f"{name}.json").read_text())
        members, frames = sweep["sets"]["members"], sweep["frames"]
        budget = {"frames": members * frames, "updates": round(members * frames * per_frame)}
        same = [what for what, amount in budget.items() if amount == peer_frames]
        sweeps.append({
            "name": name,
            "matches": f"same {' and '.join(same)}" if same else "another budget",
            "members": members,
            "frames": frames,
            "per_frame": per_frame,
            **{f"set_{what}": amount for what, amount in budget.items()},
            "date": sweep["machine"]["date"],
            "sets": _summarized(sweep["sets"]),
        })  # fmt: skip
    return sweeps


def _summarized(sets: dict[str, Any]) -> dict[str, Any]:
    """The sweep's set scores summarised as ours are, from their per-seed values (whatever the file's version)."""
    bounds = {"expected_utility_loss": (0.0,), "maximum_utility_loss": (0.0,), "hypervolume_ratio": (0.0, 1.0)}
    return {name: summarize(sets[name]["per_seed"], *low_high).as_dict() for name, low_high in bounds.items()}


def markdown(results: dict[str, Any]) -> str:
    def spread(entry: dict[str, Any], digits: int) -> str:
        return Summary.from_dict(entry).text(digits)

    sweeps, sets, dense = results["ours"], results["sets"], results["dense_sets"]
    seconds = np.median(results["train_s"])
    ours_heads = [
        f"ours, {sweep['matches']}: {sweep['members']} agents of {sweep['frames']:,} frames, one a weighting"
        for sweep in sweeps
    ]
    lines = [
        "# A morl-baselines peer: Envelope Q-learning, against the exact front",
        "",
        f"Measured on {results['machine']['date']} with `.venv/bin/python -m bench.morl_peer` (2 cores, 2 seeds at "
        f"a time, one thread each): morl-baselines' Envelope, {results['seeds']} seeds of {results['frames']:,} "
        f"frames and as many updates (one network for every weighting; median {seconds:.0f} s of training a seed). "
        f"The default reservoir's exact front: {results['front']['vertices']} corners, certificate "
        f"{results['front']['certificate_share']:.1e} of the configured optimum's utility. Points are exact "
        "expectations of each greedy policy; intervals are 95% t intervals over the seeds.",
        "",
        "Ours: a seed's set is one DQN agent for each weighting, trained by `bench/front_sweep.py`, at "
        f"{len(sweeps)} budgets (updates counted from the first frame, for the peer too: the frames each agent "
        "collects before its first update are not taken off):",
        "",
        *(
            f"- **{sweep['matches']}**: {sweep['frames']:,} frames an agent: a set's {sweep['members']} agents "
            f"collect {sweep['set_frames']:,} frames and make {sweep['set_updates']:,} updates "
            f"({sweep['per_frame']:g} a frame), against the peer's {results['frames']:,} of each "
            f"(`bench/results/{sweep['name']}.md`, measured {sweep['date']})."
            for sweep in sweeps
        ),
        "",
        "Envelope asked for each weighting:",
        "",
        "| lam | energy, GWh a year | deficit, hm3 a year | spill, hm3 a year | utility loss at its own lam "
        "(share of the configured optimum's utility) |",
        "|---|---|---|---|---|",
        *(
            f"| {row['lam']} | {row['energy']} | {row['deficit']} | {row['spill']} | {row['own_loss_share']} |"
            for row in results["lams"]
        ),
        "",
        "Seed i's set against the front:",
        "",
        f"| score | {' | '.join(ours_heads)} | Envelope at the same 5 weightings | Envelope at 21 weightings |",
        "|---|" + "---|" * (len(sweeps) + 2),
        *(
            f"| {label} | "
            + " | ".join(spread(sweep["sets"][name], digits) for sweep in sweeps)
            + f" | {spread(sets[name], digits)} | {spread(dense[name], digits)} |"
            for name, label, digits in SCORES
        ),
        "",
        f"For scale: the configured optimum's utility is {results['configured_utility']:.0f} reward units.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
