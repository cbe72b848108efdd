"""The training's summary, typed: ``metrics/train.json`` is a :class:`Training`.

Written by the train stage (and returned by every training, a tuning trial's included), read
by evaluate, plot, promote and tune through this one model, so a renamed or missing key fails
where the file is read, in one line, not as a ``KeyError`` in a later stage.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentTraining(_Record):
    """One agent's training: its validations, and when it stopped or first solved the task."""

    seed_index: int
    final_validation_return: float
    final_validation_score: float
    best_validation_return: float
    best_validation_score: float
    best_validation_frames: int
    stopped_at_frames: int | None  # reached train.stop_at_validation_return here and stopped learning
    stopped_after_seconds: float | None
    solved_at_frames: int | None  # first validation at or above the profile's solved_return
    solved_after_seconds: float | None
    # Converged: the moving average of its validation scores (train.plateau_window) not raised above its best by
    # train.plateau_min_delta over train.plateau_validations validations; the frames of that best. None: still
    # rising when training ended (or never validated).
    converged_at_frames: int | None = None


class ValidationReference(_Record):
    """What the validation scores are measured against (the returns of score 0 and 1)."""

    random_return: float
    optimum_return: float
    episodes: str | None = None  # what they are (training.validation); None: a file from before it was recorded


class Training(_Record):
    """``metrics/train.json``: what a training did, and which tracking runs and parameters it belongs to.

    The last three fields are the stage's (``None`` for a training run outside it, a tuning trial).
    """

    env: str
    seeds: int
    frames: int  # per agent
    updates: int
    train_time_s: float
    validation_time_s: float
    frames_per_second: float  # every agent's frames per second of training
    resumed_from_frames: int
    exact_resume: bool  # false once a resume restarted from an empty replay buffer or restarted episodes
    resumed_without_buffer_at_frames: list[int]
    resumed_at_episode_boundary_at_frames: list[int]
    solved_return: float | None
    shipped_agent: int
    shipped_network: Literal["final", "best"]
    validation_reference: ValidationReference
    agents: list[AgentTraining]
    run_ids: dict[str, str]
    params: dict[str, Any] | None = None  # the params sections training depends on, as it read them
    run_name: str | None = None
    tensorboard_dir: str | None = None  # relative to the tracking root

    def convergence(self) -> str:
        """Which agents converged, and where (``AgentTraining.converged_at_frames``), in one line."""
        parts = [
            f"agent {agent.seed_index} "
            + (f"at {agent.converged_at_frames:,}" if agent.converged_at_frames is not None else "not converged")
            for agent in self.agents
        ]
        done = sum(agent.converged_at_frames is not None for agent in self.agents)
        return f"converged: {done} of {len(self.agents)} agents ({', '.join(parts)}; frames of the plateau's best)"

    def to_json(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Training:
        """The summary in ``data``; a file of another layout raises ``ValueError`` naming the first bad key."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            key = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"{key}: {first['msg'].lower()}") from None
