"""Stage ``evaluate``: every agent and the baselines on the same seeded, unseen test scenarios.

Every agent's final network and best-validated snapshot, and every baseline, plays
``evaluate.episodes`` greedy episodes (:mod:`reservoir_dqn.evaluation.evaluate`); the stage
writes the results as a set, records them with the tracking backend and prints the table
(:mod:`reservoir_dqn.evaluation.report`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from reservoir_dqn.commands.plumbing import StageFailed, run_stage
from reservoir_dqn.commands.stage import open_stage
from reservoir_dqn.common.files import OutputSet, write_csv, write_json
from reservoir_dqn.common.process import exit_process
from reservoir_dqn.config import ENV_PARAMS
from reservoir_dqn.evaluation.evaluate import evaluate
from reservoir_dqn.evaluation.metric_names import TRAIN_MINUTES
from reservoir_dqn.evaluation.report import report, tracked_metrics
from reservoir_dqn.tracking.outcomes import log_evaluation

PATHS = ("agents", "train_metrics", "eval_metrics", "summary", "eval_episodes", "trajectories", "policy_states")
OUTPUTS = ("eval_metrics", "summary", "eval_episodes", "trajectories", "policy_states")  # written as a set
PARAMS = (*ENV_PARAMS, "evaluate", "tracking")  # the sections dvc.yaml lists for this stage


def run(argv: Sequence[str] | None = None) -> None:
    stage = open_stage(
        "evaluate", "Evaluate every agent and the baselines on seeded test episodes.", PATHS, PARAMS, argv
    )
    config, snapshot, tracking, trained = stage.config, stage.snapshot, stage.tracking, stage.trained
    paths = config.paths
    tracking.attach(trained.run_ids)
    with tracking.finishing():
        shipped = (trained.shipped_agent, trained.shipped_network)
        evaluation, episodes, trajectories, states = evaluate(config, Path(paths.agents), shipped)
        converged = tuple(agent.converged_at_frames for agent in trained.agents)
        evaluation = dataclasses.replace(evaluation, converged_at_frames=converged)
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
        log_evaluation(tracking, evaluation, metrics, trained.tensorboard_dir, trained.frames)
        published = (paths.eval_metrics, paths.summary, paths.eval_episodes, paths.policy_states)
        tracking.publish([(Path(path), None) for path in published])
    print(report(evaluation))


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)


if __name__ == "__main__":
    exit_process(main())
