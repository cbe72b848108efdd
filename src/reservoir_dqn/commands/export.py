"""Stage ``export``: the shipped policy as ONNX, checked outside PyTorch on every state of its grid.

Writes ``paths.onnx`` (``models/policy.onnx``), which any ONNX runtime runs without this
package or PyTorch:

- input ``observation``: ``[batch, observation]`` float32, raw, as the environment gives it;
- outputs: the chosen action in the environment's own units, ``[batch]`` (the reservoir:
  ``release_hm3``, the release target in hm3 per month; elsewhere ``action``, its index), and
  ``q_values``, ``[batch, actions]``.

The file's metadata names the observation's fields and their bounds (the environment's observation
space, which the served model enforces), the actions' values and the environment.
Before it replaces the previous file, the export runs in ONNX Runtime in a separate process
that does not import torch (:mod:`reservoir_dqn.release.onnx_check`) on every state of the SDP's grid
(a finite environment) or on the observations of seeded random-policy episodes (any other),
and must choose torch's action everywhere with Q-values within ``1e-5``; otherwise the stage
fails (exit status 4) and the previous file stays.

With tracking on, the checked file is then the registered model: an MLflow pyfunc that runs
it in ONNX Runtime (:mod:`reservoir_dqn.tracking.served_policy`), its signature the
observation's fields in and the action's value and the Q-values out, its input example a
real state (the first observation of a seeded episode), its description the model card
(:mod:`reservoir_dqn.release.card`) and its tags the evaluation's per-seed scores, on which
``reservoir-dqn promote`` decides. ``mlflow models serve`` serves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reservoir_dqn.agent import load_model
from reservoir_dqn.commands.plumbing import StageFailed, run_stage
from reservoir_dqn.commands.stage import open_stage
from reservoir_dqn.common.files import OutputSet, file_digest, read_json
from reservoir_dqn.common.process import exit_process
from reservoir_dqn.config import ENV_PARAMS, Config
from reservoir_dqn.envs import profile
from reservoir_dqn.evaluation.results import Evaluation
from reservoir_dqn.release.card import Release, model_card
from reservoir_dqn.release.export import (
    TOLERANCE,
    check,
    check_observations,
    export,
    initial_observation,
    policy_metadata,
)
from reservoir_dqn.release.policy import OperatorPolicy
from reservoir_dqn.tracking.naming import Tag
from reservoir_dqn.training.summary import Training

PATHS = ("model", "train_metrics", "eval_metrics", "onnx")
PARAMS = (*ENV_PARAMS, "tracking")  # the sections dvc.yaml lists for this stage


def evaluation_of(config: Config, trained: Training) -> Evaluation:
    """What evaluate measured of this training (``paths.eval_metrics``): the card's figures and the champion's evidence.

    An evaluation of another training (other seeds or another shipped agent: evaluate was not
    run after the last training) is refused in one line.
    """
    path = Path(config.paths.eval_metrics)
    try:
        evaluation = Evaluation.from_json(read_json(path))
    except FileNotFoundError:
        raise StageFailed(f"{path} is missing: run the evaluate stage first") from None
    except (KeyError, TypeError, ValueError) as error:
        raise StageFailed(f"{path} cannot be read ({error}): run the evaluate stage again") from None
    if evaluation.env != config.env.name:
        raise StageFailed(f"{path} evaluates {evaluation.env} but env.name is {config.env.name}: run evaluate again")
    evaluated = (evaluation.seeds, evaluation.shipped_agent, evaluation.shipped_network)
    if evaluated != (trained.seeds, trained.shipped_agent, trained.shipped_network):
        raise StageFailed(
            f"{path} evaluates another training ({evaluation.seeds} seeds, agent {evaluation.shipped_agent}'s "
            f"{evaluation.shipped_network} network shipped; {config.paths.train_metrics}: {trained.seeds} seeds, agent "
            f"{trained.shipped_agent}'s {trained.shipped_network}): run the evaluate stage again"
        )
    return evaluation


def run(argv: Sequence[str] | None = None) -> None:
    stage = open_stage("export", "Export the shipped policy as ONNX, checked outside torch.", PATHS, PARAMS, argv)
    config, snapshot, tracking, trained = stage.config, stage.snapshot, stage.tracking, stage.trained
    paths = config.paths
    q_network, spec = load_model(Path(paths.model))
    if spec.env_name != config.env.name:
        raise StageFailed(f"{paths.model} holds an agent trained on {spec.env_name} but env.name is {config.env.name}")
    env_profile = profile(config.env)
    shipped = f"agent {trained.shipped_agent}, {trained.shipped_network} network"
    output, values, metadata = policy_metadata(config, spec, shipped)
    policy = OperatorPolicy(q_network, values)
    fields = env_profile.observation_fields(config.env, spec.obs_dim)
    observations = check_observations(config, spec)
    checked = "states of the grid" if env_profile.grid_observations(config.env) is not None else "observations"
    evaluation = evaluation_of(config, trained)
    logger = None
    if tracking.store is not None:
        from reservoir_dqn.tracking.registry import ModelLogger  # MLflow: only once a store answered

        logger = ModelLogger(config.tracking.register_model)
    tracking.attach(trained.run_ids, logger)
    with tracking.finishing():
        target = Path(paths.onnx)
        with OutputSet([target]) as outputs:
            staged = outputs.path(target)
            export(policy, staged, output, metadata)
            result = check(staged, policy, observations)
            if not result.passed:
                raise StageFailed(
                    f"the ONNX policy disagrees with torch's: {result.same_action} of {result.observations} actions "
                    f"agree, Q-values within {result.max_q_error:.2g} (at most {TOLERANCE:g}); nothing was written"
                )
            if (changed := snapshot.check_unchanged("export", PARAMS)) is not None:
                raise StageFailed(changed)
        if tracking.run is not None:
            commit = tracking.run.tag(Tag.GIT_COMMIT) or tracking.identity.commit
            card = model_card(
                trained.run_name or tracking.identity.name, commit, trained, evaluation, fields, output, values.tolist()
            )
            release = Release(
                env=config.env.name,
                onnx=str(target),
                digest=file_digest(target) or "",
                output=output,
                card=card,
                example=dict(zip(fields, initial_observation(config).tolist(), strict=True)),
                scores=list(evaluation.shipped_scores()),
                conditions=evaluation.conditions,
            )
            tracking.publish([(target, "onnx")], model=release.to_json())
    print(
        f"{paths.onnx}: observation [batch, {spec.obs_dim}] ({', '.join(fields)}) -> {output} [batch], "
        f"q_values [batch, {spec.num_actions}]; ONNX Runtime without torch gives torch's action on all "
        f"{result.observations:,} {checked}, Q-values within {result.max_q_error:.1g}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)


if __name__ == "__main__":
    exit_process(main())
