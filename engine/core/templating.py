"""`${{ params.x }}` and `${{ trigger.* }}` substitution: values in, data out, never code."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

TEMPLATE_RE = re.compile(r"\$\{\{((?:(?!\}\}).)*)\}\}", re.DOTALL)
_REF_RE = re.compile(r"^(params|trigger)((?:\.[A-Za-z0-9_-]+)+)$")


def templates_in(text: str) -> list[str]:
    """The stripped inner expressions of every `${{ }}` in `text`."""
    return [m.group(1).strip() for m in TEMPLATE_RE.finditer(text)]


def check_reference(inner: str, params: Mapping[str, object]) -> str | None:
    """None when `inner` is a usable reference, else a message saying what is wrong."""
    match = _REF_RE.match(inner)
    if match is None:
        return (
            f"'${{{{ {inner} }}}}' is not a reference: only params.<name> and trigger.<field> "
            "may appear inside ${{ }}"
        )
    root, rest = match.group(1), match.group(2)[1:].split(".")
    if root == "params":
        if len(rest) != 1:
            return f"'${{{{ {inner} }}}}': params.<name> takes exactly one name"
        if rest[0] not in params:
            known = f"declared: {', '.join(sorted(params))}" if params else "no params are declared"
            return f"'${{{{ {inner} }}}}' names unknown param {rest[0]!r} ({known})"
    return None


def _lookup(inner: str, params: Mapping[str, Any], trigger: Mapping[str, Any]) -> Any:
    match = _REF_RE.match(inner)
    if match is None:  # loading rejects these; be strict anyway
        raise ValueError(f"not a reference: {inner!r}")
    value: Any = params if match.group(1) == "params" else trigger
    for part in match.group(2)[1:].split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def as_text(value: Any) -> str:
    """A value as a template embedded in text shows it (JSON for lists and mappings)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, sort_keys=True)


def substitute(value: Any, params: Mapping[str, Any], trigger: Mapping[str, Any]) -> Any:
    """Resolve templates inside `value` (recursing through lists and dicts).

    A string that is exactly one `${{ }}` takes the referenced value with its type;
    a template embedded in longer text is replaced by the value's text.
    """
    if isinstance(value, str):
        whole = TEMPLATE_RE.fullmatch(value.strip())
        if whole is not None:
            return _lookup(whole.group(1).strip(), params, trigger)
        return TEMPLATE_RE.sub(
            lambda m: as_text(_lookup(m.group(1).strip(), params, trigger)), value
        )
    if isinstance(value, list):
        return [substitute(item, params, trigger) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item, params, trigger) for key, item in value.items()}
    return value


def substitute_text(value: str, params: Mapping[str, Any], trigger: Mapping[str, Any]) -> str:
    """Like `substitute`, always returning text (for env values and command items)."""
    return as_text(substitute(value, params, trigger))
