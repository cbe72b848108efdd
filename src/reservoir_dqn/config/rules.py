"""Rules between the fields of one section, declared once: the section's validator checks them,
and :func:`markdown_table` lists them, with each field's own bounds, as the parameters reference shows them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class Rule:
    """One rule between fields.

    :param keys: the fields it compares (names within the section).
    :param text: the rule as the parameters reference lists it.
    :param broken: the one-line message when a section breaks the rule, else None. The message
        writes each field as ``name (value)``, so the loader can show it with the full dotted key.
    """

    keys: tuple[str, ...]
    text: str
    broken: Callable[[Any], str | None]


def check(section: BaseModel, rules: Sequence[Rule]) -> None:
    """Raise ValueError with the message of the first rule ``section`` breaks."""
    for rule in rules:
        message = rule.broken(section)
        if message is not None:
            raise ValueError(message)


def markdown_table(model: type[BaseModel], prefix: str, rules: Sequence[Rule]) -> str:
    """Every field's bounds (from the model's JSON schema), then the rules between fields."""
    rows = []
    for name, schema in model.model_json_schema()["properties"].items():
        bounds = _bounds(schema)
        if bounds:
            rows.append(f"| `{prefix}.{name}` | {bounds} |")
    for rule in rules:
        rows.append(f"| {', '.join(f'`{prefix}.{key}`' for key in rule.keys)} | {rule.text} |")
    return "\n".join(["| setting | rule |", "|---|---|", *rows])


def _bounds(schema: dict[str, Any]) -> str:
    if schema.get("type") != "array":
        return _number_bounds(schema)
    low, high = schema.get("minItems"), schema.get("maxItems")
    count = f"{low} values" if low is not None and low == high else f"at least {low} values" if low else "a list"
    each = _number_bounds(schema.get("items", {}))
    return f"{count}, each {each}" if each else count


def _number_bounds(schema: dict[str, Any]) -> str:
    kind = {"integer": "an integer", "number": "a number"}.get(schema.get("type", ""))
    if kind is None:
        return ""
    low = f">= {schema['minimum']}" if "minimum" in schema else None
    low = f"> {schema['exclusiveMinimum']}" if "exclusiveMinimum" in schema else low
    high = f"<= {schema['maximum']}" if "maximum" in schema else None
    if low and high:
        return f"{kind} {low} and {high}"
    return f"{kind} {low or high}" if (low or high) else ""
