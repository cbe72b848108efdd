"""Stage ``evaluate``: every agent and the baselines on the same seeded, unseen test scenarios.

Every agent's final network and best-validated snapshot, and every baseline, plays
``evaluate.episodes`` greedy episodes; episode ``i`` uses seed ``evaluate.seed + i`` for all
of them (training never uses seeds that high). Each metric is reported per seed with its
mean, interquartile mean and 95% Student-t interval over seeds; the score is
``(R - R_random) / (R_optimum - R_random)`` on these same scenarios.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from torchrl.modules import QValueActor

from reservoir_dqn.agent import NetworkSpec, load_model, stacked_mlp
from reservoir_dqn.commands import StageFailed, connect_tracking, run_stage
from reservoir_dqn.config import ENV_PARAMS, Config
from reservoir_dqn.envs import EnvProfile, Episodes, profile
from reservoir_dqn.evaluation import describe, exact_metrics, paired_regret, reference, run_agents
from reservoir_dqn.files import OutputSet, write_csv, write_json
from reservoir_dqn.metric_names import TRAIN_MINUTES, best_snapshot_name, stat_name
from reservoir_dqn.process import exit_process
from reservoir_dqn.reoperation import evaluate_held_out, held_out_trajectories, held_out_windows
from reservoir_dqn.results import NETWORKS, Evaluation, HeldOut
from reservoir_dqn.scoring import EXACT_GAP, EXACT_RETURN, EXACT_Z, REGRET
from reservoir_dqn.stages import stage_config, training_summary
from reservoir_dqn.statistics import Summary
from reservoir_dqn.summary import Training
from reservoir_dqn.tracking.outcomes import log_evaluation
from reservoir_dqn.workspace import ParamsSnapshot, mismatch_with_training

PATHS = ("agents", "train_metrics", "eval_metrics", "summary", "eval_episodes", "trajectories", "policy_states")
OUTPUTS = ("eval_metrics", "summary", "eval_episodes", "trajectories", "policy_states")  # written as a set
PARAMS = (*ENV_PARAMS, "evaluate", "tracking")  # the sections dvc.yaml lists for this stage


def evaluate(
    config: Config, agents_folder: Path, trained: Training
) -> tuple[Evaluation, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Run the agents' networks and the baselines; return the evaluation, per-episode rows, trajectory rows and
    the shipped agent's exact account state by state (no rows where the environment has no exact optimum).

    Where the profile names its optimal baseline, every policy's regret is measured against it scenario by
    scenario; where it is a finite MDP with a known optimum, every agent's greedy policy is accounted exactly
    (:meth:`~reservoir_dqn.envs.EnvProfile.exact_accounts`) and checked against its Monte Carlo test mean."""
    env_profile, settings = profile(config.env), config.evaluate
    networks = {network: load_model(agents_folder / f"{network}.pt") for network in NETWORKS}
    spec = networks["final"][1]
    if spec.env_name != config.env.name:
        raise StageFailed(f"{agents_folder} holds agents trained on {spec.env_name} but env.name is {config.env.name}")
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

    def metrics(episodes: Episodes) -> dict[str, float]:
        described = describe(env_profile, test, episodes)
        values = {"score": float(score_reference.score(described["return"])), **described}
        return values | (paired_regret(episodes, optimum) if optimum is not None else {})

    def agent_metrics(network: str, agent: int, episodes: Episodes) -> dict[str, float]:
        found = accounts[network]
        return metrics(episodes) | (exact_metrics(found[agent], episodes) if found is not None else {})

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
        shipped=(trained.shipped_agent, trained.shipped_network),
        episodes=settings.episodes,
        settings=env_profile.settings(config.env),
    )
    evaluation, held_out_rows = _re_operate(config, env_profile, networks, evaluation)
    rows = [_episode_rows(config, "dqn", episodes, agent) for agent, episodes in enumerate(played["final"])]
    rows += [_episode_rows(config, name, episodes, None) for name, episodes in baseline_episodes.items()]
    shipped = played[evaluation.shipped_network][evaluation.shipped_agent]
    trajectory_policies = {"dqn": shipped, **{k: v for k, v in baseline_episodes.items() if k != "random"}}
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
    """A record-driven reservoir's held-out record replayed by every policy (:mod:`reservoir_dqn.reoperation`):
    the evaluation with its held-out results, and the trajectory rows of its first window."""
    if (windows := held_out_windows(env_profile, config.env)) is None:
        return evaluation, []
    seed = config.evaluate.seed
    agents = {network: (q_network, spec.agents) for network, (q_network, spec) in networks.items()}
    held_out = evaluate_held_out(env_profile, config.env, agents, windows, seed)
    q_network, spec = networks[evaluation.shipped_network]
    shipped = (q_network, spec.agents, evaluation.shipped_agent)
    rows = held_out_trajectories(env_profile, config.env, shipped, windows)
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


def tracked_metrics(evaluation: Evaluation, train_minutes: float) -> dict[str, float]:
    """The parent run's metrics: each headline metric's mean, IQM and interval (final networks), the time, the
    regret to the optimum and the exact gap where there are, and the held-out record's figures
    where there is one (named as in ``summary.json``, :meth:`HeldOut.metrics`).

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
    if evaluation.held_out is not None:
        metrics |= evaluation.held_out.metrics()
    return {name: float(f"{value:.4g}") for name, value in metrics.items()}


def _number(name: str, value: float) -> str:
    return f"{value:,.1f}" if name == "return" else f"{value:.3f}"


def report(evaluation: Evaluation) -> str:
    """The table a person reads after the stage: each headline metric per policy, with its interval over seeds."""
    names = evaluation.headline
    width = 27
    lines = [
        f"{evaluation.env}: {evaluation.seeds} agents x {evaluation.episodes} test episodes; "
        f"score 0 = random, 1 = {evaluation.optimum_label}",
        f"  {'policy':<21}" + "".join(f"{name:>{width}}" for name in names),
    ]

    def cell(name: str, summary: Summary) -> str:
        text = _number(name, summary.mean)
        if summary.ci_low is not None and summary.ci_high is not None:
            text += f" [{_number(name, summary.ci_low)}, {_number(name, summary.ci_high)}]"
        return f"{text:>{width}}"

    for network in NETWORKS:
        label = "DQN, final networks" if network == "final" else "DQN, best snapshots"
        lines.append(f"  {label:<21}" + "".join(cell(name, evaluation.metric(name, network)) for name in names))
    for policy, values in sorted(evaluation.baselines.items(), key=lambda item: -item[1][names[0]]):
        lines.append(f"  {policy:<21}" + "".join(f"{_number(name, values[name]):>{width}}" for name in names))
    lines.append(
        f"  DQN: mean [95% Student-t interval] over {evaluation.seeds} seeds. Shipped: "
        f"seed {evaluation.shipped_agent}'s {evaluation.shipped_network} network, the best on the validation seeds."
    )
    lines += optimum_report(evaluation)
    if evaluation.held_out is not None:
        lines += ["", *held_out_report(evaluation.held_out, evaluation.seeds)]
    return "\n".join(lines)


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
    lines = [
        f"held-out record: {len(held_out.windows)} windows starting {first} to {last}; "
        "score 0 = random, 1 = foresight (deterministic DP knowing the inflows)",
        f"  {'policy':<38}{'score [95% block bootstrap]':>30}{'return per window':>20}",
    ]
    rows = [(f"DQN, {network} networks (mean of seeds)", score) for network, score in held_out.dqn.items()]
    rows += sorted(held_out.baselines.items(), key=lambda item: -item[1].score)
    for label, score in rows:
        interval = f"{score.score:.3f} [{score.score_lo:.3f}, {score.score_hi:.3f}]"
        lines.append(f"  {label:<38}{interval:>30}{score.mean_return:>20,.1f}")
    for network, (value, low, high) in held_out.dqn_over_sdp.items():
        per_seed = ", ".join(f"{score:.3f}" for score in held_out.dqn_per_seed[network].per_seed)
        lines.append(
            f"  DQN {network} over the Markov SDP: {value:.3f} [{low:.3f}, {high:.3f}]; per seed ({seeds}): {per_seed}"
        )
    lines.append(f"  Intervals: moving blocks of {held_out.block_years} water years, {held_out.resamples:,} resamples.")
    return lines


def run(argv: Sequence[str] | None = None) -> None:
    config = stage_config("evaluate", "Evaluate every agent and the baselines on seeded test episodes.", PATHS, argv)
    snapshot = ParamsSnapshot.take(config)
    paths = config.paths
    tracking = connect_tracking(config)
    trained = training_summary(config)
    if (mismatch := mismatch_with_training(config, trained.params, PARAMS, Path(paths.train_metrics))) is not None:
        raise StageFailed(mismatch)
    tracking.attach(trained.run_ids)
    with tracking.finishing():
        evaluation, episodes, trajectories, states = evaluate(config, Path(paths.agents), trained)
        headline = evaluation.headline_metrics() | {TRAIN_MINUTES: round(trained.train_time_s / 60, 2)}
        targets = [Path(getattr(paths, name)) for name in OUTPUTS]
        with OutputSet(targets) as outputs:
            eval_metrics, summary, eval_episodes, trajectories_csv, states_csv = (
                outputs.path(target) for target in targets
            )
            write_json(eval_metrics, evaluation.to_json())
            write_json(summary, headline)
            write_csv(eval_episodes, episodes)
            write_csv(trajectories_csv, trajectories)
            write_csv(states_csv, states)
            if (changed := snapshot.check_unchanged("evaluate", PARAMS)) is not None:
                raise StageFailed(changed)
        metrics = tracked_metrics(evaluation, headline[TRAIN_MINUTES] or 0.0)
        log_evaluation(tracking, evaluation, metrics, trained.tensorboard_dir)
        published = (paths.eval_metrics, paths.summary, paths.eval_episodes, paths.policy_states)
        tracking.publish([(Path(path), None) for path in published])
    print(report(evaluation))


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)


if __name__ == "__main__":
    exit_process(main())
