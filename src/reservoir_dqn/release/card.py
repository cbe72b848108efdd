"""What the export stage registers: the checked ONNX file's :class:`Release`, with its model card.

The card says what a registered version is, how it was trained, how well it did and from
which code. It is the version's description (markdown, what the MLflow UI shows on the
version's page), in the spirit of rl-zoo3's model push: an evaluated model with its figures.
Every number comes from ``metrics/train.json`` and ``metrics/eval.json``.
:mod:`reservoir_dqn.tracking.registry` logs and registers a release.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from reservoir_dqn.evaluation.results import Evaluation
from reservoir_dqn.evaluation.scoring import EXACT_GAP, REGRET
from reservoir_dqn.training.summary import Training


@dataclass(frozen=True)
class Release:
    """What the export stage registers beside its ONNX file; JSON, so that the outbox can keep it.

    :ivar env: the environment (``env.name``): the model is registered as ``reservoir-dqn-<env>``.
    :ivar onnx: the checked ONNX file.
    :ivar digest: its SHA-256: a replay registers that file only, and one file is one version.
    :ivar output: the name of the chosen action's value among the outputs (``release_hm3``, ``action``).
    :ivar card: the model card, the registered version's description (markdown).
    :ivar example: one real state's observation, by field (the model's inputs, in order): its input example.
    :ivar scores: each seed's headline test score (the shipped network type), the champion's evidence.
    :ivar conditions: what the scores were measured under (``eval.json``'s conditions).
    """

    env: str
    onnx: str
    digest: str
    output: str
    card: str
    example: dict[str, float]
    scores: list[float]
    conditions: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Release:
        return cls(**data)


def model_card(
    run_name: str,
    commit: str,
    trained: Training,
    evaluation: Evaluation,
    fields: Sequence[str],
    output: str,
    values: Sequence[float],
) -> str:
    """The card of the policy exported from ``trained`` and measured by ``evaluation``.

    :param fields: the observation's fields, as the model takes them.
    :param output: the name of the chosen action's value (``release_hm3``, ``action``).
    :param values: every action's value in the environment's units.
    """
    main = evaluation.headline[0]
    shipped = evaluation.metric(main, evaluation.shipped_network)
    scores = evaluation.shipped_scores()
    lines = [
        f"**{evaluation.env}**: agent {trained.shipped_agent}'s {trained.shipped_network} network of run "
        f"*{run_name}*, {trained.seeds} seeds x {trained.frames:,} frames each.",
        "",
        "| | |",
        "|---|---|",
        f"| environment | `{evaluation.env}`; input: one row per state, the fields {', '.join(fields)} |",
        f"| output | `{output}`: one of {', '.join(f'{value:g}' for value in values)}; `q_values`: "
        f"the {len(values)} actions' values |",
        f"| budget | {trained.seeds} seeds x {trained.frames:,} frames each, {trained.train_time_s / 60:.1f} "
        "training minutes |",
        f"| {main} (0 random, 1 {evaluation.optimum_label}) | {shipped.text(4)} over {evaluation.seeds} seeds "
        f"({evaluation.shipped_network} networks); per seed {', '.join(f'{value:.4f}' for value in scores)}; "
        f"the shipped agent {scores[trained.shipped_agent]:.4f} |",
        f"| test | {evaluation.episodes} episodes per agent from seed {evaluation.first_seed}, "
        "the same scenarios for every policy |",
    ]
    final = evaluation.agents["final"]
    if REGRET in final:
        lines.append(
            f"| regret | {final[REGRET].text()} a scenario: {evaluation.optimum_label}'s return "
            "minus the final networks', paired by scenario |"
        )
    if EXACT_GAP in final:
        lines.append(f"| exact gap to the optimum | {final[EXACT_GAP].mean:.1f} of expected return (no sampling) |")
    lines.append(f"| code | git commit `{commit}` |")
    return "\n".join(lines)
