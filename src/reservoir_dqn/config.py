"""Typed, frozen, validated parameters: ``params.yaml`` plus command-line overrides.

``params.yaml`` is grouped by concern (``seed``, ``env``, ``dqn``, ``train``,
``evaluate``, ...). :func:`load_config` reads it with a safe YAML loader, applies
``--set key=value`` overrides and validates the result with pydantic. Every
problem becomes a :class:`ConfigError` whose message is one line naming the key
and the offending value; the command-line entry points print it and exit with
status 2 before any output file is touched.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

DEFAULT_PARAMS = Path("params.yaml")

# Seeds are partitioned so that evaluation scenarios can never be training scenarios:
# training environments draw their seeds below TRAIN_SEED_LIMIT, the periodic greedy
# evaluation during training uses [VALIDATION_SEED_BASE, TEST_SEED_MIN) and the final
# evaluation stage starts at ``evaluate.seed`` >= TEST_SEED_MIN.
TRAIN_SEED_LIMIT = 1_000_000_000
VALIDATION_SEED_BASE = 1_000_000_000
TEST_SEED_MIN = 2_000_000_000


class ConfigError(ValueError):
    """A bad parameter file or override; the message is one line for the user."""


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


class ReservoirConfig(Section):
    """Physical parameters of :class:`reservoir_dqn.envs.reservoir.DiscreteReservoirEnv`.

    The defaults describe a mid-sized multipurpose reservoir with a snowmelt-driven
    inflow regime; see params.yaml for the unit and source of each number.
    """

    horizon_months: PositiveInt = Field(description="Episode length H in months; then truncation.")
    start_month: int = Field(ge=0, le=11, description="Calendar month of the first step (0 = January).")
    unit_hm3: PositiveFloat = Field(description="Volume of one storage unit in hm3.")
    capacity: PositiveInt = Field(description="Active storage capacity in units.")
    min_storage: int = Field(ge=0, description="Minimum operating storage in units; below it is a violation.")
    initial_storage: int = Field(ge=0, description="Storage at the start of every episode, in units.")
    release_levels: CountTuple = Field(
        min_length=2, description="Discrete release targets in units per month, ascending."
    )
    turbine_capacity: PositiveInt = Field(description="Largest release the turbines can pass, units per month.")
    head_min_m: PositiveFloat = Field(description="Hydraulic head at empty storage, metres.")
    head_max_m: PositiveFloat = Field(description="Hydraulic head at full storage, metres.")
    efficiency: float = Field(gt=0.0, le=1.0, description="Turbine-generator efficiency (dimensionless).")
    demand: CountTuple = Field(
        min_length=12, max_length=12, description="Monthly water-supply demand, units, January first."
    )
    inflow_median: PositiveFloatTuple = Field(
        min_length=12, max_length=12, description="Median monthly inflow in units, January first."
    )
    inflow_cv: PositiveFloatTuple = Field(
        min_length=12, max_length=12, description="Coefficient of variation of monthly inflow."
    )
    inflow_classes: Annotated[int, Field(ge=2, le=25)] = Field(
        description="Number K of equiprobable classes the lognormal inflow is discretised into."
    )
    weight_energy: float = Field(ge=0.0, description="Reward per GWh of hydropower.")
    weight_deficit: float = Field(ge=0.0, description="Penalty per unit of unmet demand.")
    weight_spill: float = Field(ge=0.0, description="Penalty per unit spilled over the crest.")
    weight_violation: float = Field(ge=0.0, description="Penalty per unit of storage below min_storage.")

    @model_validator(mode="after")
    def _consistent(self) -> ReservoirConfig:
        if self.min_storage >= self.capacity:
            raise ValueError(f"min_storage ({self.min_storage}) must be below capacity ({self.capacity})")
        if self.initial_storage > self.capacity:
            raise ValueError(f"initial_storage ({self.initial_storage}) exceeds capacity ({self.capacity})")
        if list(self.release_levels) != sorted(set(self.release_levels)):
            raise ValueError(f"release_levels ({list(self.release_levels)}) must be strictly ascending")
        if self.head_max_m < self.head_min_m:
            raise ValueError(f"head_max_m ({self.head_max_m}) is below head_min_m ({self.head_min_m})")
        return self


class EnvConfig(Section):
    """Which environment to train on and how many copies to step together."""

    name: Literal["reservoir", "CartPole-v1"] = Field(description="Environment: 'reservoir' or 'CartPole-v1'.")
    num_envs: PositiveInt = Field(description="Environments stepped together (one batched env) while collecting.")
    reservoir: ReservoirConfig = Field(
        description="Physics of the reservoir environment (used when name is reservoir)."
    )


class DQNConfig(Section):
    """The agent: Q-network, loss, target network, exploration and replay buffer."""

    hidden_sizes: IntTuple = Field(min_length=1, description="Hidden layer widths of the Q-network MLP.")
    gamma: float = Field(gt=0.0, le=1.0, description="Discount factor.")
    n_steps: Annotated[int, Field(ge=1, le=50)] = Field(description="Steps per TD target (1: one-step DQN).")
    lr: PositiveFloat = Field(description="Adam learning rate.")
    loss: Literal["huber", "l2"] = Field(description="TD-error loss: 'huber' (smooth L1) or 'l2'.")
    double_dqn: bool = Field(description="Select next actions with the online network (double DQN).")
    target_update: Literal["hard", "soft"] = Field(description="'hard': periodic copy; 'soft': Polyak averaging.")
    target_update_interval: PositiveInt = Field(description="Optimiser updates between hard target copies.")
    tau: float = Field(gt=0.0, le=1.0, description="Polyak rate of the soft target update.")
    max_grad_norm: PositiveFloat = Field(description="Gradient-norm clipping threshold.")
    batch_size: PositiveInt = Field(description="Transitions per optimiser update.")
    buffer_size: PositiveInt = Field(description="Replay buffer capacity in transitions.")
    buffer_on_disk: bool = Field(description="Keep the replay buffer in memory-mapped files (buffers beyond RAM).")
    prioritized: bool = Field(description="Prioritized experience replay instead of uniform sampling.")
    priority_alpha: float = Field(ge=0.0, description="Prioritization exponent (0 = uniform).")
    priority_beta: Probability = Field(description="Importance-sampling correction exponent.")
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
    """The training loop: budget, update schedule, evaluation and checkpoints."""

    total_frames: PositiveInt = Field(description="Environment frames to collect in total.")
    frames_per_batch: PositiveInt = Field(description="Frames collected between rounds of updates.")
    min_replay_size: PositiveInt = Field(description="Transitions in the buffer before learning starts.")
    updates_per_batch: PositiveInt = Field(description="Optimiser updates after each collected batch.")
    device: Device = Field(description="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.")
    torch_threads: int = Field(ge=0, description="Torch intra-op threads; 0 = one per core.")
    compile: bool = Field(description="torch.compile the update step.")
    eval_interval_frames: int = Field(ge=0, description="Frames between greedy evaluations; 0 = never.")
    eval_episodes: PositiveInt = Field(description="Episodes per periodic greedy evaluation.")
    select_best: bool = Field(
        description="Write the network that scored best in the periodic evaluation, not the last one."
    )
    checkpoint_interval_frames: PositiveInt = Field(description="Frames between checkpoints.")
    keep_checkpoints: PositiveInt = Field(description="Newest checkpoints kept on disk.")
    checkpoint_buffer: Literal["auto", "always", "never"] = Field(
        description="Save the replay buffer in checkpoints ('auto': when buffer_size <= 200000)."
    )


class EvaluateConfig(Section):
    """The evaluation stage: seeded greedy episodes on scenarios never used in training."""

    episodes: PositiveInt = Field(description="Evaluation episodes per policy.")
    seed: int = Field(ge=TEST_SEED_MIN, description=f"First evaluation seed (>= {TEST_SEED_MIN:,}).")
    trajectory_episodes: int = Field(ge=0, description="Episodes whose per-step trajectory is written out.")


class TrackingConfig(Section):
    """Experiment tracking: MLflow runs and model registry, TensorBoard event files."""

    enabled: bool = Field(description="Log every stage to one MLflow run per pipeline execution.")
    uri: str | None = Field(
        description="MLflow tracking URI; null: $MLFLOW_TRACKING_URI, else sqlite:///<root>/mlflow.db."
    )
    tensorboard: bool = Field(description="Write TensorBoard event files under <root>/runs/.")
    register_model: bool = Field(description="Register each trained model; move alias 'champion' to better ones.")
    connect_timeout_s: float = Field(gt=0.0, le=15.0, description="Seconds to wait for the tracking server.")
    log_interval_frames: PositiveInt = Field(
        description="Frames between training points sent to MLflow and TensorBoard (the CSV log has every batch)."
    )


class CompareConfig(Section):
    """``reservoir-dqn compare``: the CI metric diff and the regressions that fail it."""

    baseline: str = Field(min_length=1, description="Git revision (or DVC experiment) compared against by default.")
    gates: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        description="Metric -> largest allowed relative drop (higher is better), e.g. dqn.return_mean: 0.05."
    )


RelativePath = Annotated[str, Field(min_length=1)]


class PathsConfig(Section):
    """Output locations, relative to the repository root (dvc.yaml interpolates them)."""

    model: RelativePath = Field(description="Final model file (weights plus what rebuilds the network).")
    checkpoints: RelativePath = Field(description="Checkpoint folder (persistent across `dvc repro`).")
    train_log: RelativePath = Field(description="Training log, one CSV row per collected batch.")
    train_metrics: RelativePath = Field(description="Training summary metrics (JSON).")
    eval_metrics: RelativePath = Field(description="Evaluation metrics (JSON).")
    eval_episodes: RelativePath = Field(description="Per-episode evaluation returns (CSV).")
    trajectories: RelativePath = Field(description="Per-step evaluation trajectories (CSV).")
    plots: RelativePath = Field(description="Folder of PNG figures.")

    @field_validator("*")
    @classmethod
    def _inside_repository(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or value.startswith("~"):
            raise ValueError("must be a relative path inside the repository (no absolute path, no '..')")
        return value


class Config(Section):
    """Everything params.yaml holds."""

    seed: int = Field(ge=0, lt=2**31, description="Master seed for torch, numpy and the environments.")
    env: EnvConfig
    dqn: DQNConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    tracking: TrackingConfig
    compare: CompareConfig
    paths: PathsConfig

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        train, dqn = self.train, self.dqn
        if train.frames_per_batch % self.env.num_envs:
            raise ValueError(
                f"train.frames_per_batch ({train.frames_per_batch}) must be a multiple of "
                f"env.num_envs ({self.env.num_envs})"
            )
        if train.checkpoint_interval_frames % train.frames_per_batch:
            raise ValueError(
                f"train.checkpoint_interval_frames ({train.checkpoint_interval_frames}) must be a multiple of "
                f"train.frames_per_batch ({train.frames_per_batch})"
            )
        if train.eval_interval_frames % train.frames_per_batch:
            raise ValueError(
                f"train.eval_interval_frames ({train.eval_interval_frames}) must be a multiple of "
                f"train.frames_per_batch ({train.frames_per_batch})"
            )
        if train.total_frames % train.frames_per_batch:
            raise ValueError(
                f"train.total_frames ({train.total_frames}) must be a multiple of "
                f"train.frames_per_batch ({train.frames_per_batch})"
            )
        if train.select_best and not train.eval_interval_frames:
            raise ValueError("train.select_best needs periodic evaluation: set train.eval_interval_frames above 0")
        if train.min_replay_size > dqn.buffer_size:
            raise ValueError(
                f"train.min_replay_size ({train.min_replay_size}) is larger than dqn.buffer_size ({dqn.buffer_size})"
            )
        if train.min_replay_size < dqn.batch_size:
            raise ValueError(
                f"train.min_replay_size ({train.min_replay_size}) is smaller than dqn.batch_size ({dqn.batch_size})"
            )
        return self

    @property
    def training_hash(self) -> str:
        """Hash of everything that changes what training computes; checkpoints are keyed on it.

        ``train.total_frames`` only says where training stops, so raising it continues a
        finished run; how many checkpoints are kept does not change the computation either.
        """
        train = self.train.model_dump(mode="json", exclude={"total_frames", "keep_checkpoints"})
        payload = {"seed": self.seed, "env": _plain(self.env), "dqn": _plain(self.dqn), "train": train}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @property
    def source(self) -> Path:
        """The parameter file this config was loaded from (params.yaml unless --params said otherwise)."""
        source: Path = getattr(self, "_source", DEFAULT_PARAMS)
        return source

    def flat(self) -> dict[str, Any]:
        """Dotted keys to values, e.g. ``{'dqn.gamma': 0.99, ...}`` (what trackers log as params)."""
        return _flatten(_plain(self))


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


# --------------------------------------------------------------------------- loading


class _Yaml12Loader(yaml.SafeLoader):
    """Safe loader that also reads ``1e-3`` as a float, as YAML 1.2 (and DVC's parser) do."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML safely (no object construction); syntax errors become one-line ConfigErrors."""
    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # a SafeLoader subclass: builds no objects
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{source}:{where}: YAML syntax error: {problem}") from None


def read_params(path: Path) -> dict[str, Any]:
    """Read a params file into a plain dict (not yet validated)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameter file not found") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read parameter file ({error.strerror})") from None
    data = parse_yaml(text, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data


def apply_overrides(params: dict[str, Any], overrides: Sequence[str], source: str) -> dict[str, Any]:
    """Return a copy of ``params`` with ``key.path=value`` overrides applied (values parsed as YAML)."""
    result: dict[str, Any] = json.loads(json.dumps(params))  # deep copy of plain YAML data
    for override in overrides:
        key, sep, raw = override.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {override!r}: expected KEY=VALUE, for example dqn.gamma=0.95")
        value = parse_yaml(raw, f"--set {key}") if raw.strip() else None
        node = result
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            if part not in node:
                _unknown_key(parts[: depth + 1], node, Config, source=f"--set {override}")
            if not isinstance(node[part], dict):
                section = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set {override}: unknown key '{key}' ('{section}' is a value, not a section)")
            node = node[part]
        if parts[-1] not in node:
            _unknown_key(parts, node, Config, source=f"--set {override}")
        node[parts[-1]] = value
    return result


def _model_at(model: type[BaseModel], path: Sequence[str]) -> type[BaseModel] | None:
    for part in path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _unknown_key(parts: Sequence[str], siblings: Mapping[str, Any], root: type[BaseModel], source: str) -> None:
    model = _model_at(root, parts[:-1])
    candidates = list(model.model_fields) if model is not None else list(siblings)
    dotted = ".".join(parts)
    hint = difflib.get_close_matches(parts[-1], candidates, n=1, cutoff=0.6)
    suggestion = f" (did you mean '{'.'.join([*parts[:-1], hint[0]])}'?)" if hint else ""
    raise ConfigError(f"{source}: unknown key '{dotted}'{suggestion}")


def _describe(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, list, dict)) or value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validation_message(error: ValidationError, source: str, data: Mapping[str, Any]) -> str:
    """Turn pydantic's first error into one line: ``source: key = value: what is wrong``."""
    first = error.errors(include_url=False)[0]
    loc = [str(part) for part in first["loc"]]
    dotted = ".".join(loc)
    kind, message = first["type"], first["msg"]
    if kind == "extra_forbidden":
        node: Any = data
        for part in loc[:-1]:
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
        _unknown_key(loc, node if isinstance(node, Mapping) else {}, Config, source)
    if kind == "missing":
        what = "section" if _model_at(Config, loc) is not None else "key"
        return f"{source}: missing {what} '{dotted}'"
    message = message.removeprefix("Value error, ")
    if not loc:  # a whole-config consistency check: the message names its keys
        return f"{source}: {message}"
    section_rule = kind == "value_error" and _model_at(Config, loc) is not None
    if section_rule:  # a cross-field rule of one section: prefix the keys it names with the section
        prefix = dotted + "."
        names = _model_at(Config, loc).model_fields  # type: ignore[union-attr]
        message = re.sub(r"\b([a-z_]+) \(", lambda m: (prefix if m[1] in names else "") + m[1] + " (", message)
        return f"{source}: {message}"
    return f"{source}: {dotted} = {_describe(first.get('input'))}: {message}"


def load_config(params_path: Path = DEFAULT_PARAMS, overrides: Sequence[str] = ()) -> Config:
    """Read, override and validate the parameters; raise ConfigError with a one-line message."""
    data = read_params(params_path)
    data = apply_overrides(data, overrides, str(params_path))
    source = f"{params_path}" + (" (with overrides)" if overrides else "")
    try:
        config = Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(validation_message(error, source, data)) from None
    object.__setattr__(config, "_source", params_path)  # not a parameter: where they were read from
    return config


# --------------------------------------------------------------------------- command line

SHORTCUTS = {"lr": "dqn.lr", "batch_size": "dqn.batch_size", "gamma": "dqn.gamma"}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The parameter options every stage accepts: --params, --set and the common shortcuts."""
    group = parser.add_argument_group("parameters")
    group.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="YAML parameter file (default: %(default)s)")
    group.add_argument(
        "--set",
        "-S",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter, e.g. --set dqn.gamma=0.95 (repeatable)",
    )
    group.add_argument("--lr", metavar="LR", help="shortcut for --set dqn.lr=LR")
    group.add_argument("--batch-size", metavar="N", help="shortcut for --set dqn.batch_size=N")
    group.add_argument("--gamma", metavar="G", help="shortcut for --set dqn.gamma=G")


def config_from_args(args: argparse.Namespace) -> Config:
    """Build the validated Config that the parsed command-line arguments describe."""
    overrides = list(args.overrides)
    overrides += [f"{key}={getattr(args, name)}" for name, key in SHORTCUTS.items() if getattr(args, name) is not None]
    return load_config(args.params, overrides)
