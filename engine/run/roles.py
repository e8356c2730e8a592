"""Jobs mode: which planner decisions each part of a run (plan, step, finish) takes itself."""

from __future__ import annotations

from typing import Final

from engine.core.planner import Action, Decision
from engine.core.spec import ResolvedStep
from engine.run.options import JobRole

CACHE_ONLY: Final = "cache-only"  # plan: take the step from the cache if it is there, else leave it


def taken(role: JobRole | None, decision: Decision, step: ResolvedStep) -> Decision | str | None:
    """The decision this part applies: `decision` itself, another one, CACHE_ONLY, or None
    (not this part's to take: the step stays pending for the job that runs it).

    - A single-runner run (no role) takes every decision.
    - `plan` starts nothing: a step due to run is taken from the cache or left to its job,
      and so is an approval (the job's GitHub environment, or `sluice approve`, decides).
    - `step` runs its own step; of the others it settles, in memory only, what needs no
      container (a failed need makes its dependents `upstream_failed`, and so on).
    - `finish` runs the `finally` steps; a main step still due to run had a job that ended
      without recording it, and fails saying how that job ended (an instance of a fan-out:
      its group's matrix job, which has one result for all its instances).
    - Every part settles a fan-out's group once all its instances have finished
      (`Action.settle`): `plan` when the cache had them all, a step job that needs the
      group (in memory: only `finish` records it), and `finish`.
    """
    if role is None or role.runs(decision.step, step.is_finally):
        return decision
    if decision.action is Action.run:
        if role.part == "plan":
            return CACHE_ONLY
        if role.part == "finish":
            return Decision(decision.step, Action.fail, _no_record(role, decision.step, step))
        return None
    if decision.action is Action.wait_approval:
        if role.part == "finish" and step.environment:
            why = f"not approved in GitHub environment {step.environment!r}"
            return Decision(decision.step, Action.fail, f"{why} ({_job(role, decision.step)})")
        return decision if role.part == "finish" else None
    return decision


def _job(role: JobRole, step: str) -> str:
    result = role.results.get(step)
    return f"its job {result}" if result else "its job did not run"


def _no_record(role: JobRole, name: str, step: ResolvedStep) -> str:
    if step.instance_of is None:
        return f"{_job(role, name)} without recording a result"
    result = role.results.get(step.instance_of)
    job = f"step-{step.instance_of}"
    if not result:
        return f"its matrix job ({job}) did not run"
    return f"its matrix job ({job}) ended {result}; this instance recorded no result"
