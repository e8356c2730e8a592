"""Untrusted JSON payloads: only what a manifest can record gets in (UTF-8 text, bounded depth)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from engine.errors import InvalidInput

MAX_DEPTH = 64  # nesting levels; deeper values break copying and recording, not parsing
_SURROGATE = re.compile("[\ud800-\udfff]")


def payload_problem(value: Any, max_depth: int = MAX_DEPTH) -> str | None:
    """What keeps `value` from being recorded, and where, or None.

    `json.loads` accepts `"\\ud800"` (and UTF-8-encoded surrogate bytes), but no such string
    can be written as UTF-8; and it accepts nesting that recursion cannot copy or record.

    >>> payload_problem({"a": [1, {"b": "ok\\ud800"}]})
    'a lone surrogate (a \\\\ud800-\\\\udfff escape without its pair) at $["a"][1]["b"]'
    >>> payload_problem(json.loads('{"pair": "\\\\ud83d\\\\ude00"}')) is None  # one character
    True
    >>> payload_problem({"a": [[[]]]}, max_depth=2)
    'nesting deeper than 2 levels at $["a"][0][0]'
    """
    stack: list[tuple[str, Any, int]] = [("$", value, 0)]  # a loop: depth is the client's
    while stack:
        where, item, depth = stack.pop()
        if depth > max_depth:
            return f"nesting deeper than {max_depth} levels at {where[:200]}"
        if isinstance(item, str) and _SURROGATE.search(item):
            return _LONE + where
        if isinstance(item, dict):
            for key, child in item.items():
                step = f"{where}[{json.dumps(str(key)[:40])}]"  # ASCII: escapes are shown
                if isinstance(key, str) and _SURROGATE.search(key):
                    return _LONE + step
                stack.append((step, child, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((f"{where}[{i}]", child, depth + 1) for i, child in enumerate(item))
    return None


_LONE = "a lone surrogate (a \\ud800-\\udfff escape without its pair) at "


def check_payload(value: Any, what: str) -> None:
    """Raise InvalidInput when `value` could not be recorded (see payload_problem)."""
    problem = payload_problem(value)
    if problem is not None:
        raise InvalidInput(f"{what} holds {problem}: a run could not record it")


def dig(payload: Mapping[str, Any], *path: str) -> Any:
    """The value at `path` in nested mappings, None where a level is missing or not a mapping.

    >>> dig({"pull_request": {"head": {"sha": "abc"}}}, "pull_request", "head", "sha")
    'abc'
    >>> dig({"pull_request": None}, "pull_request", "head")
    """
    value: Any = payload
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def json_or_none(data: bytes | None) -> Any:
    """`data` parsed as JSON; None when absent or not JSON (a damaged record is a miss)."""
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None
