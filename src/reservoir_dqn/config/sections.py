"""The sections of ``params.yaml`` as frozen, strict pydantic models; every field says what it means.

The ``env`` section, the environments' own settings, is :mod:`.environments`'.

A field's description is the documentation a user reads (``params.yaml`` repeats it in a
comment). Cross-field rules live in the ``_consistent`` validators; each names the keys
it compares, so its message can be shown to the user as it is.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from reservoir_dqn.config.variants import Backend, Head

DEFAULT_PARAMS = Path("params.yaml")

# Seeds are partitioned so that evaluation scenarios can never be training scenarios:
# training environments draw their seeds below TRAIN_SEED_LIMIT, the periodic greedy
# validation during training uses [VALIDATION_SEED_BASE, TEST_SEED_MIN) and the final
# evaluation stage starts at ``evaluate.seed`` >= TEST_SEED_MIN.
TRAIN_SEED_LIMIT = 1_000_000_000
VALIDATION_SEED_BASE = 1_000_000_000
TEST_SEED_MIN = 2_000_000_000
# Master seeds: the pipeline's lie below TUNE_SEED_BASE (params.yaml's ``seed``); tuning trial
# ``n`` trains with master seed TUNE_SEED_BASE + n, so no trial replays the pipeline's agents.
TUNE_SEED_BASE = 2**30


class Section(BaseModel):
    """Base of every params.yaml section: frozen, strict types, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
# YAML has only lists: let a list fill a tuple field, but keep its items strictly typed.
IntTuple = Annotated[tuple[Annotated[int, Strict(), Field(gt=0)], ...], Strict(False)]
CountTuple = Annotated[tuple[Annotated[int, Strict(), Field(ge=0)], ...], Strict(False)]
PositiveFloatTuple = Annotated[tuple[Annotated[float, Strict(), Field(gt=0.0)], ...], Strict(False)]
StringTuple = Annotated[tuple[Annotated[str, Strict(), Field(min_length=1)], ...], Strict(False)]


class DQNConfig(Section):
    """The agent: Q-network, loss, target network, learning rate, exploration and replay buffer."""

    hidden_sizes: IntTuple = Field(min_length=1, description="Hidden layer widths of the Q-network MLP.")
    head: Head = Field(
        description="Output head of the Q-network, one of those registered (reservoir_dqn.agent.HEADS): 'plain' (a "
        "linear layer) or 'dueling' (a state value and action advantages, Wang et al., 2016), or a user's own."
    )
    gamma: float = Field(gt=0.0, le=1.0, description="Discount factor.")
    n_steps: Annotated[int, Field(ge=1, le=50)] = Field(description="Steps per TD target (1: one-step DQN).")
    reward_scale: PositiveFloat = Field(
        description="Rewards are multiplied by this before learning, so Q-values are in these units "
        "(returns are always reported unscaled)."
    )
    lr: PositiveFloat = Field(description="Adam learning rate at the start.")
    lr_end_factor: float = Field(
        gt=0.0, le=1.0, description="Learning rate after lr_decay_frames, as a share of lr (linear decay; 1: constant)."
    )
    lr_decay_frames: PositiveInt = Field(
        description="Frames over which the learning rate decays to lr * lr_end_factor."
    )
    loss: Literal["huber", "l2"] = Field(description="TD-error loss: 'huber' (smooth L1) or 'l2'.")
    double_dqn: bool = Field(description="Select next actions with the online network (double DQN).")
    advantage_learning: float = Field(
        ge=0.0,
        lt=1.0,
        description="Advantage learning's alpha (Baird, 1999; Bellemare et al., 2016): the TD target less alpha times "
        "the taken action's gap to the best under the target network, which widens the gaps between actions' values "
        "(0: plain DQN).",
    )
    target_update: Literal["hard", "soft"] = Field(description="'hard': periodic copy; 'soft': Polyak averaging.")
    target_update_interval: PositiveInt = Field(description="Optimiser updates between hard target copies.")
    tau: float = Field(gt=0.0, le=1.0, description="Polyak rate of the soft target update.")
    policy_averaging: float = Field(
        ge=0.0,
        le=1.0,
        description="Polyak rate of the averaged weights that evaluation, validation and the shipped model use "
        "(0: use the online network itself).",
    )
    max_grad_norm: PositiveFloat = Field(description="Gradient-norm clipping threshold, per agent.")
    batch_size: PositiveInt = Field(description="Transitions per optimiser update, per agent.")
    buffer_size: PositiveInt = Field(description="Replay buffer capacity in transitions, per agent.")
    buffer_on_disk: bool = Field(description="Keep the replay buffer in memory-mapped files (buffers beyond RAM).")
    prioritized: bool = Field(description="Prioritized experience replay instead of uniform sampling.")
    priority_alpha: float = Field(
        ge=0.0,
        description="Prioritization exponent: a transition is drawn in proportion to |TD error|^alpha (0 = uniform).",
    )
    priority_beta: Probability = Field(
        description="Importance-sampling exponent at the start; it anneals linearly to 1 over priority_beta_frames."
    )
    priority_beta_frames: PositiveInt = Field(
        description="Frames over which beta anneals to 1: a schedule of its own, like epsilon's and the learning "
        "rate's, so that raising train.total_frames continues a run exactly."
    )
    eps_start: Probability = Field(description="Initial exploration rate.")
    eps_end: Probability = Field(description="Final exploration rate.")
    eps_decay_frames: PositiveInt = Field(description="Frames over which epsilon anneals linearly.")

    @model_validator(mode="after")
    def _consistent(self) -> DQNConfig:
        if self.eps_end > self.eps_start:
            raise ValueError(f"eps_end ({self.eps_end}) is greater than eps_start ({self.eps_start})")
        if self.batch_size > self.buffer_size:
            raise ValueError(f"batch_size ({self.batch_size}) is larger than buffer_size ({self.buffer_size})")
        return self


Device = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")]


class TrainConfig(Section):
    """The training loop: agents, budget, update schedule, validation and checkpoints."""

    seeds: Annotated[int, Field(ge=1, le=64)] = Field(
        description="Independent agents trained together, each from its own seed derived from the master seed."
    )
    total_frames: PositiveInt = Field(description="Environment frames each agent collects in total.")
    frames_per_batch: PositiveInt = Field(description="Frames each agent collects between rounds of updates.")
    min_replay_size: PositiveInt = Field(description="Transitions per agent in the buffer before learning starts.")
    updates_per_batch: PositiveInt = Field(description="Optimiser updates after each collected batch.")
    device: Device = Field(description="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.")
    torch_threads: int = Field(ge=0, description="Torch intra-op threads; 0 = one per core.")
    compile: bool = Field(description="torch.compile the loss computation.")
    eval_interval_frames: int = Field(ge=0, description="Frames between greedy validations; 0 = never.")
    eval_episodes: PositiveInt = Field(description="Episodes per agent in each periodic greedy validation.")
    stop_at_validation_return: float | None = Field(
        description="Stop an agent once its validation mean return reaches this value (null: never stop early)."
    )
    select_best: bool = Field(description="Ship each agent's best-validated snapshot instead of its final network.")
    plateau_window: PositiveInt = Field(
        description="Validations in the moving average of an agent's validation score that the plateau watches "
        "(one validation's score is noisy: 1 watches it raw)."
    )
    plateau_validations: PositiveInt = Field(
        description="An agent has converged once this many validations in a row have not raised the best of "
        "that moving average by more than plateau_min_delta (patience, as Stable-Baselines3's "
        "StopTrainingOnNoModelImprovement counts it); it converged at the frames of that best."
    )
    plateau_min_delta: float = Field(
        ge=0.0, description="The least rise of the best moving average (score: 0 random, 1 the reference) that counts."
    )
    until_converged: bool = Field(
        description="Stop each agent once it has converged (total_frames is then the ceiling); off: every agent "
        "trains to total_frames, and the run only reports whether and where each converged."
    )
    checkpoint_interval_frames: PositiveInt = Field(description="Frames between checkpoints.")
    keep_checkpoints: PositiveInt = Field(description="Newest checkpoints kept on disk.")
    checkpoint_buffer: Literal["auto", "always", "never"] = Field(
        description="Save the replay buffer in checkpoints ('auto': when seeds x buffer_size <= 1,000,000)."
    )


class EvaluateConfig(Section):
    """The evaluation stage: seeded greedy episodes on scenarios never used in training."""

    episodes: PositiveInt = Field(description="Evaluation episodes per policy (and per agent).")
    seed: int = Field(ge=TEST_SEED_MIN, description=f"First evaluation seed (>= {TEST_SEED_MIN:,}).")
    trajectory_episodes: int = Field(ge=0, description="Episodes whose per-step trajectory is written out.")


class ChampionBudget(Section):
    """The training budget a run must have to compete for the registry's ``champion`` alias."""

    total_frames: PositiveInt = Field(description="train.total_frames of a competing run.")
    seeds: PositiveInt = Field(description="train.seeds of a competing run.")


class TrackingConfig(Section):
    """Experiment tracking: MLflow runs and model registry, TensorBoard event files."""

    enabled: bool = Field(description="Log every stage to one parent run per pipeline execution (a child per agent).")
    backend: Backend = Field(
        description="Where the runs are recorded, one of the backends registered (reservoir_dqn.tracking.BACKENDS): "
        "'mlflow' (a store, embedded SQLite or a server, with the model registry) or 'files' (plain JSON and CSV "
        "under <root>/file-runs/: no server, no registry)."
    )
    uri: str = Field(description="MLflow tracking URI; empty: $MLFLOW_TRACKING_URI, else sqlite:///<root>/mlflow.db.")
    tensorboard: bool = Field(description="Write TensorBoard event files under <root>/runs/.")
    register_model: bool = Field(
        description="The export stage registers the exported policy as a model version (else only logs it to the "
        "run); the alias 'champion' moves only with `reservoir-dqn promote`."
    )
    connect_timeout_s: float = Field(gt=0.0, le=15.0, description="Seconds to wait for the tracking server.")
    log_interval_frames: PositiveInt = Field(
        description="Frames between points of the training curves (CSV, MLflow and TensorBoard)."
    )
    champion_budget: dict[str, ChampionBudget] = Field(
        description="Per environment: the budget of the runs that compete for 'champion'; others never do."
    )


class CompareConfig(Section):
    """``reservoir-dqn compare``: the CI metric diff and the regression that fails it."""

    baseline: str = Field(min_length=1, description="Git revision (or DVC experiment) compared against by default.")
    metric: str = Field(
        min_length=1,
        description="The one gated headline metric (score: the return is an affine function of it on equal "
        "scenarios, so gating both would gate one twice).",
    )
    tolerance: float = Field(
        ge=0.0,
        description="Largest drop of the gated metric that is not a regression, in the metric's own units "
        "(the score's: 0 random, 1 the optimum), never a share of the baseline, which may be negative or 0.",
    )
    significance: float = Field(
        gt=0.0,
        lt=0.5,
        description="One-sided level of Welch's test: a regression is called only when the data show, at this "
        "level, a drop larger than the tolerance.",
    )


class SearchDimension(Section):
    """One hyperparameter of the search space: its distribution and bounds."""

    distribution: Literal["float", "int", "categorical"] = Field(description="Kind of values drawn.")
    low: float | None = Field(default=None, description="Smallest value (float and int).")
    high: float | None = Field(default=None, description="Largest value (float and int).")
    log: bool = Field(default=False, description="Draw on a log scale (float and int).")
    choices: Annotated[tuple[float | int | str | bool, ...], Strict(False)] | None = Field(
        default=None, description="The values to choose from (categorical)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> SearchDimension:
        if self.distribution == "categorical":
            if not self.choices:
                raise ValueError("a categorical dimension needs choices")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"a {self.distribution} dimension needs low < high (got {self.low}, {self.high})")
        elif self.log and self.low <= 0:
            raise ValueError(f"a log-scale dimension needs low > 0 (got {self.low})")
        return self


class TuneConfig(Section):
    """``reservoir-dqn tune``: an Optuna study over a search space of params.yaml keys."""

    study: str = Field(min_length=1, description="Study name in the Optuna storage (workers join it by name).")
    storage: str = Field(
        description="Optuna storage URL; empty: sqlite:///<root>/optuna.db. postgresql://... for many workers."
    )
    trials: PositiveInt = Field(description="Finished (complete or pruned) trials after which the study stops.")
    sampler: Literal["tpe", "random"] = Field(description="Optuna sampler.")
    pruner: Literal["median", "none"] = Field(description="Median pruner on the periodic validation, or none.")
    startup_trials: int = Field(ge=0, description="Trials sampled at random, and never pruned, before TPE starts.")
    warmup_validations: int = Field(ge=0, description="Validations of a trial before the pruner may stop it.")
    objective: Literal["score_mean", "score_iqm"] = Field(
        description="Maximised: the validation score's mean or interquartile mean over seeds (never test seeds)."
    )
    overrides: StringTuple = Field(description="KEY=VALUE overrides applied to every trial (its budget, say).")
    heartbeat_s: PositiveInt = Field(description="Seconds between a worker's heartbeats to the storage.")
    grace_s: PositiveInt = Field(description="Seconds without a heartbeat after which a trial counts as failed.")
    retries: int = Field(ge=0, description="Times a failed trial (for example a killed worker's) is re-queued.")
    space: dict[str, SearchDimension] = Field(min_length=1, description="params.yaml key -> its search dimension.")

    @model_validator(mode="after")
    def _consistent(self) -> TuneConfig:
        if self.grace_s <= self.heartbeat_s:
            raise ValueError(f"grace_s ({self.grace_s}) must exceed heartbeat_s ({self.heartbeat_s})")
        return self


RelativePath = Annotated[str, Field(min_length=1)]


class PathsConfig(Section):
    """Output locations, relative to the repository root (dvc.yaml interpolates them)."""

    model: RelativePath = Field(description="The shipped model: the agent that validated best.")
    onnx: RelativePath = Field(description="The shipped policy as ONNX: runs without PyTorch (the export stage).")
    agents: RelativePath = Field(description="Folder of every agent's networks: final.pt and best.pt.")
    checkpoints: RelativePath = Field(description="Checkpoint folder (persistent across `dvc repro`).")
    train_log: RelativePath = Field(description="Folder of training curves, one CSV per metric group.")
    train_metrics: RelativePath = Field(description="Training summary (JSON): frames, times, runs, per agent.")
    eval_metrics: RelativePath = Field(description="Evaluation detail (JSON): per-seed values and statistics.")
    summary: RelativePath = Field(description="The few headline metrics DVC tracks (JSON).")
    eval_episodes: RelativePath = Field(description="Per-episode evaluation results (CSV).")
    trajectories: RelativePath = Field(description="Per-step evaluation trajectories (CSV).")
    policy_states: RelativePath = Field(
        description="The shipped agent's rule state by state, against the optimum's, with its exact account (CSV)."
    )
    plots: RelativePath = Field(description="Folder of PNG figures.")

    @field_validator("*")
    @classmethod
    def _inside_repository(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or value.startswith("~"):
            raise ValueError("must be a relative path inside the repository (no absolute path, no '..')")
        return value
