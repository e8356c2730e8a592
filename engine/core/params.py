"""Params given at run time (`-p`, `--params-json`, event payloads), checked against the
types of the declared defaults; a list param's as text (comma-separated or a JSON array)
or as a JSON list."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from engine.core.suggest import literal, suggest
from engine.core.values import MAX_LIST_ITEMS, list_item_kind, scalar_kind
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
_WANT = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
_LIST_WANT = {
    bool: "a list of booleans",
    int: "a list of whole numbers",
    float: "a list of numbers",
    str: "a list of text",
}
LIST_FORMS = "comma-separated or a JSON array"
_SHOWN_MAX = 120
# The workflow_dispatch inputs the engine reads itself; a list param of either name has no
# input of its own (it is given in `params`).
DISPATCH_INPUTS = frozenset({"pipeline", "params"})


def coerce_param(key: str, default: Any, raw: Any, *, from_text: bool, source: str) -> Any:
    """One override converted to (or checked against) the type of the param's default.

    A list param (its default is a list) takes a list of items of its default's item type:
    from text, a JSON array or comma-separated items (`eu, us`); otherwise a JSON list.

    >>> coerce_param("rates", [0.1], "0.5, 1", from_text=True, source="-p")
    [0.5, 1.0]
    """
    if isinstance(default, list):
        return _coerce_list(key, default, raw, from_text=from_text, source=source)
    kind = type(default)
    try:
        return _scalar(kind, raw, from_text=from_text)
    except ValueError:
        raise InvalidInput(
            f"{source}: param {key!r} takes {_WANT[kind]} (its default is {_shown(default)}), "
            f"got {_shown(raw)}"
        ) from None


def _scalar(kind: type, raw: Any, *, from_text: bool) -> Any:
    """`raw` as a value of `kind` (bool, int, float or str); ValueError if it is none."""
    if from_text and isinstance(raw, str):
        text = raw.strip()
        if kind is bool:
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise ValueError(raw)
        if kind is int:
            if re.fullmatch(r"[+-]?\d+", text):
                return int(text)
            raise ValueError(raw)
        if kind is float:
            return float(text)
        return raw
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        raise ValueError(raw)
    if isinstance(raw, bool):
        raise ValueError(raw)
    if kind is int and isinstance(raw, int):
        return raw
    if kind is float and isinstance(raw, int | float):
        return float(raw)
    if kind is str and isinstance(raw, str):
        return raw
    raise ValueError(raw)


def _coerce_list(
    key: str, default: list[Any], raw: Any, *, from_text: bool, source: str
) -> list[Any]:
    kind = list_item_kind(default)

    example = default or (["a", "b"] if kind is str else [1, 2])
    forms = f"{list_text(example)} or {json.dumps(example)}" if from_text else json.dumps(example)

    def bad(why: str = "") -> InvalidInput:
        shown = _shown(raw)
        if len(shown) > _SHOWN_MAX:
            shown = shown[: _SHOWN_MAX - 3] + "..."
        return InvalidInput(
            f"{source}: param {key!r} takes {_LIST_WANT[kind]} (its default is "
            f"{_shown(default)}), got {shown}" + (f": {why}" if why else ""),
            hint=f"give the list {LIST_FORMS if from_text else 'as a JSON list'}, e.g. {forms}",
        )

    items_from_text = False
    if from_text and isinstance(raw, str):
        try:
            items, items_from_text = split_list(raw)
        except ValueError as exc:
            raise bad(str(exc)) from None
    elif isinstance(raw, list):
        items = raw
    else:
        raise bad()
    if len(items) > MAX_LIST_ITEMS:
        raise bad(f"{len(items)} items, over the limit of {MAX_LIST_ITEMS}")
    values = []
    for index, item in enumerate(items, 1):
        if scalar_kind(item) is None:
            what = "null" if item is None else "a mapping" if isinstance(item, dict) else "a list"
            raise bad(f"item {index} is {what}; items are text, numbers or booleans")
        try:
            values.append(_scalar(kind, item, from_text=items_from_text))
        except ValueError:
            raise bad(f"item {index}, {_shown(item)}, is not {_WANT[kind]}") from None
    return values


def split_list(text: str) -> tuple[list[Any], bool]:
    """A list given as text: (its items, whether they are text still to be converted).

    A JSON array if the text starts with `[` (items typed as JSON writes them), else
    comma-separated items, stripped, empty ones dropped. ValueError: not a JSON array.

    >>> split_list(" eu, us ,,apac"), split_list('["a,b", 2]')
    ((['eu', 'us', 'apac'], True), (['a,b', 2], False))
    """
    stripped = text.strip()
    if not stripped.startswith("["):
        return [item.strip() for item in stripped.split(",") if item.strip()], True
    try:
        items = json.loads(stripped)
    except ValueError as exc:
        raise ValueError(f"not a JSON array ({exc.args[0].split(':')[0]})") from None
    if not isinstance(items, list):
        raise ValueError("not a JSON array")
    return items, False


def _item_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def list_text(values: list[Any]) -> str:
    """A list as text that `split_list` reads back as the same list: comma-separated when
    every item is plain (not empty, no comma, no space at either end, not opening with `[`),
    else a JSON array.

    >>> list_text(["eu", "us"]), list_text([1, 0.5]), list_text(["a, b"]), list_text([])
    ('eu,us', '1,0.5', '["a, b"]', '[]')
    """
    texts = [_item_text(value) for value in values]
    plain = all(text and "," not in text and text == text.strip() for text in texts)
    if plain and texts and not texts[0].startswith("["):
        return ",".join(texts)
    return json.dumps(values, ensure_ascii=False)
