"""Jobs mode: one GitHub workflow per pipeline, each step its own job (pure).

`.github/workflows/sluice-<pipeline>.yml` has the events of the single workflow limited to
that pipeline, and the jobs (docs/github-action.md, "Jobs mode"):

- `plan`: the engine with `command: plan`; outputs `run-id` ('' when the event calls for
  nothing) and `steps`, a JSON object of step name -> decision (`run` starts the job), and
  for a pipeline with fan-out steps `fanout` (group -> the instances to run);
- `step-<name>` for each main step: `needs` mirror the DAG, `runs-on` its `runs_on`, its
  `environment`, a `timeout-minutes` from its timeout, retries and backoff; the engine with
  `command: step`, given only that step's secrets. A fanned-out step's job has a
  `strategy.matrix` of its instances, one job each (engine.core.gh_fanout);
- `finish`: always, once a run was planned; runs the `finally` steps and settles the run.

Limits checked here: at most MAX_JOBS jobs (an instance is a job), outputs far under GitHub's 1 MB a job, and a
step's timeout within its runner's job limit.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from engine.core import gh_fanout
from engine.core.gh_fanout import MAX_JOBS, job_id
from engine.core.gh_workflow import (
    Commented,
    Wants,
    WorkflowOptions,
    engine_env,
    engine_uses,
    header,
    on_events,
    permissions,
    setup_steps,
    to_yaml,
)
from engine.core.parse import LoadedPipeline
from engine.core.policy import backoff
from engine.core.spec import ResolvedStep
from engine.errors import PipelineInvalid, Problem

OUTPUTS_LIMIT = 1024 * 1024  # GitHub: a job's outputs, in bytes
OUTPUTS_BUDGET = OUTPUTS_LIMIT // 16  # what the generated outputs may take at most
DEFAULT_RUNNER = "ubuntu-latest"
# A job's set-up besides the step itself: check out, start (or build) the engine image,
# build or pull the step's image, move its inputs and outputs, record the result.
MARGIN_MINUTES = 20
HOSTED_LIMIT_MINUTES = 360  # GitHub-hosted runners stop a job after 6 hours
SELF_HOSTED_LIMIT_MINUTES = 5 * 24 * 60  # self-hosted runners: 5 days
# Labels of GitHub-hosted runners; a label set with any other label is taken as self-hosted
# (actions-runner-controller scale sets included).
_HOSTED = re.compile(r"^(ubuntu|windows|macos)-[a-z0-9.-]+$")
RUN_ID = "${{ needs.plan.outputs.run-id }}"  # what the step and finish jobs act on
_DECISION_BYTES = len('"waiting_approval",')  # the longest decision, as JSON, with its comma


def workflow_path(pipeline: str) -> str:
    """Where a pipeline's jobs-mode workflow lives, relative to the repository."""
    return f".github/workflows/sluice-{pipeline}.yml"


def render(loaded: LoadedPipeline, options: WorkflowOptions) -> str:
    """The workflow file's text for one pipeline."""
    return header(options, loaded.file, jobs=True) + "\n" + to_yaml(document(loaded, options))


def document(loaded: LoadedPipeline, options: WorkflowOptions) -> dict[str, Any]:
    """The workflow as data. Raises PipelineInvalid when a GitHub limit cannot hold."""
    main = [step for step in loaded.steps if not step.is_finally]
    final = [step for step in loaded.steps if step.is_finally]
    _check_limits(loaded, main)
    default = list(loaded.pipeline.defaults.runs_on or [])
    fanned = gh_fanout.groups(main)
    jobs: dict[str, Any] = {"plan": _plan(loaded.name, default, options, bool(fanned))}
    for step in main:
        jobs[job_id(step.name)] = _step_job(loaded, step, options, fanned)
    jobs["finish"] = _finish(loaded, final, [job_id(s.name) for s in main], default, options)
    return {
        "name": f"Sluice: {loaded.name}",
        "run-name": f"{loaded.name} (${{{{ github.event_name }}}})",
        "on": on_events(Wants.of([(loaded.file, loaded.pipeline)]), None, options),
        "permissions": {},
        "jobs": jobs,
    }


def _runs_on(labels: Sequence[str]) -> str | list[str]:
    if not labels:
        return DEFAULT_RUNNER
    return labels[0] if len(labels) == 1 else list(labels)


def _engine(
    name: str, with_: dict[str, Any], env: dict[str, str], options: WorkflowOptions
) -> dict[str, Any]:
    return {
        "name": name,
        "id": with_["command"],
        "uses": engine_uses(options),
        "with": with_,
        "env": env,
    }


def _plan(
    pipeline: str, labels: list[str], options: WorkflowOptions, fanned: bool
) -> dict[str, Any]:
    engine = _engine(
        "Plan the run: what the event calls for, cache hits, certain skips",
        {"command": "plan", "pipeline": pipeline},
        engine_env(set(), options),
        options,
    )
    outputs = {
        "run-id": "${{ steps.plan.outputs.run-id }}",
        "steps": "${{ steps.plan.outputs.steps }}",
    }
    if fanned:
        outputs[gh_fanout.OUTPUT] = f"${{{{ steps.plan.outputs.{gh_fanout.OUTPUT} }}}}"
    return {
        "name": "plan",
        "runs-on": _runs_on(labels),
        "timeout-minutes": MARGIN_MINUTES,
        "permissions": permissions(options),
        "outputs": outputs,
        "steps": [*setup_steps(options), engine],
    }


def _step_job(
    loaded: LoadedPipeline, step: ResolvedStep, options: WorkflowOptions, fanned: set[str]
) -> dict[str, Any]:
    # a fanned-out step: one job per instance, each named and run as its instance
    name = gh_fanout.INSTANCE if step.fanout is not None else step.name
    job: dict[str, Any] = {
        "name": name,
        "needs": ["plan", *(job_id(need) for need in step.needs)],
        "if": gh_fanout.condition(step, fanned),
        "runs-on": _runs_on(step.runs_on),
    }
    if step.fanout is not None:
        job["strategy"] = gh_fanout.strategy(step)
    if step.environment:
        job["environment"] = step.environment
    job["timeout-minutes"] = timeout_minutes(loaded, [step], step.runs_on)
    job["permissions"] = permissions(options)
    if step.environment and "actions" not in options.permissions:
        # the run's approvals (GitHub's REST API): who let the job start, for the record
        job["permissions"]["actions"] = Commented("read", "who approved the environment")
    engine = _engine(
        f"Run step {name}",
        {"command": "step", "run-id": RUN_ID, "step": name},
        engine_env(set(step.secrets), options),
        options,
    )
    job["steps"] = [*setup_steps(options), engine]
    return job


def _finish(
    loaded: LoadedPipeline,
    final: list[ResolvedStep],
    step_jobs: list[str],
    labels: list[str],
    options: WorkflowOptions,
) -> dict[str, Any]:
    secrets = {secret for step in final for secret in step.secrets}
    engine = _engine(
        "Run the finally steps and settle the run",
        {"command": "finish", "run-id": RUN_ID, "jobs": "${{ toJSON(needs) }}"},
        engine_env(secrets, options),
        options,
    )
    return {
        "name": "finish",
        "needs": ["plan", *step_jobs],
        "if": "${{ always() && needs.plan.outputs.run-id != '' }}",
        "runs-on": _runs_on(labels),
        "timeout-minutes": timeout_minutes(loaded, final, labels),
        "permissions": permissions(options),
        "steps": [*setup_steps(options), engine],
    }


def _worst_seconds(step: ResolvedStep) -> float:
    """Every attempt running to its timeout, with the backoff between attempts."""
    attempts = step.retries.limit + 1
    waits = sum(backoff(step.retries, number) for number in range(1, attempts))
    return step.timeout * attempts + waits


def _duration(seconds: float) -> str:
    minutes, rest = divmod(math.ceil(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{rest}s" if rest else "",
    ]
    return "".join(parts) or "0s"


def timeout_minutes(
    loaded: LoadedPipeline, steps: Sequence[ResolvedStep], labels: Sequence[str]
) -> int | Commented:
    """The job's `timeout-minutes`: ceil((timeout x attempts + backoffs) / 60), summed over
    `steps` (a finish job runs each finally step), plus MARGIN_MINUTES; at most the
    runner's job limit (GitHub-hosted 360, self-hosted 7200). Raises PipelineInvalid when
    even one attempt of a step cannot fit in that limit."""
    hosted = all(_HOSTED.match(label) for label in labels or [DEFAULT_RUNNER])
    limit = HOSTED_LIMIT_MINUTES if hosted else SELF_HOSTED_LIMIT_MINUTES
    for step in steps:
        if math.ceil(step.timeout / 60) + MARGIN_MINUTES > limit:
            _too_long(loaded, step, limit, hosted)
    if not steps:
        return MARGIN_MINUTES
    minutes = sum(math.ceil(_worst_seconds(step) / 60) for step in steps) + MARGIN_MINUTES
    if minutes > limit:
        runner = "GitHub-hosted" if hosted else "self-hosted"
        return Commented(limit, f"capped: {runner} runners stop a job after {limit} minutes")
    parts = []
    for step in steps:
        attempts = step.retries.limit + 1
        waits = _worst_seconds(step) - step.timeout * attempts
        part = f"{_duration(step.timeout)}" + (f" x {attempts} attempts" if attempts > 1 else "")
        parts.append(part + (f" + {_duration(waits)} backoff" if waits else ""))
    return Commented(minutes, " + ".join([*parts, f"{MARGIN_MINUTES}m margin"]))


def _too_long(loaded: LoadedPipeline, step: ResolvedStep, limit: int, hosted: bool) -> None:
    where, written = (
        ("finally", loaded.pipeline.finally_)
        if step.is_finally
        else ("steps", loaded.pipeline.steps)
    )
    index = [s.name for s in written].index(step.name)
    line = loaded.lines.key_line((where, index, "timeout"))
    most = _duration((limit - MARGIN_MINUTES) * 60)
    fix = (
        "run it on a self-hosted runner (`runs_on: [self-hosted, ...]`)"
        if hosted
        else "split the step"
    )
    message = (
        f"steps.{step.name}.timeout: {_duration(step.timeout)} does not fit in a job: "
        f"{'GitHub-hosted' if hosted else 'self-hosted'} runners stop a job after {limit} "
        f"minutes, and the job needs {MARGIN_MINUTES} more for its set-up; "
        f"lower timeout to at most {most}, or {fix}"
    )
    raise PipelineInvalid([Problem(loaded.file, line, message)])


def _check_limits(loaded: LoadedPipeline, main: list[ResolvedStep]) -> None:
    params = loaded.pipeline.params
    sizes = {step.name: gh_fanout.size(step, params) for step in main}
    jobs = sum(size.jobs for size in sizes.values()) + 2
    counted = [(s.name, sizes[s.name].jobs) for s in main if s.fanout is not None]
    if jobs > MAX_JOBS and counted:
        biggest = max(counted, key=lambda pair: pair[1])[0]
        index = [s.name for s in loaded.pipeline.steps].index(biggest)
        field = "matrix" if loaded.pipeline.steps[index].matrix is not None else "foreach"
        line = loaded.lines.key_line(("steps", index, field))
        problem = f"steps.{biggest}.{field}: {gh_fanout.too_many_jobs(jobs, counted)}"
        raise PipelineInvalid([Problem(loaded.file, line, problem)])
    if jobs > MAX_JOBS:
        line = loaded.lines.key_line(("steps",))
        raise PipelineInvalid(
            [
                Problem(
                    loaded.file,
                    line,
                    f"steps: {len(main)} steps make {jobs} jobs (plan, one per step, finish); "
                    f"a GitHub workflow has at most {MAX_JOBS}: keep to {MAX_JOBS - 2} steps "
                    "(merge small steps, or split the pipeline), or use the single-job mode "
                    "(sluice.yaml `workflow: {mode: single}`)",
                )
            ]
        )
    # plan's `steps` output: {"<name>": "<decision>", ...}; finish's `jobs` input holds it
    # again inside toJSON(needs), with every job's result.
    # The fanout output ({"<group>": ["<instance>", ...]}) is in both too.
    steps_output = sum(len(json.dumps(s.name)) + 1 + _DECISION_BYTES for s in main) + 2
    steps_output += gh_fanout.output_bytes(main, params)
    needs_json = 2 * steps_output + sum(len(job_id(s.name)) + 64 for s in main) + 256
    if max(steps_output, needs_json) > OUTPUTS_BUDGET:
        raise PipelineInvalid(
            [
                Problem(
                    loaded.file,
                    loaded.lines.key_line(("steps",)),
                    f"steps: the plan's outputs would take up to {needs_json} bytes, more "
                    f"than the {OUTPUTS_BUDGET} kept for them (GitHub's limit is "
                    f"{OUTPUTS_LIMIT} a job): use fewer steps or shorter names",
                )
            ]
        )
