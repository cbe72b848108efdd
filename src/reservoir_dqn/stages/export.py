"""Stage ``export``: the shipped policy as ONNX, checked outside PyTorch on every state of its grid.

Writes ``paths.onnx`` (``models/policy.onnx``), which any ONNX runtime runs without this
package or PyTorch:

- input ``observation``: ``[batch, observation]`` float32, raw, as the environment gives it;
- outputs: the chosen action in the environment's own units, ``[batch]`` (the reservoir:
  ``release_hm3``, the release target in hm3 per month; elsewhere ``action``, its index), and
  ``q_values``, ``[batch, actions]``.

The file's metadata names the observation's fields, the actions' values and the environment.
Before it replaces the previous file, the export runs in ONNX Runtime in a separate process
that does not import torch (:mod:`reservoir_dqn.onnx_check`) on every state of the SDP's grid
(a finite environment) or on the observations of seeded random-policy episodes (any other),
and must choose torch's action everywhere with Q-values within ``1e-5``; otherwise the stage
fails (exit status 4) and the previous file stays.

With tracking on, the checked file is then the registered model: an MLflow pyfunc that runs
it in ONNX Runtime (:mod:`reservoir_dqn.tracking.served_policy`), its signature the
observation's fields in and the action's value and the Q-values out, its input example a
real state (the first observation of a seeded episode), its description the model card
(:mod:`reservoir_dqn.card`) and its tags the evaluation's per-seed scores, on which
``reservoir-dqn promote`` decides. ``mlflow models serve`` serves it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reservoir_dqn.agent import NetworkSpec, load_model
from reservoir_dqn.card import Release, model_card
from reservoir_dqn.commands import StageFailed, connect_tracking, run_stage
from reservoir_dqn.config import ENV_PARAMS, Config
from reservoir_dqn.envs import profile
from reservoir_dqn.evaluation import run_episodes
from reservoir_dqn.files import OutputSet, file_digest, read_json
from reservoir_dqn.policy import OperatorPolicy
from reservoir_dqn.process import exit_process
from reservoir_dqn.results import Evaluation
from reservoir_dqn.stages import stage_config, training_summary
from reservoir_dqn.summary import Training
from reservoir_dqn.tracking.naming import Tag
from reservoir_dqn.workspace import ParamsSnapshot, mismatch_with_training

PATHS = ("model", "train_metrics", "eval_metrics", "onnx")
PARAMS = (*ENV_PARAMS, "tracking")  # the sections dvc.yaml lists for this stage
TOLERANCE = 1e-5  # the largest Q-value difference between ONNX Runtime and torch
CHECK_SEED, CHECK_EPISODES = 2_000_000, 10  # random-policy episodes whose observations check a non-finite env


@dataclass(frozen=True)
class Check:
    """ONNX Runtime's outputs against torch's, on ``observations`` observations."""

    observations: int
    same_action: int
    same_value: int
    max_q_error: float
    torch_imported: bool

    @property
    def passed(self) -> bool:
        return (
            self.same_action == self.observations == self.same_value
            and self.max_q_error <= TOLERANCE
            and not self.torch_imported
        )


def check_observations(config: Config, spec: NetworkSpec) -> torch.Tensor:
    """Every state's observation of a finite environment, else those of seeded random-policy episodes."""
    env_profile = profile(config.env)
    grid = env_profile.grid_observations(config.env)
    if grid is not None:
        return grid.float()
    random = env_profile.baselines(config.env, spec.num_actions, CHECK_SEED)["random"]
    episodes = run_episodes(env_profile, config.env, random, range(CHECK_SEED, CHECK_SEED + CHECK_EPISODES))
    observations: torch.Tensor = episodes.steps["observation"][episodes.steps["valid"]]
    return observations.float()


def initial_observation(config: Config) -> torch.Tensor:
    """``[observation]`` a real state's observation: the first of a seeded episode (the reservoir: its start)."""
    env = profile(config.env).make(config.env, [CHECK_SEED])
    try:
        observation: torch.Tensor = env.reset()["observation"][0].float()
    finally:
        env.close()
    return observation


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


def export(policy: OperatorPolicy, path: Path, output: str, metadata: dict[str, str]) -> None:
    """Write ``policy`` as ONNX to ``path``, its batch size free, the weights inside the file."""
    example = torch.zeros(2, policy.q_values.weights[0].shape[1])
    batch = torch.export.Dim("batch", min=1)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed": not ours to use
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecation, raised inside the exporter
        program = torch.onnx.export(
            policy,
            (example,),
            dynamo=True,
            input_names=["observation"],
            output_names=[output, "q_values"],
            dynamic_shapes={"observation": {0: batch}},
            external_data=False,
            verbose=False,
        )
    assert program is not None
    for key, value in metadata.items():
        program.model.metadata_props[key] = value
    program.save(str(path), external_data=False)


def check(path: Path, policy: OperatorPolicy, observations: torch.Tensor) -> Check:
    """Run the ONNX file in ONNX Runtime, in a process without torch, against ``policy`` on ``observations``."""
    with torch.no_grad():
        value, q_values = policy(observations)
    with tempfile.TemporaryDirectory() as folder:
        expected = Path(folder) / "expected.npz"
        np.savez(
            expected,
            observation=observations.numpy(),
            action=q_values.argmax(dim=-1).numpy(),
            value=value.numpy(),
            q_values=q_values.numpy(),
        )
        from reservoir_dqn import onnx_check  # its code is this stage's: the child runs it without torch

        command = [sys.executable, "-m", onnx_check.__name__, str(path), str(expected)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StageFailed(f"ONNX Runtime could not run {path}: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return Check(**json.loads(result.stdout))


def run(argv: Sequence[str] | None = None) -> None:
    config = stage_config("export", "Export the shipped policy as ONNX, checked outside torch.", PATHS, argv)
    snapshot = ParamsSnapshot.take(config)
    paths = config.paths
    tracking = connect_tracking(config)
    trained = training_summary(config)
    if (mismatch := mismatch_with_training(config, trained.params, PARAMS, Path(paths.train_metrics))) is not None:
        raise StageFailed(mismatch)
    q_network, spec = load_model(Path(paths.model))
    if spec.env_name != config.env.name:
        raise StageFailed(f"{paths.model} holds an agent trained on {spec.env_name} but env.name is {config.env.name}")
    env_profile = profile(config.env)
    output, values = env_profile.action_meaning(config.env, spec.num_actions)
    policy = OperatorPolicy(q_network, values)
    fields = env_profile.observation_fields(config.env, spec.obs_dim)
    metadata = {
        "env": config.env.name,
        "observation": json.dumps(list(fields)),
        output: json.dumps([float(value) for value in values]),
        "shipped": f"agent {trained.shipped_agent}, {trained.shipped_network} network",
    }
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
