"""What happens next to each pending step, given the DAG and every step's status (pure)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from engine.core import expression_eval, expressions, fanout, preview
from engine.core.graph import Dag
from engine.core.manifest import TERMINAL, StepStatus
from engine.core.spec import ResolvedStep

_BROKEN = frozenset({StepStatus.failed, StepStatus.upstream_failed, StepStatus.cancelled})
_RAN = frozenset({StepStatus.succeeded.value, StepStatus.cached.value})


class Action(StrEnum):
    run = "run"
    skip = "skip"
    upstream_failed = "upstream_failed"
    wait_approval = "wait_approval"
    fail = "fail"  # its `when` could not be evaluated (e.g. text compared with a number)
    settle = "settle"  # a fan-out's group step: its status follows from its instances'


@dataclass(frozen=True)
class Decision:
    step: str
    action: Action
    reason: str = ""
    warning: str | None = None  # something the user should see (the executor records it)
    status: StepStatus | None = None  # Action.settle: the status the group takes


class Planner:
    """Decides, step by step, once a step's needs have all finished.

    Main steps: a need that failed (or was cancelled) makes the step `upstream_failed`;
    a skipped need skips it; a false `when` skips it; `approval` pauses it until approved.
    `finally` steps wait for every main step and for their own needs, whatever the outcome.

    In a preview (a pull request's run: engine.core.preview) a `deployment` step is skipped
    with the verdict its `when` gives, an approval does not pause, and in a fork's pull
    request a step naming a secret is skipped.
    """

    def __init__(self, dag: Dag, steps: Mapping[str, ResolvedStep]) -> None:
        self.dag = dag
        self.steps = steps
        self._when = {
            name: expressions.parse(step.when)
            for name, step in steps.items()
            if step.when is not None
        }

    def next(
        self,
        statuses: Mapping[str, StepStatus],
        context: Mapping[str, Any],
        approved: Collection[str] = (),
    ) -> list[Decision]:
        """Decisions for every pending step whose turn has come, in DAG order."""
        decisions = []
        main_done = all(statuses[name] in TERMINAL for name in self.dag.order)
        trigger = context.get("trigger")
        in_preview = preview.is_preview(trigger)
        no_secrets = preview.from_fork(trigger)
        for name in [*self.dag.order, *self.dag.finally_steps]:
            if statuses[name] is not StepStatus.pending:
                continue
            step = self.steps[name]
            needs = self.dag.needs[name]
            if any(statuses[dep] not in TERMINAL for dep in needs):
                continue
            if step.is_group:  # its needs are its instances, each decided on its own
                status, reason = fanout.settle(step, statuses)
                decisions.append(Decision(name, Action.settle, reason, status=status))
                continue
            if step.is_finally:
                if not main_done:
                    continue
            else:
                broken = next((d for d in needs if statuses[d] in _BROKEN), None)
                if broken is not None:
                    what = statuses[broken].value.replace("_", " ")
                    decisions.append(
                        Decision(name, Action.upstream_failed, f"needs {broken!r}, which {what}")
                    )
                    continue
                skipped = next((d for d in needs if statuses[d] is StepStatus.skipped), None)
                if skipped is not None:
                    decisions.append(
                        Decision(name, Action.skip, f"needs {skipped!r}, which was skipped")
                    )
                    continue
            expr = self._when.get(name)
            # an instance's `when` reads its own values as matrix.x
            seen = {**context, "matrix": step.matrix} if step.instance_of else context
            if in_preview and step.type == "deployment":
                decisions.append(self._preview_deployment(name, expr, seen))
                continue
            if expr is not None:
                try:
                    holds, trace = expression_eval.traced(expr, seen)
                except expressions.ExpressionError as exc:
                    decisions.append(
                        Decision(name, Action.fail, f"when could not be evaluated: {exc}")
                    )
                    continue
                warning = missing_metrics(trace, seen)
                if not holds:
                    reason = f"when is false: {expr.text} ({expression_eval.explain(trace)})"
                    decisions.append(Decision(name, Action.skip, reason, warning))
                    continue
            else:
                warning = None
            if no_secrets and step.secrets:
                reason = preview.secrets_reason(step.secrets)
                decisions.append(Decision(name, Action.skip, reason, warning))
                continue
            if step.approval and name not in approved and not in_preview:
                decisions.append(
                    Decision(name, Action.wait_approval, "waits for `sluice approve`", warning)
                )
                continue
            decisions.append(Decision(name, Action.run, warning=warning))
        return decisions

    @staticmethod
    def _preview_deployment(
        name: str, expr: expressions.Expression | None, context: Mapping[str, Any]
    ) -> Decision:
        """A deployment step in a preview: skipped, with the verdict its `when` gives."""
        if expr is None:
            return Decision(name, Action.skip, preview.deployment_reason(preview.WOULD_DEPLOY))
        try:
            holds, trace = expression_eval.traced(expr, context)
        except expressions.ExpressionError as exc:
            verdict = f"would fail: when could not be evaluated: {exc}"
            return Decision(name, Action.skip, preview.deployment_reason(verdict))
        warning = missing_metrics(trace, context)
        if holds:
            verdict = preview.WOULD_DEPLOY
        else:
            verdict = f"{preview.WOULD_HOLD}: {preview.held_because(expr, context)}"
        return Decision(name, Action.skip, preview.deployment_reason(verdict), warning)


def _keys(metrics: Mapping[str, Any]) -> str:
    shown = ", ".join(sorted(metrics)[:5])
    return shown + (f" and {len(metrics) - 5} more" if len(metrics) > 5 else "")


def missing_metrics(trace: expression_eval.Trace, context: Mapping[str, Any]) -> str | None:
    """Words for each metric a `when` read as null from a step that ran (succeeded or was
    cached) without writing it: almost always metrics.json written to the wrong place, or
    a key spelt differently. A step that did not run has no metrics, and says so itself.
    """
    found: list[str] = []
    for path, value in trace.reads.items():
        baseline = path[:1] == ("baseline",)
        ref = path[1:] if baseline else path
        if value is not None or len(ref) < 4 or ref[0] != "steps" or ref[2] != "metrics":
            continue
        view = (context.get("baseline") or {}) if baseline else context
        step = (view.get("steps") or {}).get(ref[1])
        if not isinstance(step, Mapping) or step.get("status") not in _RAN:
            continue
        metrics, key, where = step.get("metrics") or {}, ref[3], ref[1]
        if baseline:
            where = f"the baseline run's {ref[1]}"
        if key in metrics:
            continue  # a deeper path into a flat metric: null, and not a missing metric
        if not metrics:
            found.append(
                f"`{key}` is missing: {where} wrote no metrics.json "
                "(a step writes its metrics to /sluice/outputs/metrics.json)"
            )
        else:
            found.append(
                f"`{key}` is missing: {where} wrote metrics without `{key}` "
                f"(it wrote {_keys(metrics)})"
            )
    return "; ".join(found) or None
