"""Stage ``evaluate``: greedy evaluation of the trained model on seeded, unseen scenarios."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reservoir_dqn.agent import load_model
from reservoir_dqn.config import Config, config_from_args
from reservoir_dqn.evaluation import Episodes, episode_success, run_episodes, summarize_returns
from reservoir_dqn.files import write_csv, write_json
from reservoir_dqn.stages import StageFailed, path_overrides, run_stage, stage_parser

PATH_OPTIONS = ("model", "eval_metrics", "eval_episodes", "trajectories")


def evaluate(config: Config, model_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Evaluate the model greedily; return metrics, per-episode rows and per-step trajectory rows."""
    q_network, spec = load_model(model_path)
    if spec.env_name != config.env.name:
        raise StageFailed(f"{model_path} was trained on {spec.env_name} but env.name is {config.env.name}")
    settings = config.evaluate
    episodes = run_episodes(config.env, q_network, settings.episodes, settings.seed)
    success = episode_success(config.env, episodes)
    metrics = {
        "env": config.env.name,
        "episodes": settings.episodes,
        "first_seed": settings.seed,
        "dqn": summarize_returns(episodes.returns, episodes.lengths, success),
    }
    rows = episode_rows("dqn", episodes, success, settings.seed)
    return metrics, rows, trajectory_rows("dqn", episodes, settings.trajectory_episodes)


def episode_rows(policy: str, episodes: Episodes, success: Any, first_seed: int) -> list[dict[str, Any]]:
    """One row per episode: policy, episode index, seed, return, length, success."""
    return [
        {
            "policy": policy,
            "episode": index,
            "seed": first_seed + index,
            "return": float(episodes.returns[index]),
            "length": int(episodes.lengths[index]),
            "success": int(bool(success[index])),
        }
        for index in range(len(episodes.returns))
    ]


def trajectory_rows(policy: str, episodes: Episodes, count: int) -> list[dict[str, Any]]:
    """Per-step rows of the first ``count`` episodes: action, reward and each observation entry."""
    steps = episodes.steps
    rows = []
    for index in range(min(count, steps.shape[0])):
        length = int(episodes.lengths[index])
        observation = steps["observation"][index, :length]
        for step in range(length):
            row = {
                "policy": policy,
                "episode": index,
                "step": step,
                "action": int(steps["action"][index, step]),
                "reward": float(steps["next", "reward"][index, step]),
            }
            row.update({f"obs_{i}": float(value) for i, value in enumerate(observation[step])})
            rows.append(row)
    return rows


def run(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("evaluate", "Evaluate the trained model greedily on seeded evaluation episodes.")
    parser.add_argument("--model", help="model file to evaluate (default: paths.model)")
    parser.add_argument("--metrics", dest="eval_metrics", help="metrics JSON (default: paths.eval_metrics)")
    parser.add_argument("--episodes-csv", dest="eval_episodes", help="per-episode CSV (default: paths.eval_episodes)")
    parser.add_argument("--trajectories", help="per-step CSV (default: paths.trajectories)")
    args = parser.parse_args(argv)
    path_overrides(args, PATH_OPTIONS)
    config = config_from_args(args)
    paths = config.paths
    metrics, rows, trajectory = evaluate(config, Path(paths.model))
    write_json(Path(paths.eval_metrics), metrics)
    write_csv(Path(paths.eval_episodes), list(rows[0]), rows)
    write_csv(Path(paths.trajectories), list(trajectory[0]) if trajectory else ["policy"], trajectory)
    dqn = metrics["dqn"]
    print(
        f"{config.env.name}: greedy return {dqn['return_mean']:.2f} +- {dqn['return_std']:.2f} over "
        f"{metrics['episodes']} episodes, success rate {dqn['success_rate']:.2f}; metrics in {paths.eval_metrics}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)


if __name__ == "__main__":
    sys.exit(main())
