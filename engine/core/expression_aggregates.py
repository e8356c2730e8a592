"""The `when:` language's aggregates: max, min, count, all and any over a list of values.

The list comes from the one argument of the call: a reference with a `*` segment
(`steps.train.instances.*.metrics.auc`: one value per item of `steps.train.instances`), or,
in count(), a reference to the list itself. The semantics are summed up in
engine.core.expressions; engine.core.expression_eval evaluates everything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

from engine.core.expression_tree import WILDCARD, Call, ExpressionError, Value


def type_name(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "string" if isinstance(value, str) else "number"


def is_number(value: Value) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def truthy(value: Value) -> bool:
    return value is not None and value is not False and value != 0 and value != ""


def kind(value: Any) -> str:
    """What a value that is not a single value is, for messages: `a mapping`, `a list`."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str | int | float):
        return f"a {type_name(value)}"
    return f"a {type(value).__name__}"


def lookup(value: Any, path: tuple[str, ...]) -> Any:
    """Walk `path` through nested mappings; anything missing on the way gives None."""
    for segment in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(segment)
    return value


def _items(call: Call, context: Mapping[str, Any], path: tuple[str, ...]) -> list[Any]:
    found = lookup(context, path)
    if found is None:
        return []  # no such step, or one that did not run: no items
    if not isinstance(found, list | tuple):
        dotted = ".".join(path)
        raise ExpressionError(f"{dotted} is {kind(found)}, not a list", call.argument.column)
    return list(found)


def gather(call: Call, context: Mapping[str, Any]) -> list[Value] | None:
    """The values the call's argument gives, in order; None for count() of a bare list."""
    path = call.argument.path
    if WILDCARD not in path:
        return None
    star = path.index(WILDCARD)
    head, tail = path[:star], path[star + 1 :]
    values: list[Value] = []
    for item in _items(call, context, head):
        value = lookup(item, tail)
        if value is not None and not isinstance(value, str | int | float):
            dotted = ".".join(path)
            where = _named(item)
            message = f"{dotted} is {kind(value)}{where}, not a single value"
            raise ExpressionError(message, call.argument.column)
        values.append(value)
    return values


def _named(item: Any) -> str:
    name = item.get("name") if isinstance(item, Mapping) else None
    return f" for {name}" if isinstance(name, str) else ""


def aggregate(call: Call, context: Mapping[str, Any]) -> tuple[Value, list[Value] | None]:
    """The call's value, and the values it was taken over (None for count() of a list)."""
    values = gather(call, context)
    if values is None:
        return len(_items(call, context, call.argument.path)), None
    if call.function == "count":
        return sum(value is not None for value in values), values
    if call.function == "all":
        return all(truthy(value) for value in values), values
    if call.function == "any":
        return any(truthy(value) for value in values), values
    numbers: list[int | float] = []
    for value in values:
        if value is None:
            continue
        if not is_number(value):
            dotted = ".".join(call.argument.path)
            message = f"{call.function}() takes numbers, and {dotted} has a {type_name(value)}"
            raise ExpressionError(message, call.column, "count(), all() and any() take any value")
        numbers.append(value)
    if not numbers:
        return None, values
    return (max(numbers) if call.function == "max" else min(numbers)), values
