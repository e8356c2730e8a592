"""Params given at run time (`-p`, `--params-json`, event payloads), checked against the
types of the declared defaults."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from engine.core.suggest import literal, suggest
from engine.errors import InvalidInput


def coerce_params(
    declared: Mapping[str, Any], overrides: Mapping[str, Any], *, source: str, from_text: bool
) -> dict[str, Any]:
    """Declared params with `overrides` applied and type-checked against the defaults' types.

    `from_text`: values are command-line strings (`-p n=3`) to be parsed into the type.
    Raises InvalidInput naming the param and the expected type.

    >>> coerce_params({"n": 100, "fast": False}, {"n": "200"}, source="-p", from_text=True)
    {'n': 200, 'fast': False}
    """
    result = dict(declared)
    for key, raw in overrides.items():
        if key not in declared:
            raise InvalidInput(
                f"{source}: unknown param {key!r}{suggest(key, declared)}; "
                f"declared: {', '.join(sorted(declared)) or 'none'}"
            )
        result[key] = coerce_param(key, declared[key], raw, from_text=from_text, source=source)
    return result


def _shown(value: Any) -> str:
    """Text quoted, anything else as YAML and JSON write it (`true`, `null`, `0.5`)."""
    return repr(value) if isinstance(value, str) else literal(value)


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def coerce_param(key: str, default: Any, raw: Any, *, from_text: bool, source: str) -> Any:
    """One override converted to (or checked against) the type of the param's default."""
    kind = type(default)
    want = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}[kind]
    bad = InvalidInput(
        f"{source}: param {key!r} takes {want} (its default is {_shown(default)}), "
        f"got {_shown(raw)}"
    )
    if from_text and isinstance(raw, str):
        text = raw.strip()
        if kind is bool:
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise bad
        if kind is int:
            if re.fullmatch(r"[+-]?\d+", text):
                return int(text)
            raise bad
        if kind is float:
            try:
                return float(text)
            except ValueError:
                raise bad from None
        return raw
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        raise bad
    if isinstance(raw, bool):
        raise bad
    if kind is int and isinstance(raw, int):
        return raw
    if kind is float and isinstance(raw, int | float):
        return float(raw)
    if kind is str and isinstance(raw, str):
        return raw
    raise bad
