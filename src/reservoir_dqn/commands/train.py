"""Stage ``train``: train every agent, then write the networks and the training summary.

Writes ``models/model.pt`` (the shipped agent: the one that validated best), every agent's
final and best-validated networks under ``models/agents/``, the training curves under
``logs/train/`` and ``metrics/train.json`` (with the parameters it trained on), as a set:
all of them replace the previous ones only once every one is written, and only when
params.yaml did not change while training ran (:mod:`reservoir_dqn.commands.workspace`). The
training log grows in the checkpoint folder meanwhile, and is resumed with it. With
tracking on, the MLflow store is checked before any training; the parent run then receives
the params, params.yaml, the summary, the TensorBoard event files and the final checkpoint
(the export stage registers the model, once it is evaluated and exported). The runs end
FINISHED, FAILED or KILLED.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from reservoir_dqn.agent import save_model, select_agents
from reservoir_dqn.commands.plumbing import StageFailed, connect_tracking, run_stage
from reservoir_dqn.commands.stage import stage_config
from reservoir_dqn.commands.workspace import ParamsSnapshot, trained_params
from reservoir_dqn.common.files import OutputSet, write_json
from reservoir_dqn.common.process import exit_process
from reservoir_dqn.config import ENV_PARAMS
from reservoir_dqn.training.checkpoints import newest_checkpoint
from reservoir_dqn.training.loop import TrainingDiverged, train
from reservoir_dqn.training.session import start

PATHS = ("model", "agents", "checkpoints", "train_log", "train_metrics")
OUTPUTS = ("model", "agents", "train_log", "train_metrics")  # written as a set, after training
# The params dvc.yaml lists for this stage: the sections that make a training, and the tracking keys
# that change what it writes (whether runs exist and where, the TensorBoard folder, the curves' points). The
# connection (uri, connect_timeout_s), the registry and the champion budget change no result.
PARAMS = (
    "seed",
    *ENV_PARAMS,
    "dqn",
    "train",
    "tracking.enabled",
    "tracking.backend",
    "tracking.tensorboard",
    "tracking.log_interval_frames",
)
LIVE_LOG = "train_log"  # the training log while it grows: in the checkpoint folder, resumed with it


def run(argv: Sequence[str] | None = None) -> None:
    description = "Train the DQN agents; resumes from the newest valid checkpoint."
    config = stage_config("train", description, PATHS, argv, training=True)
    snapshot = ParamsSnapshot.take(config)
    paths = config.paths
    checkpoints = Path(paths.checkpoints)
    model, agents, train_log, train_metrics = (Path(getattr(paths, name)) for name in OUTPUTS)
    outputs = OutputSet([model, agents, train_log, train_metrics])
    outputs.check()  # a folder that cannot be written fails now, not after the training
    tracking = connect_tracking(config)
    with tracking.finishing():
        session = start(config, checkpoints)
        session.progress.run_ids = tracking.start_training(session.progress.run_ids)
        live_log = checkpoints / LIVE_LOG
        sinks = tracking.training_sinks(live_log, session.metric_groups, session.resumed_from or None)
        try:
            result = train(session, sinks)
        except TrainingDiverged as error:
            raise StageFailed(str(error)) from None
        tensorboard = tracking.tensorboard_dir(result.summary.run_ids) if config.tracking.tensorboard else None
        summary = result.summary.model_copy(
            update={
                "params": trained_params(config),
                "run_name": tracking.identity.name,
                "tensorboard_dir": None if tensorboard is None else str(tensorboard.relative_to(tracking.root)),
            }
        )
        with outputs:
            shipped = result.best if config.train.select_best else result.final
            save_model(*select_agents(shipped, result.spec, [result.shipped_agent]), outputs.path(model))
            save_model(result.final, result.spec, outputs.path(agents) / "final.pt")
            save_model(result.best, result.spec, outputs.path(agents) / "best.pt")
            shutil.copytree(live_log, outputs.path(train_log))
            write_json(outputs.path(train_metrics), summary.to_json())
            if (changed := snapshot.check_unchanged("train", PARAMS)) is not None:
                raise StageFailed(changed)
        artifacts: list[tuple[Path, str | None]] = [
            (config.source, None),
            (train_metrics, None),
            (train_log, "train_log"),
        ]
        if tensorboard is not None:
            artifacts.append((tensorboard, "tensorboard"))
        final = newest_checkpoint(checkpoints)
        if final is not None:
            artifacts.append((final, "checkpoint"))
        tracking.publish(artifacts)
    print(
        f"{result.spec.agents} agents trained; agent {result.shipped_agent} validated best and is shipped "
        f"to {paths.model}; every agent's networks in {paths.agents}/, the summary in {paths.train_metrics}"
    )
    print(f"validated on {result.summary.validation_reference.episodes}")
    print(result.summary.convergence())


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)


if __name__ == "__main__":
    exit_process(main())
