"""Jobs mode for fan-out steps (pure; engine.core.gh_jobs builds the workflow with it).

A fanned-out step is ONE GitHub job with a `strategy.matrix` of a single vector,
`instance`: the names of the step's instances that still have to run, which the `plan` job
gives as its `fanout` output (a JSON object, group -> [instance names]). Each instance of the
matrix runs the engine with `command: step` and its instance's name, and records its result
on the results branch as any step job does: a matrix job's outputs are one value for all its
instances (the last writer wins), so nothing goes through them.

GitHub marks a matrix job failed when one instance fails, even when the step's
`allow_failures` lets the group succeed: a job that needs a fanned-out step therefore does
not look at that job's result; it starts, and the engine decides from the results branch
(the group settles there: succeeded, or failed, and then the step is `upstream_failed`).

GitHub's limits: a job's `if` is evaluated before its strategy (so an empty matrix is never
expanded: the plan says `run` only when an instance must run); at most MAX_JOBS jobs in a
run (plan, finish, one per plain step and one per instance to run).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.fanout import MAX_INSTANCES, MAX_NAME, FanOutError, instances
from engine.core.gh_workflow import Commented
from engine.core.spec import ResolvedStep
from engine.errors import InvalidInput

MAX_JOBS = 256  # GitHub: jobs a workflow run may have (a matrix counts as its instances)
OUTPUT = "fanout"  # the plan job's output: group -> the instances whose jobs start
VECTOR = "instance"  # the matrix's one vector
INSTANCE = "${{ matrix.instance }}"


def job_id(step: str) -> str:
    """A step's job id: step names match ^[a-z0-9][a-z0-9-]{0,62}$, so it is always valid."""
    return f"step-{step}"


def groups(steps: Sequence[ResolvedStep]) -> set[str]:
    """The fanned-out steps of a pipeline as loaded (its templates)."""
    return {step.name for step in steps if step.fanout is not None}


def condition(step: ResolvedStep, fanned: set[str]) -> str:
    """A step job's `if`: a run was planned, the plan says `run`, and no need's job failed,
    except a fanned-out need's (its matrix job fails when one instance does, whatever
    `allow_failures` allows: the engine decides from the results branch)."""
    parts = [
        "!cancelled()",
        "needs.plan.outputs.run-id != ''",
        f"fromJSON(needs.plan.outputs.steps)['{step.name}'] == 'run'",
    ]
    plain = [need for need in step.needs if need not in fanned]
    if len(plain) == len(step.needs):
        parts.append("!contains(needs.*.result, 'failure')")
    else:
        parts += [f"needs.{job_id(need)}.result != 'failure'" for need in plain]
    return "${{ " + " && ".join(parts) + " }}"


def strategy(step: ResolvedStep) -> dict[str, Any]:
    """The matrix job's `strategy`: one vector of instance names from the plan's output,
    the step's `fail_fast` (GitHub's stops at the first failure, so only when the step
    allows none) and `max_parallel`."""
    spec = step.fanout
    assert spec is not None
    matrix = {VECTOR: f"${{{{ fromJSON(needs.plan.outputs.{OUTPUT})['{step.name}'] }}}}"}
    fail_fast: bool | Commented = spec.fail_fast
    if spec.fail_fast and spec.allow_failures:
        fail_fast = Commented(
            False, "fail_fast with allow_failures: GitHub's would stop at the first failure"
        )
    found: dict[str, Any] = {"matrix": matrix, "fail-fast": fail_fast}
    if spec.max_parallel is not None:
        found["max-parallel"] = spec.max_parallel
    return found


@dataclass(frozen=True)
class Size:
    """What a step adds to a run: its jobs and its instances' names (the plan's output)."""

    jobs: int
    names: int  # bytes of the names in the `fanout` output, as JSON, with commas
    known: bool  # the count follows from the file (else a list param decides at run time)


def size(step: ResolvedStep, params: Mapping[str, Any]) -> Size:
    """A step's jobs with the pipeline's default params: 1 for a plain step, its instances
    for a fanned-out one (a list param's default may be empty: it counts as 1 here, and
    the plan checks the run's own count)."""
    if step.fanout is None:
        return Size(1, 0, True)
    known = not (isinstance(step.fanout.foreach, str) or _param_axes(step))
    try:
        made = instances(step, params)
    except FanOutError:
        return Size(1, MAX_NAME + 3, False)
    return Size(len(made), sum(len(json.dumps(i.name)) + 1 for i in made), known)


def _param_axes(step: ResolvedStep) -> bool:
    matrix = step.fanout.matrix if step.fanout is not None else None
    return matrix is not None and any(isinstance(v, str) for v in matrix.axes.values())


def output_bytes(steps: Sequence[ResolvedStep], params: Mapping[str, Any]) -> int:
    """The most the plan's `fanout` output can take: the file's names where they are known;
    a list param's instances at most as many as the jobs left, each MAX_NAME long."""
    fanned = [step for step in steps if step.fanout is not None]
    if not fanned:
        return 0
    sizes = [size(step, params) for step in fanned]
    plain = sum(1 for step in steps if step.fanout is None)
    room = min(MAX_INSTANCES, MAX_JOBS - 2 - plain)
    found = sum(s.names for s in sizes if s.known)
    if any(not s.known for s in sizes):
        found += room * (MAX_NAME + 3)  # every job left to a list param's instances
    framing = sum(len(json.dumps(step.name)) + 4 for step in fanned) + 2
    return found + framing


def run_jobs(steps: Sequence[ResolvedStep]) -> tuple[int, list[tuple[str, int]]]:
    """The jobs of an expanded run (plan, finish, one per plain main step, one per instance)
    and each group's instance count."""
    main = [s for s in steps if not s.is_finally]
    counted = [(s.name, len(s.instances)) for s in main if s.is_group]
    plain = sum(1 for s in main if s.instance_of is None and not s.is_group)
    return 2 + plain + sum(n for _, n in counted), counted


def too_many_jobs(jobs: int, counted: Sequence[tuple[str, int]]) -> str:
    """Words for a run over MAX_JOBS jobs, and how to stay within it."""
    sweeps = ", ".join(f"{name} {n} instances" for name, n in counted)
    return (
        f"the run would make {jobs} GitHub jobs (plan, finish, one per step and one per "
        f"instance: {sweeps}); a GitHub workflow run has at most {MAX_JOBS}: make the sweep "
        "smaller (fewer values, or exclude combinations), or use the single-job mode "
        "(sluice.yaml `workflow: {mode: single}`)"
    )


def check_run(steps: Sequence[ResolvedStep]) -> None:
    """At plan time: the run's own instances (params from the event) within MAX_JOBS.
    Raises InvalidInput (exit 2) before anything is recorded."""
    jobs, counted = run_jobs(steps)
    if jobs > MAX_JOBS and counted:
        raise InvalidInput(f"jobs mode: {too_many_jobs(jobs, counted)}")
