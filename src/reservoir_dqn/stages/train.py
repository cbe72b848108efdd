"""Stage ``train``: train every agent, then write the networks and the training summary.

Writes ``models/model.pt`` (the shipped agent: the one that validated best), every agent's
final and best-validated networks under ``models/agents/``, the training curves under
``logs/train/`` and ``metrics/train.json``. With tracking on, the MLflow store is checked
before any training; the parent run then receives the params, params.yaml, the summary,
the TensorBoard event files, the final checkpoint and the model, registered as a new version.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reservoir_dqn.agent import save_model, select_agents
from reservoir_dqn.checkpoint import newest_checkpoint
from reservoir_dqn.files import write_json
from reservoir_dqn.process import exit_process
from reservoir_dqn.session import start
from reservoir_dqn.stages import StageFailed, connect_tracking, run_stage, stage_config
from reservoir_dqn.training import TrainingDiverged, train

PATHS = ("model", "agents", "checkpoints", "train_log", "train_metrics")


def run(argv: Sequence[str] | None = None) -> None:
    config = stage_config("train", "Train the DQN agents; resumes from the newest valid checkpoint.", PATHS, argv)
    paths = config.paths
    tracking = connect_tracking(config)
    checkpoints = Path(paths.checkpoints)
    session = start(config, checkpoints)
    session.progress.run_ids = tracking.start_training(session.progress.run_ids)
    sinks = tracking.training_sinks(Path(paths.train_log), session.metric_groups, session.resumed_from or None)
    try:
        result = train(session, sinks)
    except TrainingDiverged as error:
        tracking.finish("FAILED")
        raise StageFailed(str(error)) from None
    except BaseException:
        tracking.finish("KILLED")
        raise
    shipped = result.best if config.train.select_best else result.final
    save_model(*select_agents(shipped, result.spec, [result.shipped_agent]), Path(paths.model))
    agents = Path(paths.agents)
    save_model(result.final, result.spec, agents / "final.pt")
    save_model(result.best, result.spec, agents / "best.pt")
    tensorboard = tracking.tensorboard_dir(result.summary["run_ids"]) if config.tracking.tensorboard else None
    summary = {
        **result.summary,
        "run_name": tracking.identity.name,
        "tensorboard_dir": None if tensorboard is None else str(tensorboard.relative_to(tracking.root)),
    }
    write_json(Path(paths.train_metrics), summary)
    artifacts: list[tuple[Path, str | None]] = [
        (config.source, None),
        (Path(paths.train_metrics), None),
        (Path(paths.train_log), "train_log"),
    ]
    if tensorboard is not None:
        artifacts.append((tensorboard, "tensorboard"))
    final = newest_checkpoint(checkpoints)
    if final is not None:
        artifacts.append((final, "checkpoint"))
    tracking.publish(artifacts, model=Path(paths.model))
    tracking.finish()
    print(
        f"{result.spec.agents} agents trained; agent {result.shipped_agent} validated best and is shipped "
        f"to {paths.model}; every agent's networks in {paths.agents}/, the summary in {paths.train_metrics}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)


if __name__ == "__main__":
    exit_process(main())
