"""The `when:` language's meaning: static checks of references, and evaluation over a context.

The semantics are summed up in engine.core.expressions, which parses the text; the
aggregates are evaluated in engine.core.expression_aggregates.

The context is plain dicts: {"params": {...}, "steps": {<step>: {"status", "metrics": {...}}},
"baseline": None or {"steps": ...}, "trigger": {...}} for a step's `when`, plus "matrix":
{<key>: value} for an instance of a fanned-out step; a fanned-out step's entry in "steps"
also has "instances": [{"name", "matrix": {...}, "status", "metrics": {...}}, ...].
"""

from __future__ import annotations

import json
import operator
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from engine.core.expression_aggregates import aggregate, kind, lookup
from engine.core.expression_aggregates import is_number as _is_number
from engine.core.expression_aggregates import truthy as _truthy
from engine.core.expression_aggregates import type_name as _type_name
from engine.core.expressions import (
    WILDCARD,
    Arithmetic,
    Call,
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
_INSTANCE_FIELDS = ("name", "status", "metrics", "matrix")


def _unknown(kind: str, name: str, known: Collection[str], dotted: str) -> str:
    message = f"unknown {kind} '{name}' in {dotted}"
    head = name.split("-", 1)[0]
    if "-" in name and head in known and dotted.endswith(name):
        return f"{message} (to subtract, put spaces around '-': {dotted.replace(name, head)} - ...)"
    return message + suggest(name, known)


@dataclass(frozen=True)
class _Scope:
    """What check() knows, and where a reference stands (`function`: the aggregate it is
    the argument of, or "")."""

    steps: Collection[str]
    params: Collection[str]
    roots: tuple[str, ...]
    fanned: Mapping[str, Collection[str] | None]  # a fanned-out step's matrix keys, if known
    matrix: Collection[str] | None
    function: str = ""


def _check_step(path: tuple[str, ...], dotted: str, prefix: str, scope: _Scope) -> str:
    if not path:
        return f"incomplete reference {dotted}: write {prefix}.<step>.status or .metrics.<key>"
    name, fields = path[0], path[1:]
    if name not in scope.steps:
        return _unknown("step", name, scope.steps, dotted)
    shape = f"{prefix}.{name}.status or {prefix}.{name}.metrics.<key>"
    if not fields:
        return f"incomplete reference {dotted}: write {shape}"
    if scope.function and fields != ("instances",) and WILDCARD not in fields:
        return f"{scope.function}() needs a list, and {dotted} is a single value"
    if fields[0] == "instances":
        return _check_instances(name, fields[1:], dotted, f"{prefix}.{name}.instances", scope)
    if fields[0] == "status":
        return "" if len(fields) == 1 else f"malformed reference {dotted}: write {shape}"
    if fields[0] == "metrics" and len(fields) > 1 and name in scope.fanned:
        each = f"{prefix}.{name}.instances.*.metrics.{fields[1]}"
        return f"{name} fans out, so {dotted} is always null: read its instances', e.g. max({each})"
    if fields[0] == "metrics":
        return "" if len(fields) > 1 else f"incomplete reference {dotted}: write {dotted}.<key>"
    known = ("status", "metrics", "instances") if name in scope.fanned else ("status", "metrics")
    return f"unknown field '{fields[0]}' in {dotted}{suggest(fields[0], known)}: write {shape}"


def _check_instances(
    name: str, rest: tuple[str, ...], dotted: str, instances: str, scope: _Scope
) -> str:
    """`rest`: what follows `<prefix>.<name>.instances` (written `instances`) in `dotted`."""
    if name not in scope.fanned:
        return f"{name} does not fan out (it has no matrix or foreach), so {dotted} does not exist"
    shape = f"{instances}.*.<field> (name, status, metrics.<key> or matrix.<key>)"
    if not rest:
        if scope.function == "count":
            return ""
        return (
            f"{dotted} is a list: count({dotted}) gives the number of instances, "
            f"and e.g. max({instances}.*.metrics.<key>) reads their values"
        )
    if rest[0] != WILDCARD:
        return f"malformed reference {dotted}: write {shape}"
    field, more = rest[1], rest[2:]  # the parser saw a field after the '*'
    if field in ("name", "status"):
        if more:
            return f"malformed reference {dotted}: write {instances}.*.{field}"
        if scope.function in ("max", "min"):
            return f"{scope.function}() takes numbers, and {dotted} is text"
        return ""
    if field == "metrics":
        return "" if more else f"incomplete reference {dotted}: write {dotted}.<key>"
    if field == "matrix":
        if len(more) != 1:
            return f"malformed reference {dotted}: write {instances}.*.matrix.<key>"
        keys = scope.fanned[name]
        if keys is None or more[0] in keys:
            return ""
        return _unknown("matrix key", more[0], keys, dotted)
    suggestion = suggest(field, _INSTANCE_FIELDS)
    return f"unknown field '{field}' in {dotted}{suggestion}: write {shape}"


def _check_path(path: tuple[str, ...], scope: _Scope) -> str:
    dotted, root, rest = ".".join(path), path[0], path[1:]
    if root == "matrix":
        if scope.matrix is None:
            return (
                f"{dotted} cannot be used here: matrix. is only for a step with matrix or foreach"
            )
        if len(rest) != 1:
            return f"malformed reference {dotted}: write matrix.<key>"
        if rest[0] in scope.matrix:
            return ""
        return _unknown("matrix key", rest[0], scope.matrix, dotted)
    if root not in scope.roots:
        starts = [r if r == "baseline" else f"{r}." for r in scope.roots] or ["nothing"]
        allowed = " or ".join(filter(None, (", ".join(starts[:-1]), starts[-1])))
        return f"'{root}' cannot be used here ({dotted}): references here start with {allowed}"
    if root == "params":
        if len(rest) != 1:
            return f"malformed reference {dotted}: write params.<name>"
        return "" if rest[0] in scope.params else _unknown("param", rest[0], scope.params, dotted)
    if root == "steps":
        return _check_step(rest, dotted, "steps", scope)
    if root == "baseline":
        if not rest:
            return ""
        if rest[0] != "steps":
            return f"malformed reference {dotted}: write baseline or baseline.steps.<step>..."
        return _check_step(rest[1:], dotted, "baseline.steps", scope)
    return "" if rest else f"incomplete reference {dotted}: write {root}.<name>"


def check(
    expr: Expression,
    *,
    steps: Collection[str],
    params: Collection[str],
    roots: Collection[str] = ("params", "steps", "baseline", "trigger"),
    fanned: Collection[str] | Mapping[str, Collection[str]] = (),
    matrix: Collection[str] | None = None,
) -> list[str]:
    """Messages, in source order, for references to unknown roots, steps, params or matrix
    keys, or of a malformed shape; an empty list means every reference is fine.

    `fanned`: the steps that fan out (only theirs have `instances`); a mapping gives each
    one's matrix keys, which `steps.<step>.instances.*.matrix.<key>` is then checked against.
    `matrix`: the keys of the step's own matrix, when it fans out; None: `matrix.` is not
    allowed.
    """
    keys = {name: (fanned[name] if isinstance(fanned, Mapping) else None) for name in fanned}
    scope = _Scope(steps, params, tuple(roots), keys, matrix)
    in_call = {id(n.argument): n.function for n, _ in walk(expr.root) if isinstance(n, Call)}
    refs = sorted(
        (n for n, _ in walk(expr.root) if isinstance(n, Reference)), key=lambda r: r.column
    )
    messages: list[str] = []
    for ref in refs:
        function = in_call.get(id(ref), "")
        message = _check_path(ref.path, replace(scope, function=function))
        if message and message not in messages:
            messages.append(message)
    return messages


def _resolve(node: Reference, context: Mapping[str, Any]) -> Value:
    if node.path == ("baseline",):
        return context.get("baseline") is not None
    value = lookup(context, node.path)
    if value is None or isinstance(value, str | int | float):
        return value
    dotted, hint = ".".join(node.path), ""
    if isinstance(value, list) and node.path[-1] == "instances":
        hint = f"count({dotted}) gives the number of instances"
    raise ExpressionError(f"{dotted} is {kind(value)}, not a single value", node.column, hint)


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
    """What one evaluation looked at, in order, for messages: each reference read with its
    value (a wildcard reference's: the list of values it gave), each aggregate taken (by
    its text, `max(steps.train.instances.*.metrics.auc)`) with its value, and each
    comparison made (its operands, operator and outcome)."""

    reads: dict[tuple[str, ...], Value | list[Value]] = field(default_factory=dict)
    comparisons: list[tuple[Value, str, Value, bool]] = field(default_factory=list)
    aggregates: dict[str, Value] = field(default_factory=dict)


def _value(node: Node, context: Mapping[str, Any], trace: Trace | None = None) -> Value:
    if isinstance(node, Constant):
        return node.value
    if isinstance(node, Reference):
        value = _resolve(node, context)
        if trace is not None:
            trace.reads.setdefault(node.path, value)
        return value
    if isinstance(node, Call):
        value, values = aggregate(node, context)
        if trace is not None:
            if values is not None:
                trace.reads.setdefault(node.argument.path, values)
            trace.aggregates.setdefault(node.text, value)
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
    reference or aggregate read on its own, `params.go = false`, `max(...) = 0.91`.

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
        facts = [f"{text} = {literal(value)}" for text, value in trace.aggregates.items()]
        facts += [
            f"{'.'.join(path)} = {literal(value)}"
            for path, value in trace.reads.items()
            if not isinstance(value, list)
        ]
    return ", ".join(facts)
