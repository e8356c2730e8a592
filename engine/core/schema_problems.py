"""Pydantic validation errors -> `file:line: message` problems in the words of the file."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from engine.core.spec import (
    Baseline,
    BuildSpec,
    CronSchedule,
    Defaults,
    DriftSpec,
    ImageBuild,
    Pipeline,
    PushSpec,
    Resources,
    ResultsConfig,
    RetryPolicy,
    Step,
    Trigger,
    WebhookSpec,
)
from engine.core.suggest import literal, suggest
from engine.core.yaml_lines import LineMap, Path_
from engine.errors import Problem

# Which model describes the mapping under a key, for "unknown key" suggestions.
_MODEL_UNDER: dict[str, type[BaseModel]] = {
    "": Pipeline,
    "steps": Step,
    "finally": Step,
    "defaults": Defaults,
    "triggers": Trigger,
    "cron": CronSchedule,
    "push": PushSpec,
    "webhook": WebhookSpec,
    "drift": DriftSpec,
    "retries": RetryPolicy,
    "resources": Resources,
    "image": ImageBuild,
    "build": BuildSpec,
    "baseline": Baseline,
    "results": ResultsConfig,
}


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _data_path(loc: Sequence[str | int], data: Any) -> Path_:
    """Keep the parts of a pydantic `loc` that index into the data (drops union tags)."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part == "finally_" and "finally" in node:
            part = "finally"  # the field's name -> its alias, as written in the file
        fits = (isinstance(node, dict) and isinstance(part, str) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if fits:
            path.append(part)
            node = node[part]
    return tuple(path)


def describe(path: Sequence[str | int], data: Any) -> str:
    """A readable location: `steps.train.timeout` (step names instead of indexes)."""
    parts: list[str] = []
    node = data
    for part in path:
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) and part < len(node) else None
            name = item.get("name") if isinstance(item, dict) else None
            parts.append(str(name) if isinstance(name, str) else f"[{part}]")
            node = item
        else:
            parts.append(part)
            node = node.get(part) if isinstance(node, dict) else None
    return ".".join(parts).replace(".[", "[") or "the file"


_TYPE_WORDS = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


# Fields whose value has more than one form: each form, written out, in a type error.
_FORMS = {
    "retries": "a whole number (retries: 2) or a mapping (retries: {limit: 2, backoff: 10s})",
    "needs": "a step name or a list of them (needs: [prepare, train])",
    "image": "an image name (image: python:3.11-slim) or a build (image: {build: {context: .}})",
    "workspace": "true, false or a list of paths (workspace: [src, data])",
    "approval": "true, false or '${{ params.<name> }}' of a boolean param",
}


def _got(value: Any) -> str:
    """`text 'two'`, `a number (2.5)`: the kind of a wrong value, and the value when short."""
    kind = type_name(value)
    if isinstance(value, str) and len(value) <= 40:
        return f"{kind} {value!r}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{kind} ({value})"
    return kind


def type_name(value: Any) -> str:
    """What a YAML value is, in words: `a list`, `text`, `nothing (null)`."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def validation_problems(
    exc: ValidationError, data: Any, file: str, lines: LineMap, root: type[BaseModel] = Pipeline
) -> list[Problem]:
    """One problem per offending key of `data`, located through `lines`."""
    grouped: dict[Path_, list[ErrorDetails]] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden" or err["type"] == "missing":
            path = (*_data_path(loc[:-1], data), str(loc[-1]))
        else:
            path = _data_path(loc, data)
        grouped.setdefault(path, []).append(err)
    problems = []
    for path, errors in grouped.items():
        if all(e["type"] in _TYPE_WORDS for e in errors) and any(
            len(other) > len(path) and other[: len(path)] == path for other in grouped
        ):
            # A union (`image: text | {build: ...}`) whose mapping branch matched the
            # type but not the contents: the deeper errors say what is wrong.
            continue
        problems.append(_one_problem(path, errors, data, file, lines, root))
    return problems


def _one_problem(
    path: Path_,
    errors: list[ErrorDetails],
    data: Any,
    file: str,
    lines: LineMap,
    root: type[BaseModel] = Pipeline,
) -> Problem:
    first = errors[0]
    kind = first["type"]
    where = describe(path, data)
    if kind == "extra_forbidden":
        key = str(path[-1])
        parent = next((p for p in reversed(path[:-1]) if isinstance(p, str)), "")
        model = _MODEL_UNDER.get(parent) if parent else root
        hint = suggest(key, _allowed_keys(model)) if model else ""
        return Problem(
            file, lines.key_line(path), f"unknown key {key!r} in {describe(path[:-1], data)}{hint}"
        )
    if kind == "missing":
        return Problem(
            file,
            lines.key_line(path[:-1]),
            f"missing required key {str(path[-1])!r} in {describe(path[:-1], data)}",
        )
    # The key's line, not the value's: a block value starts on the line below its key.
    line = lines.key_line(path)
    custom = [e for e in errors if e["type"] in ("value_error", "assertion_error")]
    if custom:
        message = str(custom[0]["msg"]).removeprefix("Value error, ")
        return Problem(file, line, f"{where}: {message}")
    if kind == "string_pattern_mismatch":
        return Problem(
            file,
            line,
            f"{where}: invalid name {first['input']!r}: use lowercase letters, digits and '-', "
            "starting with a letter or digit, at most 63 characters",
        )
    if kind in ("literal_error", "enum"):
        expected = first.get("ctx", {}).get("expected", "")
        given = first["input"]
        shown = repr(given) if isinstance(given, str) else literal(given)
        return Problem(file, line, f"{where}: {shown} is not one of {expected}")
    wanted = [_TYPE_WORDS.get(e["type"]) for e in errors]
    form = _FORMS.get(str(path[-1])) if path else None
    if form and all(wanted):
        return Problem(file, line, f"{where}: expected {form}, got {_got(first['input'])}")
    if all(wanted):
        words = " or ".join(dict.fromkeys(w for w in wanted if w))
        return Problem(file, line, f"{where}: expected {words}, got {_got(first['input'])}")
    return Problem(file, line, f"{where}: {first['msg']}")
