"""Stage ``train``: train the agent, then write the model and the training metrics.

With tracking on, the MLflow store is checked before any training; the run then receives
the params, the training curves, params.yaml, the metrics, the TensorBoard event files,
the final checkpoint and the model, which is registered as a new version.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from reservoir_dqn.agent import save_model
from reservoir_dqn.checkpoint import newest_checkpoint
from reservoir_dqn.files import write_json
from reservoir_dqn.stages import StageFailed, connect_tracking, run_stage, stage_config
from reservoir_dqn.training import TrainingDiverged, train

PATHS = ("model", "checkpoints", "train_log", "train_metrics")


def run(argv: Sequence[str] | None = None) -> None:
    config = stage_config("train", "Train a DQN agent; resumes from the newest valid checkpoint.", PATHS, argv)
    paths = config.paths
    tracking = connect_tracking(config, attach=False)
    try:
        result = train(config, Path(paths.checkpoints), Path(paths.train_log), tracking)
    except TrainingDiverged as error:
        tracking.finish("FAILED")
        raise StageFailed(str(error)) from None
    except BaseException:
        tracking.finish("KILLED")
        raise
    save_model(result.q_network, result.spec, Path(paths.model))
    write_json(Path(paths.train_metrics), {"env": config.env.name, **result.summary})
    artifacts: list[tuple[Path, str | None]] = [
        (config.source, None),
        (Path(paths.train_metrics), None),
        (Path(paths.train_log), None),
    ]
    if config.tracking.tensorboard:
        artifacts.append((tracking.tensorboard_dir, "tensorboard"))
    final = newest_checkpoint(Path(paths.checkpoints))
    if final is not None:
        artifacts.append((final, "checkpoint"))
    tracking.publish(artifacts, model=Path(paths.model))
    print(f"model written to {paths.model}; training metrics in {paths.train_metrics}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)


if __name__ == "__main__":
    sys.exit(main())
