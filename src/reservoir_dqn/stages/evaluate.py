"""Stage ``evaluate``: the trained agent and the baselines on the same seeded, unseen scenarios.

Every policy runs ``evaluate.episodes`` greedy episodes; episode ``i`` uses seed
``evaluate.seed + i`` for all of them (training never uses seeds that high). On the
reservoir the baselines are the SDP optimum, the standard operating policy and a random
policy, and the agent's return is reported as a fraction of the optimum.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from reservoir_dqn.agent import load_model
from reservoir_dqn.config import Config
from reservoir_dqn.envs import RESERVOIR, episode_success
from reservoir_dqn.envs.baselines import baseline_policies, reservoir_optimum
from reservoir_dqn.envs.reservoir import INFO_KEYS
from reservoir_dqn.evaluation import Episodes, episode_totals, run_episodes, summarize_returns
from reservoir_dqn.files import read_json, write_csv, write_json
from reservoir_dqn.stages import StageFailed, connect_tracking, run_stage, stage_config
from reservoir_dqn.tracking import Tracker

PATHS = ("model", "train_metrics", "eval_metrics", "eval_episodes", "trajectories")
TRAJECTORY_POLICIES = ("dqn", "sdp", "sop")  # whose step-by-step trajectories are written


def evaluate(config: Config, model_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the model and the baselines; return metrics, per-episode rows and per-step trajectory rows."""
    q_network, spec = load_model(model_path)
    if spec.env_name != config.env.name:
        raise StageFailed(f"{model_path} was trained on {spec.env_name} but env.name is {config.env.name}")
    settings = config.evaluate
    policies = {"dqn": q_network, **baseline_policies(config.env, spec.num_actions, settings.seed)}
    metrics: dict[str, Any] = {"env": config.env.name, "episodes": settings.episodes, "first_seed": settings.seed}
    rows: list[dict[str, Any]] = []
    trajectories: list[dict[str, Any]] = []
    for name, policy in policies.items():
        episodes = run_episodes(config.env, policy, settings.episodes, settings.seed)
        totals = episode_totals(config.env, episodes)
        succeeded = episode_success(config.env, episodes.returns, episodes.lengths, totals)
        metrics[name] = {
            **summarize_returns(episodes.returns, episodes.lengths, succeeded),
            **{f"{key}_mean": float(value.mean()) for key, value in totals.items()},
        }
        rows += episode_rows(name, episodes, succeeded, totals, settings.seed)
        if name in TRAJECTORY_POLICIES:
            trajectories += trajectory_rows(config, name, episodes, settings.trajectory_episodes)
    if config.env.name == RESERVOIR:
        metrics["sdp_expected_return"] = reservoir_optimum(config.env.reservoir).expected_return
        metrics["fraction_of_optimum"] = metrics["dqn"]["return_mean"] / metrics["sdp"]["return_mean"]
    return metrics, rows, trajectories


def episode_rows(
    policy: str, episodes: Episodes, success: torch.Tensor, totals: dict[str, torch.Tensor], first_seed: int
) -> list[dict[str, Any]]:
    """One row per episode: policy, episode index, seed, return, length, success and any totals."""
    return [
        {
            "policy": policy,
            "episode": index,
            "seed": first_seed + index,
            "return": float(episodes.returns[index]),
            "length": int(episodes.lengths[index]),
            "success": int(bool(success[index])),
            **{key: float(value[index]) for key, value in totals.items()},
        }
        for index in range(len(episodes.returns))
    ]


def trajectory_rows(config: Config, policy: str, episodes: Episodes, count: int) -> list[dict[str, Any]]:
    """Per-step rows of the first ``count`` episodes.

    Reservoir: month, storage at the start of the month, action and its release target, then
    every physical quantity and reward component of the month. Other environments: the
    action, the reward and each observation entry.
    """
    steps, nxt = episodes.steps, episodes.steps["next"]
    levels = config.env.reservoir.release_levels
    rows = []
    for index in range(min(count, steps.shape[0])):
        for step in range(int(episodes.lengths[index])):
            action = int(steps["action"][index, step])
            row: dict[str, Any] = {"policy": policy, "episode": index, "step": step}
            if config.env.name == RESERVOIR:
                row |= {
                    "month": int(steps["month"][index, step]),
                    "storage_start": float(steps["storage"][index, step]),
                    "action": action,
                    "release_target": levels[action],
                    **{key: float(nxt[key][index, step]) for key in INFO_KEYS},
                }
            else:
                row["action"] = action
                row |= {f"obs_{i}": float(value) for i, value in enumerate(steps["observation"][index, step])}
            row["reward"] = float(nxt["reward"][index, step])
            rows.append(row)
    return rows


def tracked_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The evaluation as ``eval/test_<policy>_<statistic>`` scalars (and the fraction of optimum)."""
    flat = {
        f"eval/test_{policy}_{name}": float(value)
        for policy, stats in metrics.items()
        if isinstance(stats, dict)
        for name, value in stats.items()
    }
    if "fraction_of_optimum" in metrics:
        flat["eval/test_fraction_of_optimum"] = float(metrics["fraction_of_optimum"])
    return flat


def champion_score(metrics: dict[str, Any]) -> tuple[str, float]:
    """What decides the registry's champion: the fraction of optimum on the reservoir, else the mean return."""
    if "fraction_of_optimum" in metrics:
        return "eval_fraction_of_optimum", float(metrics["fraction_of_optimum"])
    return "eval_return_mean", float(metrics["dqn"]["return_mean"])


def run(argv: Sequence[str] | None = None) -> None:
    config = stage_config("evaluate", "Evaluate the trained model and the baselines on seeded episodes.", PATHS, argv)
    paths = config.paths
    tracking = connect_tracking(config, attach=True)
    metrics, rows, trajectory = evaluate(config, Path(paths.model))
    write_json(Path(paths.eval_metrics), metrics)
    write_csv(Path(paths.eval_episodes), list(rows[0]), rows)
    write_csv(Path(paths.trajectories), list(trajectory[0]) if trajectory else ["policy"], trajectory)
    frames = int(read_json(Path(paths.train_metrics)).get("frames", 0)) if Path(paths.train_metrics).exists() else 0
    tracker = Tracker(tracking.sinks())
    tracker.log(tracked_metrics(metrics), step=frames)
    tracker.close()
    artifacts: list[tuple[Path, str | None]] = [
        (Path(paths.eval_metrics), None),
        (Path(paths.eval_episodes), None),
        (Path(paths.trajectories), None),
    ]
    if config.tracking.tensorboard:
        artifacts.append((tracking.tensorboard_dir, "tensorboard"))
    if tracking.run is not None:
        version = tracking.run.tag("model_version")
        if version is not None:
            metric, score = champion_score(metrics)
            tracking.promote_if_better(config.env.name, version, score, metric)
    tracking.publish(artifacts)
    print(report(metrics))


def report(metrics: dict[str, Any]) -> str:
    """A few lines a person reads after the stage: each policy's return, and the fraction of optimum."""
    lines = [f"{metrics['env']}: {metrics['episodes']} evaluation episodes per policy"]
    for name in ("dqn", "sdp", "sop", "random"):
        if name in metrics:
            m = metrics[name]
            lines.append(
                f"  {name:>6}: return {m['return_mean']:9.2f} +- {m['return_std']:7.2f}   "
                f"success {m['success_rate']:.2f}"
            )
    if "fraction_of_optimum" in metrics:
        lines.append(f"  DQN reaches {metrics['fraction_of_optimum']:.3f} of the SDP optimum")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)


if __name__ == "__main__":
    sys.exit(main())
