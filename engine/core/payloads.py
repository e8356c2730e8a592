"""Untrusted JSON payloads: only what a manifest can record (text that is UTF-8) gets in."""

from __future__ import annotations

import json
import re
from typing import Any

from engine.errors import InvalidInput

_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(value: Any) -> str | None:
    """Where `value` holds a lone surrogate (in a key or a string, at any depth), or None.

    `json.loads` accepts `"\\ud800"` (and UTF-8-encoded surrogate bytes), but no such string
    can be written as UTF-8: a run recording it would die on its manifest.

    >>> lone_surrogate({"a": [1, {"b": "ok\\ud800"}]})
    '$["a"][1]["b"]'
    >>> lone_surrogate(json.loads('{"pair": "\\\\ud83d\\\\ude00"}')) is None  # one character
    True
    """
    stack: list[tuple[str, Any]] = [("$", value)]  # a loop: depth is the client's to choose
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return where
        elif isinstance(item, dict):
            for key, child in item.items():
                step = f"{where}[{json.dumps(str(key)[:40])}]"  # ASCII: escapes are shown
                if isinstance(key, str) and _SURROGATE.search(key):
                    return step
                stack.append((step, child))
        elif isinstance(item, list | tuple):
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(item))
    return None


def check_text(value: Any, what: str) -> None:
    """Raise InvalidInput when `value` holds a lone surrogate, naming where."""
    where = lone_surrogate(value)
    if where is not None:
        raise InvalidInput(
            f"{what} holds a lone surrogate (a \\ud800-\\udfff escape without its pair) at "
            f"{where}: that is not text, and a run could not record it"
        )
