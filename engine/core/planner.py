"""What happens next to each pending step, given the DAG and every step's status (pure)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from engine.core import expression_eval, expressions
from engine.core.graph import Dag
from engine.core.manifest import TERMINAL, StepStatus
from engine.core.spec import ResolvedStep

_BROKEN = frozenset({StepStatus.failed, StepStatus.upstream_failed, StepStatus.cancelled})


class Action(StrEnum):
    run = "run"
    skip = "skip"
    upstream_failed = "upstream_failed"
    wait_approval = "wait_approval"
    fail = "fail"  # its `when` could not be evaluated (e.g. text compared with a number)


@dataclass(frozen=True)
class Decision:
    step: str
    action: Action
    reason: str = ""
    warning: str | None = None  # something the user should see (the executor records it)


class Planner:
    """Decides, step by step, once a step's needs have all finished.

    Main steps: a need that failed (or was cancelled) makes the step `upstream_failed`;
    a skipped need skips it; a false `when` skips it; `approval` pauses it until approved.
    `finally` steps wait for every main step and for their own needs, whatever the outcome.
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
        for name in [*self.dag.order, *self.dag.finally_steps]:
            if statuses[name] is not StepStatus.pending:
                continue
            step = self.steps[name]
            needs = self.dag.needs[name]
            if any(statuses[dep] not in TERMINAL for dep in needs):
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
            if expr is not None:
                try:
                    holds = expression_eval.holds(expr, context)
                except expressions.ExpressionError as exc:
                    decisions.append(
                        Decision(name, Action.fail, f"when could not be evaluated: {exc}")
                    )
                    continue
                if not holds:
                    decisions.append(Decision(name, Action.skip, f"when is false: {expr.text}"))
                    continue
            if step.approval and name not in approved:
                decisions.append(Decision(name, Action.wait_approval, "waits for `sluice approve`"))
                continue
            decisions.append(Decision(name, Action.run))
        return decisions
