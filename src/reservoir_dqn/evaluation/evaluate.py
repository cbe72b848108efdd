"""Evaluating a training: every agent and the baselines on the same seeded, unseen test scenarios.

Every agent's final network and best-validated snapshot, and every baseline, plays
``evaluate.episodes`` greedy episodes; episode ``i`` uses seed ``evaluate.seed + i`` for all
of them (training never uses seeds that high). Each metric is reported per seed with its
mean, interquartile mean and 95% Student-t interval over seeds, clipped to the metric's range
where the profile declares one; the score is ``(R - R_random) / (R_optimum - R_random)`` on
these same scenarios.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
from torchrl.modules import QValueActor

from reservoir_dqn.agent import NetworkSpec, load_model, stacked_mlp
from reservoir_dqn.common.errors import RunFailed
from reservoir_dqn.config import Config
from reservoir_dqn.envs import EnvProfile, Episodes, profile
from reservoir_dqn.evaluation.episodes import describe, exact_metrics, paired_regret, reference, run_agents
from reservoir_dqn.evaluation.reoperation import evaluate_held_out
from reservoir_dqn.evaluation.results import NETWORKS, Evaluation
from reservoir_dqn.evaluation.scoring import UTILITY_LOSSES
from reservoir_dqn.evaluation.trade_offs import TradeOffs


def evaluate(
    config: Config, agents_folder: Path, shipped: tuple[int, str]
) -> tuple[Evaluation, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Run the agents' networks and the baselines; return the evaluation, per-episode rows, trajectory rows and
    the shipped agent's exact account state by state (no rows where the environment has no exact optimum).
    ``shipped``: the agent and the network (``final`` or ``best``) the training shipped.

    Where the profile names its optimal baseline, every policy's regret is measured against it scenario by
    scenario; where it is a finite MDP with a known optimum, every agent's greedy policy is accounted exactly
    (:meth:`~reservoir_dqn.envs.EnvProfile.exact_accounts`) and checked against its Monte Carlo test mean; where
    the reward trades objectives whose exact front the profile computes, every agent is placed on it
    (:meth:`~reservoir_dqn.envs.EnvProfile.trade_offs`) and its utility losses join its metrics."""
    env_profile, settings = profile(config.env), config.evaluate
    networks = {network: load_model(agents_folder / f"{network}.pt") for network in NETWORKS}
    spec = networks["final"][1]
    if spec.env_name != config.env.name:
        raise RunFailed(f"{agents_folder} holds agents trained on {spec.env_name} but env.name is {config.env.name}")
    test = env_profile.test_config(config.env)  # a reservoir that learnt from the record: tested on the chain
    score_reference, baseline_episodes = reference(
        env_profile, test, spec.num_actions, settings.episodes, settings.seed
    )
    played: dict[str, list[Episodes]] = {
        network: run_agents(env_profile, test, q_network, spec.agents, settings.episodes, settings.seed)
        for network, (q_network, spec) in networks.items()
    }

    optimum = baseline_episodes.get(env_profile.optimum_baseline or "")
    accounts = {
        network: env_profile.exact_accounts(test, stacked_mlp(q_network), spec.agents)
        for network, (q_network, spec) in networks.items()
    }

    described = env_profile.trade_offs(
        test, {network: (stacked_mlp(q_network), spec.agents) for network, (q_network, spec) in networks.items()}
    )
    trade_offs = None if described is None else TradeOffs.from_described(described)

    def metrics(episodes: Episodes) -> dict[str, float]:
        described = describe(env_profile, test, episodes)
        values = {"score": float(score_reference.score(described["return"])), **described}
        return values | (paired_regret(episodes, optimum) if optimum is not None else {})

    def agent_metrics(network: str, agent: int, episodes: Episodes) -> dict[str, float]:
        found = accounts[network]
        values = metrics(episodes) | (exact_metrics(found[agent], episodes) if found is not None else {})
        if trade_offs is not None:
            values |= {name: trade_offs.agents[network][agent][key] for name, key in UTILITY_LOSSES.items()}
        return values

    evaluation = Evaluation.assemble(
        env=config.env.name,
        first_seed=settings.seed,
        reference=score_reference,
        optimum_label=env_profile.optimum_label,
        headline=tuple(metric.name for metric in env_profile.headline),
        per_agent={
            network: [agent_metrics(network, agent, episodes) for agent, episodes in enumerate(agents)]
            for network, agents in played.items()
        },
        baselines={name: metrics(episodes) for name, episodes in baseline_episodes.items()},
        shipped=shipped,
        episodes=settings.episodes,
        settings=env_profile.settings(config.env),
        ranges={metric.name: (metric.low, metric.high) for metric in env_profile.metrics},
    )
    evaluation = dataclasses.replace(evaluation, trade_offs=trade_offs)
    evaluation, held_out_rows = _re_operate(config, env_profile, networks, evaluation)
    rows = [_episode_rows(config, "dqn", episodes, agent) for agent, episodes in enumerate(played["final"])]
    rows += [_episode_rows(config, name, episodes, None) for name, episodes in baseline_episodes.items()]
    shipped_episodes = played[evaluation.shipped_network][evaluation.shipped_agent]
    trajectory_policies = {"dqn": shipped_episodes, **{k: v for k, v in baseline_episodes.items() if k != "random"}}
    trajectories = [
        env_profile.trajectory_rows(config.env, name, episodes, settings.trajectory_episodes)
        for name, episodes in trajectory_policies.items()
    ]
    trajectory_rows = [row for part in trajectories for row in part] + held_out_rows
    shipped_account = accounts[evaluation.shipped_network]
    states = [] if shipped_account is None else env_profile.state_rows(test, shipped_account[evaluation.shipped_agent])
    return evaluation, pd.concat(rows, ignore_index=True), pd.DataFrame(trajectory_rows), pd.DataFrame(states)


def _re_operate(
    config: Config,
    env_profile: EnvProfile,
    networks: dict[str, tuple[QValueActor, NetworkSpec]],
    evaluation: Evaluation,
) -> tuple[Evaluation, list[dict[str, Any]]]:
    """The held-out record the profile offers (a record-driven reservoir's) replayed by every policy
    (:mod:`reservoir_dqn.evaluation.reoperation`): the evaluation with its held-out results, and the
    trajectory rows of its first window."""
    if (record := env_profile.held_out(config.env)) is None:
        return evaluation, []
    agents = {network: (q_network, spec.agents) for network, (q_network, spec) in networks.items()}
    held_out = evaluate_held_out(record, agents)
    q_network, spec = networks[evaluation.shipped_network]
    rows = record.trajectory_rows((q_network, spec.agents, evaluation.shipped_agent))
    return dataclasses.replace(evaluation, held_out=held_out), rows


def _episode_rows(config: Config, policy: str, episodes: Episodes, agent: int | None) -> pd.DataFrame:
    """One row per episode: policy, agent ('-' for a baseline), episode, seed, return, length and totals."""
    first = config.evaluate.seed
    frame = pd.DataFrame(
        {
            "policy": policy,
            "agent": "-" if agent is None else str(agent),
            "episode": range(len(episodes)),
            "seed": [first + index for index in range(len(episodes))],
            "return": episodes.returns.double().numpy(),
            "length": episodes.lengths.long().numpy(),
        }
    )
    for name, values in profile(config.env).episode_columns(config.env, episodes).items():
        frame[name] = values.numpy()
    return frame
