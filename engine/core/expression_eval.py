"""The `when:` language's meaning: static checks of references, and evaluation over a context.

The semantics are summed up in engine.core.expressions, which parses the text.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from engine.core.expressions import (
    Arithmetic,
    Comparison,
    Constant,
    Expression,
    ExpressionError,
    Node,
    Reference,
    Unary,
    Value,
    walk,
)
from engine.core.suggest import suggest

_VERBS = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide", "%": "take the remainder of"}
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
_ARITH["%"] = operator.mod
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _unknown(kind: str, name: str, known: Collection[str], dotted: str) -> str:
    message = f"unknown {kind} '{name}' in {dotted}"
    head = name.split("-", 1)[0]
    if "-" in name and head in known and dotted.endswith(name):
        return f"{message} (to subtract, put spaces around '-': {dotted.replace(name, head)} - ...)"
    return message + suggest(name, known)


def _check_step(path: tuple[str, ...], dotted: str, prefix: str, steps: Collection[str]) -> str:
    if not path:
        return f"incomplete reference {dotted}: write {prefix}.<step>.status or .metrics.<key>"
    name, fields = path[0], path[1:]
    if name not in steps:
        return _unknown("step", name, steps, dotted)
    shape = f"{prefix}.{name}.status or {prefix}.{name}.metrics.<key>"
    if not fields:
        return f"incomplete reference {dotted}: write {shape}"
    if fields[0] == "status":
        return "" if len(fields) == 1 else f"malformed reference {dotted}: write {shape}"
    if fields[0] == "metrics":
        return "" if len(fields) > 1 else f"incomplete reference {dotted}: write {dotted}.<key>"
    suggestion = suggest(fields[0], ("status", "metrics"))
    return f"unknown field '{fields[0]}' in {dotted}{suggestion}: write {shape}"


def _check_path(
    path: tuple[str, ...], steps: Collection[str], params: Collection[str], roots: Collection[str]
) -> str:
    dotted, root, rest = ".".join(path), path[0], path[1:]
    if root not in roots:
        starts = [r if r == "baseline" else f"{r}." for r in roots] or ["nothing"]
        allowed = " or ".join(filter(None, (", ".join(starts[:-1]), starts[-1])))
        return f"'{root}' cannot be used here ({dotted}): references here start with {allowed}"
    if root == "params":
        if len(rest) != 1:
            return f"malformed reference {dotted}: write params.<name>"
        return "" if rest[0] in params else _unknown("param", rest[0], params, dotted)
    if root == "steps":
        return _check_step(rest, dotted, "steps", steps)
    if root == "baseline":
        if not rest:
            return ""
        if rest[0] != "steps":
            return f"malformed reference {dotted}: write baseline or baseline.steps.<step>..."
        return _check_step(rest[1:], dotted, "baseline.steps", steps)
    return "" if rest else f"incomplete reference {dotted}: write {root}.<name>"


def check(
    expr: Expression,
    *,
    steps: Collection[str],
    params: Collection[str],
    roots: Collection[str] = ("params", "steps", "baseline", "trigger"),
) -> list[str]:
    """Messages, in source order, for references to unknown roots, steps or params or of a
    malformed shape; an empty list means every reference is fine."""
    refs = sorted(
        (n for n, _ in walk(expr.root) if isinstance(n, Reference)), key=lambda r: r.column
    )
    messages: list[str] = []
    for ref in refs:
        message = _check_path(ref.path, steps, params, tuple(roots))
        if message and message not in messages:
            messages.append(message)
    return messages


def _type_name(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "string" if isinstance(value, str) else "number"


def _is_number(value: Value) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _truthy(value: Value) -> bool:
    return value is not None and value is not False and value != 0 and value != ""


def _resolve(node: Reference, context: Mapping[str, Any]) -> Value:
    if node.path == ("baseline",):
        return context.get("baseline") is not None
    value: Any = context
    for segment in node.path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(segment)
    if value is None or isinstance(value, str | int | float):
        return value
    kind = "a mapping" if isinstance(value, Mapping) else f"a {type(value).__name__}"
    dotted = ".".join(node.path)
    raise ExpressionError(f"{dotted} is {kind}, not a single value", node.column)


def _arith(op: str, left: Value, right: Value, column: int) -> Value:
    if left is None or right is None:
        return None
    if op == "+" and isinstance(left, str) and isinstance(right, str):
        return left + right
    if not (_is_number(left) and _is_number(right)):
        verb = _VERBS[op]
        raise ExpressionError(f"cannot {verb} {_type_name(left)} and {_type_name(right)}", column)
    try:
        result: int | float = _ARITH[op](left, right)
        return result
    except ZeroDivisionError:
        return None
    except OverflowError:
        raise ExpressionError("number too large", column) from None


def _compare(op: str, left: Value, right: Value, column: int) -> bool:
    if op in ("==", "!="):
        # Python's True == 1 must not leak: booleans equal only booleans.
        same = isinstance(left, bool) == isinstance(right, bool) and left == right
        return same if op == "==" else not same
    if left is None or right is None:
        return False
    if not (_is_number(left) and _is_number(right)) and not (
        isinstance(left, str) and isinstance(right, str)
    ):
        raise ExpressionError(f"cannot compare {_type_name(left)} and {_type_name(right)}", column)
    return bool(_ORDER[op](left, right))


@dataclass
class Trace:
    """What one evaluation looked at, in order: each reference read with its value, and
    each comparison made (its operands, operator and outcome), for messages."""

    reads: dict[tuple[str, ...], Value] = field(default_factory=dict)
    comparisons: list[tuple[Value, str, Value, bool]] = field(default_factory=list)


def _value(node: Node, context: Mapping[str, Any], trace: Trace | None = None) -> Value:
    if isinstance(node, Constant):
        return node.value
    if isinstance(node, Reference):
        value = _resolve(node, context)
        if trace is not None:
            trace.reads.setdefault(node.path, value)
        return value
    if isinstance(node, Unary):
        value = _value(node.operand, context, trace)
        if node.op == "not":
            return not _truthy(value)
        if value is None or _is_number(value):
            return value if value is None else -value
        raise ExpressionError(f"cannot negate {_type_name(value)}", node.column)
    if isinstance(node, Arithmetic):
        result = _value(node.first, context, trace)
        for op, column, operand in node.rest:
            result = _arith(op, result, _value(operand, context, trace), column)
        return result
    if isinstance(node, Comparison):
        left = _value(node.left, context, trace)
        right = _value(node.right, context, trace)
        outcome = _compare(node.op, left, right, node.column)
        if trace is not None:
            trace.comparisons.append((left, node.op, right, outcome))
        return outcome
    stop = node.op == "or"  # `or` stops at the first true operand, `and` at the first false
    if any(_truthy(_value(o, context, trace)) == stop for o in node.operands):
        return stop
    return not stop


def evaluate(expr: Expression, context: Mapping[str, Any]) -> Any:
    """The expression's value (None, bool, int, float or str) over a context of plain dicts."""
    return _value(expr.root, context)


def holds(expr: Expression, context: Mapping[str, Any]) -> bool:
    """Whether the expression's value is truthy (not null, false, 0 or "")."""
    return _truthy(_value(expr.root, context))


def traced(expr: Expression, context: Mapping[str, Any]) -> tuple[bool, Trace]:
    """`holds`, with what the evaluation read and compared (see `explain`)."""
    trace = Trace()
    return _truthy(_value(expr.root, context, trace)), trace


_OPPOSITE = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}


def literal(value: Value, limit: int = 40) -> str:
    """A value as the language writes it: null, true, 0.858, 'text' (long text cut).

    >>> print(literal(None), literal(True), literal(0.858), literal("ok"))
    null true 0.858 'ok'
    """
    if isinstance(value, str):
        text = value if len(value) <= limit else value[: limit - 1] + "…"
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return json.dumps(value)


def explain(trace: Trace) -> str:
    """The values behind an outcome, each as a true statement: `0.858 < 0.9`, or for a
    reference read on its own, `params.go = false`.

    Comparisons come first, as made; ordering with null is always false, and says so.
    """
    facts: list[str] = []
    for left, op, right, outcome in trace.comparisons:
        if not outcome and op not in ("==", "!=") and (left is None or right is None):
            fact = f"{literal(left)} {op} {literal(right)} is false"
        else:
            fact = f"{literal(left)} {op if outcome else _OPPOSITE[op]} {literal(right)}"
        if fact not in facts:
            facts.append(fact)
    if not facts:
        facts = [f"{'.'.join(path)} = {literal(value)}" for path, value in trace.reads.items()]
    return ", ".join(facts)
