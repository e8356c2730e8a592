"""Preview runs (a pull request's): what they may not do, and the gate's verdict in words (pure).

A preview is a run whose trigger kind is `pull_request`. In one:
- a `deployment` step never runs: it is recorded `skipped`, its reason `preview: ` and the
  verdict its `when` gives ("would deploy" / "would be held: roc_auc 0.91 < production
  0.93 - 0.02", with a minus sign);
- an approval step does not pause;
- in a fork's pull request (`trigger.payload.fork`), a step naming a secret is skipped: GitHub
  gives a fork's workflow none;
- nothing becomes production (engine/run/records.py, `promote`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.core import expression_eval
from engine.core.expressions import (
    Arithmetic,
    Call,
    Comparison,
    Constant,
    Expression,
    ExpressionError,
    Logical,
    Node,
    Reference,
    Unary,
    walk,
)
from engine.core.manifest import RunManifest, StepRecord, StepStatus

PREVIEW_KIND = "pull_request"
PREVIEW_REASON = "preview"  # a deployment step's reason starts with it
WOULD_DEPLOY = "would deploy"
WOULD_HOLD = "would be held"
_OPPOSITE = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}
_SHOWN_OP = {"-": "\u2212"}  # the minus sign reads better than a hyphen between numbers


def is_preview(trigger: Mapping[str, Any] | None) -> bool:
    """Whether the expression context's `trigger` (kind, payload) is a preview's."""
    return isinstance(trigger, Mapping) and trigger.get("kind") == PREVIEW_KIND


def is_preview_run(manifest: RunManifest) -> bool:
    return manifest.trigger.kind == PREVIEW_KIND


def from_fork(trigger: Mapping[str, Any] | None) -> bool:
    """A fork's pull request (or one whose head repository was deleted): no secrets, no push."""
    if not is_preview(trigger):
        return False
    assert trigger is not None
    payload = trigger.get("payload")
    return isinstance(payload, Mapping) and payload.get("fork") is True


def deployment_reason(verdict: str) -> str:
    """The reason a preview records for a deployment step: `preview: would deploy`."""
    return f"{PREVIEW_REASON}: {verdict}"


def verdict_of(record: StepRecord) -> str | None:
    """The verdict a preview recorded for a deployment step, else None."""
    reason = record.reason or ""
    prefix = f"{PREVIEW_REASON}: "
    if record.status is StepStatus.skipped and reason.startswith(prefix):
        return reason[len(prefix) :]
    return None


def secrets_reason(names: list[str]) -> str:
    shown = ", ".join(names)
    return (
        f"fork pull request: GitHub gives a fork's workflow no secrets, and this step names {shown}"
    )


# --- the gate's verdict, in words -------------------------------------------------------------


def held_because(expr: Expression, context: Mapping[str, Any]) -> str:
    """Why `expr` is false over `context`, naming what each side is:
    `roc_auc 0.91 < production 0.93 - 0.02`. Each comparison that is false is shown, as
    the true statement its opposite makes; when none can be told apart, the evaluator's
    own explanation."""
    facts: list[str] = []
    for node, _ in walk(expr.root):
        if not isinstance(node, Comparison):
            continue
        try:
            holds, _trace = expression_eval.traced(Expression(expr.text, node), context)
        except ExpressionError:
            continue
        if holds:
            continue
        left, right = _side(node.left, context), _side(node.right, context)
        fact = f"{left} {_OPPOSITE.get(node.op, node.op)} {right}"
        if fact not in facts:
            facts.append(fact)
    if facts:
        return "; ".join(facts)
    try:
        _, trace = expression_eval.traced(expr, context)
    except ExpressionError as exc:
        return str(exc)
    return expression_eval.explain(trace) or f"when is false: {expr.text}"


def _value(path: tuple[str, ...], context: Mapping[str, Any]) -> Any:
    value: Any = context
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _number(value: Any) -> str:
    return expression_eval.literal(value)


def _side(node: Node, context: Mapping[str, Any]) -> str:
    """One side of a comparison: each reference named (a metric by its key, the baseline's as
    `production`) with its value, constants and operators as written."""
    if isinstance(node, Constant):
        return _number(node.value)
    if isinstance(node, Reference):
        path, value = node.path, _value(node.path, context)
        if path[:1] == ("baseline",) and len(path) >= 5 and path[3] == "metrics":
            return f"production {_number(value)}"
        if path[:1] == ("steps",) and len(path) >= 4 and path[2] == "metrics":
            return f"{'.'.join(path[3:])} {_number(value)}"
        if path[:1] == ("params",) and len(path) >= 2:
            return f"{'.'.join(path[1:])} {_number(value)}"
        return f"{'.'.join(path)} {_number(value)}"
    if isinstance(node, Arithmetic):
        text = _side(node.first, context)
        for op, _column, operand in node.rest:
            text += f" {_SHOWN_OP.get(op, op)} {_side(operand, context)}"
        return text
    if isinstance(node, Unary):
        inner = _side(node.operand, context)
        return f"not {inner}" if node.op == "not" else f"\u2212{inner}"
    if isinstance(node, Logical | Comparison):
        return "(…)"
    if isinstance(node, Call):  # an aggregate over a sweep's instances
        value = expression_eval.evaluate(Expression(node.text, node), context)
        return f"{node.text} {_number(value)}"
    return "?"
