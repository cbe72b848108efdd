"""The documentation site's reference, generated at build time from the code's own declarations.

MkDocs runs this module as a hook (``hooks:`` in mkdocs.yml). A page of ``docs/`` that holds a
marker line ``<!-- reference: NAME -->`` gets it replaced by ``GENERATORS[NAME]()``, so the
reference is never copied by hand and cannot fall behind the code:

- ``parameters``: every params.yaml key, from the pydantic models of :mod:`reservoir_dqn.config`
  and the environments' settings models (type and bounds from the model, the value from the
  committed params.yaml, the field's own description);
- ``reservoir-rules``: the reservoir's settings rules (``envs/reservoir/settings.py`` declares them);
- ``commands``: each ``reservoir-dqn`` command's ``--help``, as its own parser prints it;
- ``exit-statuses``: :func:`reservoir_dqn.commands.exits.markdown_table`;
- ``metrics``: the test results, the statistics over seeds and the training curves, from their
  declarations (the environment profiles' :class:`~reservoir_dqn.envs.profile.Metric`,
  :mod:`reservoir_dqn.evaluation.metric_names`, :mod:`reservoir_dqn.evaluation.scoring`, every
  :class:`~reservoir_dqn.common.metrics.MetricGroup`).

It also publishes the figures the pages show from where they are committed (``FIGURES``), and
puts the checkout's ``src/`` first on ``sys.path``, so the site documents the code beside it.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!-- reference: ([a-z-]+) -->$", flags=re.MULTILINE)
ROLE_HTML = re.compile(r":\w+:<code>(~?)([\w.]+)</code>")  # the same role as Markdown renders it in an API page
ROLE = re.compile(r":\w+:`(~?)([^`]+)`")  # a Sphinx role in a docstring: :class:`~reservoir_dqn.envs.EnvProfile`
HELP_COLUMNS = "88"  # argparse wraps --help to $COLUMNS: one width, whatever the terminal building the site
# Committed figures the site shows, published under the site's figures/ (they stay where they are measured).
FIGURES = {
    "figures/held_out_trajectory.png": "examples/reservoir-delaware/held_out_trajectory.png",
    "figures/trajectory.png": "examples/reservoir-delaware/trajectory.png",
    "figures/seeds.png": "bench/results/seeds.png",
    "figures/soak.png": "bench/results/soak.png",
    "figures/held_out_front.png": "bench/results/held_out_front.png",
}


def _use_this_checkout() -> None:
    source = str(ROOT / "src")
    if sys.path[:1] != [source]:
        sys.path.insert(0, source)


# --------------------------------------------------------------------------- parameters


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and abs(value) >= 10_000 else str(value)


def _bounds(schema: dict[str, Any]) -> str:
    low = f">= {_number(schema['minimum'])}" if "minimum" in schema else ""
    low = f"> {_number(schema['exclusiveMinimum'])}" if "exclusiveMinimum" in schema else low
    high = f"<= {_number(schema['maximum'])}" if "maximum" in schema else ""
    high = f"< {_number(schema['exclusiveMaximum'])}" if "exclusiveMaximum" in schema else high
    return " and ".join(part for part in (low, high) if part)


def _kind(schema: dict[str, Any]) -> str:
    """What a value must be, in words, from the field's JSON schema."""
    if "anyOf" in schema:
        options = [option for option in schema["anyOf"] if option.get("type") != "null"]
        text = " or ".join(_kind(option) for option in options)
        return f"{text}, or empty" if len(options) < len(schema["anyOf"]) else text
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type")
    if kind in ("integer", "number"):
        bounds = _bounds(schema)
        return f"{kind} {bounds}" if bounds else kind
    if kind == "array":
        low, high = schema.get("minItems"), schema.get("maxItems")
        count = f"{low} values" if low is not None and low == high else f"at least {low} values" if low else "values"
        return f"a list of {count}, each {_kind(schema.get('items', {}))}"
    if kind == "object":
        return "mapping"
    return {"boolean": "true or false", "string": "text"}.get(kind or "", "any")


def _value(value: Any) -> str:
    if value is None or value == "":
        return "(empty)"
    if isinstance(value, dict):
        return ", ".join(f"`{key}`" for key in value) if value else "`{}`"
    text = json.dumps(value) if isinstance(value, (list, bool)) else str(value)
    return f"`{text}`"


def _cell(text: str) -> str:
    """``text`` on one line of a Markdown table: roles as code, ``|`` escaped, and ``<`` and ``>`` outside code kept
    as text (``reservoir-<river>`` is no HTML tag)."""
    parts = " ".join(_markdown(text).split()).replace("|", "\\|").split("`")
    return "`".join(
        part if index % 2 else part.replace("<", "&lt;").replace(">", "&gt;") for index, part in enumerate(parts)
    )


def _markdown(docstring: str) -> str:
    """A docstring's Sphinx roles as Markdown code: ``:class:`~a.B``` as `B`, ``:mod:`a.b``` as `a.b`."""

    def code(match: re.Match[str]) -> str:
        return f"`{match.group(2).rsplit('.', 1)[-1] if match.group(1) else match.group(2)}`"

    return ROLE.sub(code, docstring)


def _section_rows(model: Any, prefix: str, values: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """``(section, rows)`` for ``model`` and, after it, each section nested in it (a model or a mapping of models)."""
    from pydantic import BaseModel

    schema = model.model_json_schema()["properties"]
    rows, nested = [], []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((annotation, key, values.get(name) or {}))
            if field.description:  # the root's sections have none: each is a heading of its own
                rows.append(f"| `{key}` | a section (below) | | {_cell(field.description)} |")
            continue
        item = getattr(annotation, "__args__", (None, None))[-1]
        if isinstance(item, type) and issubclass(item, BaseModel):  # dict[str, Model]: one section per key
            nested.append((item, f"{key}.<key>", {}))
        rows.append(
            f"| `{key}` | {_kind(schema[name])} | {_value(values.get(name))} | {_cell(field.description or '')} |"
        )
    yield prefix, rows
    for child, key, child_values in nested:
        yield from _section_rows(child, key, child_values)


def parameters() -> str:
    """A table per section of params.yaml: key, type and bounds, the committed value, the description."""
    import reservoir_dqn.envs  # noqa: F401  (registers the environments' settings sections)
    from reservoir_dqn.config import SETTINGS, Config, EnvConfig

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    sections = list(_section_rows(Config, "", params))
    top = sections[0][1]
    sections = [(name, rows) for name, rows in sections[1:]]
    for name, model in SETTINGS.items():
        sections += [
            (section, rows) for section, rows in _section_rows(model, f"env.{name}", params["env"].get(name, {}))
        ]
    order = [name for name in Config.model_fields if name != "seed"]
    sections.sort(key=lambda item: order.index(item[0].split(".")[0]))
    parts = ["## `seed`", "", "| key | type | value in params.yaml | description |", "|---|---|---|---|", *top]
    for name, rows in sections:
        doc = _section_doc(name, Config, EnvConfig, SETTINGS)
        parts += ["", f"## `{name}`", "", *([doc, ""] if doc else [])]
        parts += ["| key | type | value in params.yaml | description |", "|---|---|---|---|", *rows]
    return "\n".join(parts)


def _section_doc(name: str, config: Any, env: Any, settings: dict[str, Any]) -> str:
    """The first paragraph of the docstring of the model behind the section ``name``."""
    model: Any = config
    for part in name.split("."):
        if part == "<key>":
            model = model.__args__[-1]
            continue
        if model is env and part in settings:
            model = settings[part]
            continue
        model = model.model_fields[part].annotation
    return _cell(inspect.getdoc(model).split("\n\n")[0]) if isinstance(model, type) and model.__doc__ else ""


def reservoir_rules() -> str:
    from reservoir_dqn.config import rules
    from reservoir_dqn.envs.reservoir.settings import RESERVOIR_RULES, ReservoirConfig

    return rules.markdown_table(ReservoirConfig, "env.reservoir", RESERVOIR_RULES)


# --------------------------------------------------------------------------- commands


@contextlib.contextmanager
def _columns(width: str) -> Iterator[None]:
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = width
    try:
        yield
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def _help(main: Callable[[list[str]], int], argv: list[str]) -> str:
    """What ``main(argv)`` prints on stdout; argparse's ``--help`` ends it with SystemExit(0)."""
    printed = io.StringIO()
    with _columns(HELP_COLUMNS), contextlib.redirect_stdout(printed):
        try:
            status = main(argv)
        except SystemExit as stop:
            status = stop.code
    if status not in (0, None):
        raise RuntimeError(f"reservoir-dqn {' '.join(argv)} exited {status}")
    return printed.getvalue().rstrip()


def commands() -> str:
    """``reservoir-dqn --help``, then each command's ``--help`` (and each of its sub-commands'), as printed."""
    from reservoir_dqn.commands.cli import COMMANDS, usage

    parts = ["## `reservoir-dqn`", "", "```text", usage(), "```"]
    for name, command in COMMANDS.items():
        main = importlib.import_module(command.module).main
        text = _help(main, ["--help"])
        parts += [
            "",
            f"## `reservoir-dqn {name}`",
            "",
            _cell(command.summary[:1].upper() + command.summary[1:]) + ".",
            "",
        ]
        parts += ["```text", text, "```"]
        # a command with sub-commands ends its usage line "{a,b} ..." (or "a ...", one with a metavar)
        choices = re.search(r"^usage: \S+ \S+ .*?\{?([\w,-]+)\}? \.\.\.$", text, flags=re.MULTILINE)
        for sub in choices.group(1).split(",") if choices else ():
            parts += ["", f"### `reservoir-dqn {name} {sub}`", "", "```text", _help(main, [sub, "--help"]), "```"]
    return "\n".join(parts)


def exit_statuses() -> str:
    from reservoir_dqn.commands.exits import markdown_table

    return markdown_table()


# --------------------------------------------------------------------------- metrics


def _range(low: float, high: float) -> str:
    if low == float("-inf") and high == float("inf"):
        return "unbounded"
    if high == float("inf"):
        return f"at least {low:g}"
    if low == float("-inf"):
        return f"at most {high:g}"
    return f"[{low:g}, {high:g}]"


def _commented_constants(module: Any) -> list[tuple[str, str]]:
    """``(value, comment)`` of each ``NAME = "value"  # comment`` line of ``module``'s source."""
    source = inspect.getsource(module)
    lines = source.splitlines()
    found = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            line = lines[node.lineno - 1]
            if "#" in line:
                found.append((node.value.value, line.split("#", 1)[1].strip()))
    return found


def _doc(thing: Any, first_paragraph: bool = False) -> str:
    doc = _markdown(inspect.getdoc(thing) or "")
    return " ".join(doc.split("\n\n")[0].split()) if first_paragraph else doc


def metrics() -> str:
    """The test results each environment declares, their statistics' names, and every training curve."""
    import reservoir_dqn.envs as envs
    import reservoir_dqn.training.curves  # noqa: F401  (declares the training loop's groups)
    from reservoir_dqn.common.metrics import MetricGroup
    from reservoir_dqn.envs.gym_profile import GymProfile
    from reservoir_dqn.evaluation import metric_names, results, scoring

    parts = [
        "## Test results, per environment",
        "",
        f"{_doc(envs.Metric, first_paragraph=True)} The first headline metric is the one `compare` gates and the "
        "champion is judged on; no interval over seeds reaches outside a metric's range.",
        "",
        "| metric | environment | headline | range | meaning |",
        "|---|---|---|---|---|",
    ]
    profiles = dict(envs.PROFILES) | {"any other Gymnasium id (here Acrobot-v1)": GymProfile("Acrobot-v1")}
    for name, profile in profiles.items():
        headline = {metric.name for metric in profile.headline}
        for metric in profile.metrics:
            flag = "yes" if metric.name in headline else ""
            parts.append(f"| `{metric.name}` | {name} | {flag} | {_range(metric.low, metric.high)} | {metric.label} |")
    parts += ["", "A Gymnasium id without a `reward_threshold` has no `solved`.", ""]
    parts += ["## Against the optimum", "", _doc(scoring, first_paragraph=True), "", "| name | meaning |", "|---|---|"]
    parts += [f"| `{name}` | {_cell(comment)} |" for name, comment in _commented_constants(scoring)]
    suffixes = ", ".join(
        f"`{suffix or '(none)'}` ({statistic})" for statistic, suffix in metric_names.STATISTICS.items()
    )
    parts += ["", "## Statistics over seeds, and the names that carry them", "", _doc(metric_names), ""]
    parts += [
        f"- Each statistic's suffix: {suffixes}.",
        f"- The best snapshots' mean beside the final networks': `{metric_names.best_snapshot_name('score')}`.",
        f"- The training's wall time: `{metric_names.TRAIN_MINUTES}`.",
        f"- A test result's TensorBoard tag: `{metric_names.tensorboard_tag('reservoir', 'score_lo')}`.",
        "",
        "## The held-out record",
        "",
        _doc(results.HeldOut.metrics),
        "",
        "## The trade-off's exact front",
        "",
        _doc(results.TradeOffs.metrics, first_paragraph=True),
    ]
    groups: list[tuple[MetricGroup, str]] = []
    for module_name, module in sorted(sys.modules.items()):
        if module_name.startswith("reservoir_dqn."):  # each group where it is declared, not where it is imported
            source = inspect.getsource(module)
            groups += [
                (value, module_name)
                for name, value in vars(module).items()
                if isinstance(value, MetricGroup) and re.search(rf"^{name} = MetricGroup\(", source, flags=re.MULTILINE)
            ]
    parts += ["", "## Training curves", "", _doc(sys.modules[MetricGroup.__module__]), ""]
    parts += ["| CSV file (namespace) | fields | per agent | what a row is | declared in |", "|---|---|---|---|---|"]
    for group, module_name in sorted(groups, key=lambda item: (item[0].name, len(item[0].fields))):
        fields = ", ".join(f"`{field}`" for field in group.fields)
        per_agent = "yes" if group.per_agent else "no: one row for the run"
        row = f"| `{group.file}` | {fields} | {per_agent} | {_cell(group.description)} | `{module_name}` |"
        parts.append(row)
    return "\n".join(parts)


GENERATORS: dict[str, Callable[[], str]] = {
    "parameters": parameters,
    "reservoir-rules": reservoir_rules,
    "commands": commands,
    "exit-statuses": exit_statuses,
    "metrics": metrics,
}


def expand(markdown: str) -> str:
    """``markdown`` with every reference marker replaced by what it names (an unknown name raises)."""
    _use_this_checkout()

    def generated(match: re.Match[str]) -> str:
        if match.group(1) not in GENERATORS:
            raise KeyError(f"no reference named {match.group(1)!r} (known: {', '.join(GENERATORS)})")
        return GENERATORS[match.group(1)]()

    return MARKER.sub(generated, markdown)


# --------------------------------------------------------------------------- the MkDocs hook's events


def on_config(config: Any) -> Any:
    _use_this_checkout()
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for uri, source in FIGURES.items():
        files.append(File.generated(config, uri, abs_src_path=str(ROOT / source)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return expand(markdown)


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    """A Sphinx role left in a rendered docstring (``:class:`~a.B```) becomes a link to the object where the site
    documents it (mkdocs-autorefs resolves it, optionally), else its name as code."""

    def reference(match: re.Match[str]) -> str:
        title = match.group(2).rsplit(".", 1)[-1] if match.group(1) else match.group(2)
        return f'<autoref identifier="{match.group(2)}" optional><code>{title}</code></autoref>'

    return ROLE_HTML.sub(reference, html)
