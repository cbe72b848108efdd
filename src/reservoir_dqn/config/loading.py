"""Loading ``params.yaml``: a safe YAML reader, ``--set key=value`` overrides, one-line errors.

Every problem becomes a :class:`ConfigError` whose message is one line naming the key and
the offending value (and where it came from: the file, or the ``--set`` that gave it); the
command-line entry points print it and exit with status 2 before any output is touched.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from reservoir_dqn.common.errors import ConfigError
from reservoir_dqn.config.environments import SETTINGS
from reservoir_dqn.config.sections import DEFAULT_PARAMS
from reservoir_dqn.config.tree import Config


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
# A number written with a leading zero (a USGS gauge id, 01440000) stays text, as in `dvc exp run -S`: YAML 1.1
# reads it as an octal integer (409600), YAML 1.2 as a decimal one (1440000), and either loses the zeros.
_Yaml12Loader.yaml_implicit_resolvers["0"].insert(0, ("tag:yaml.org,2002:str", re.compile(r"^0[0-9_]+$")))


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


def split_override(override: str) -> tuple[str, Any]:
    """``'dqn.gamma=0.95'`` -> ``('dqn.gamma', 0.95)``, the value parsed as YAML (an empty one is null)."""
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {override}: expected KEY=VALUE, for example dqn.gamma=0.95")
    return key, parse_yaml(raw, f"--set {key}") if raw.strip() else None


def apply_overrides(params: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``params`` with ``key.path=value`` overrides applied (values parsed as YAML)."""
    result: dict[str, Any] = json.loads(json.dumps(params))  # deep copy of plain YAML data
    for override in overrides:
        key, value = split_override(override)
        node = result
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            if part not in node:
                _unknown_key(parts[: depth + 1], node, f"--set {override}")
            if not isinstance(node[part], dict):
                section = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set {override}: unknown key '{key}' ('{section}' is a value, not a section)")
            node = node[part]
        if parts[-1] not in node and _model_at(Config, parts[:-1]) is not None:
            _unknown_key(parts, node, f"--set {override}")
        node[parts[-1]] = value
    return result


def _model_at(model: type[BaseModel], path: Sequence[str]) -> type[BaseModel] | None:
    if len(path) >= 2 and path[0] == "env" and path[1] in SETTINGS:  # an environment's settings section
        model, path = SETTINGS[path[1]], path[2:]
    for part in path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _unknown_key(parts: Sequence[str], siblings: Mapping[str, Any], source: str) -> None:
    model = _model_at(Config, parts[:-1])
    candidates = list(model.model_fields) if model is not None else list(siblings)
    dotted = ".".join(parts)
    if parts[-1] in candidates:  # a key this version reads, missing from an older parameter file
        raise ConfigError(
            f"{source}: the parameter file has no '{dotted}', which this version reads: add it (CHANGELOG.md says "
            "which keys are new)"
        )
    hint = difflib.get_close_matches(parts[-1], candidates, n=1, cutoff=0.6)
    suggestion = f" (did you mean '{'.'.join([*parts[:-1], hint[0]])}'?)" if hint else ""
    raise ConfigError(f"{source}: unknown key '{dotted}'{suggestion}")


def _describe(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, list, dict)) or value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validation_message(errors: Sequence[ErrorDetails], source: str, data: Mapping[str, Any]) -> str:
    """Turn pydantic's errors into one line: ``source: key = value: what is wrong``.

    An unknown key is reported before anything else: a mistyped ``dqn.gama`` also leaves
    ``dqn.gamma`` missing, and the typo is what the user has to fix.
    """
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [str(part) for part in first["loc"]]
    dotted = ".".join(loc)
    kind, message = first["type"], first["msg"]
    if kind == "extra_forbidden":
        node: Any = data
        for part in loc[:-1]:
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
        _unknown_key(loc, node if isinstance(node, Mapping) else {}, source)
    if kind == "missing":
        what = "section" if _model_at(Config, loc) is not None else "key"
        return f"{source}: missing {what} '{dotted}'"
    message = message.removeprefix("Value error, ")
    if not loc:  # a whole-config consistency check: the message names its keys
        return f"{source}: {message}"
    section = _model_at(Config, loc)
    if kind == "value_error" and section is not None:  # a cross-field rule of one section: name its keys fully
        names = section.model_fields
        message = re.sub(r"\b([a-z_]+) \(", lambda m: (dotted + "." if m[1] in names else "") + m[1] + " (", message)
        return f"{source}: {message}"
    if kind == "string_type" and isinstance(first.get("input"), (int, float)):  # YAML read an identifier as a number
        message += f" (write it in quotes, '{first['input']}', with any leading zeros it has)"
    return f"{source}: {dotted} = {_describe(first.get('input'))}: {message}"


def _source_of(message_key: str, params_path: Path, overrides: Sequence[str]) -> str:
    """Where a bad value came from: the ``--set`` that gave it (or one of the keys a section's rule
    compares), else the parameter file."""
    for override in reversed(overrides):
        key = override.partition("=")[0].strip()
        compared = bool(message_key) and key.startswith(message_key + ".")  # a key a section's rule compares
        if message_key == key or message_key.startswith(key + ".") or compared:
            return f"--set {override}"
    return str(params_path)


def load_config(params_path: Path = DEFAULT_PARAMS, overrides: Sequence[str] = ()) -> Config:
    """Read, override and validate the parameters; raise ConfigError with a one-line message."""
    data = apply_overrides(read_params(params_path), overrides)
    try:
        config, errors = _with_settings_validated(Config.model_validate(data, context={"source": params_path}))
    except ValidationError as error:
        errors = error.errors(include_url=False)
    if errors:
        loc = ".".join(str(part) for part in errors[0]["loc"])
        raise ConfigError(validation_message(errors, _source_of(loc, params_path, overrides), data))
    return config


def _with_settings_validated(config: Config) -> tuple[Config, list[ErrorDetails]]:
    """``config`` anew with each registered settings section of ``env`` validated as its model, or the first
    section's errors, located as ``env.<section>...``."""
    sections = config.env.sections()
    for section, model in SETTINGS.items():
        if section not in sections:
            continue
        try:
            sections[section] = model.model_validate(sections[section])
        except ValidationError as error:
            return config, [{**e, "loc": ("env", section, *e["loc"])} for e in error.errors(include_url=False)]
    return config.model_copy(update={"env": config.env.model_copy(update=sections)}), []


# --------------------------------------------------------------------------- command line

# The training hyperparameters' shortcuts: offered only by the commands that train (train, tune).
SHORTCUTS = {"lr": "dqn.lr", "batch_size": "dqn.batch_size", "gamma": "dqn.gamma", "seeds": "train.seeds"}


def add_config_arguments(parser: argparse.ArgumentParser, training: bool = False) -> None:
    """The parameter options every command accepts, --params and --set, and with ``training`` the shortcuts of
    :data:`SHORTCUTS` (a command that does not train would take them and do nothing with them)."""
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
    if training:
        group.add_argument("--lr", metavar="LR", help="shortcut for --set dqn.lr=LR")
        group.add_argument("--batch-size", metavar="N", help="shortcut for --set dqn.batch_size=N")
        group.add_argument("--gamma", metavar="G", help="shortcut for --set dqn.gamma=G")
        group.add_argument("--seeds", metavar="N", help="shortcut for --set train.seeds=N")


def config_from_args(args: argparse.Namespace) -> Config:
    """Build the validated Config that the parsed command-line arguments describe."""
    overrides = list(args.overrides)
    given = {key: getattr(args, name, None) for name, key in SHORTCUTS.items()}  # none without the shortcuts
    overrides += [f"{key}={value}" for key, value in given.items() if value is not None]
    return load_config(args.params, overrides)
