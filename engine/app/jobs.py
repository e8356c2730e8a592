"""Jobs mode (docs/scaling.md): one run's parts, each in its own GitHub job on its own runner.

`plan` makes the run's record, `step` runs one step, `finish` runs the `finally` steps and
settles the run. The jobs share nothing but the results branch and the artifact store: each
part reads the run's record from the remote, and writes back only what it owns.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from engine.adapters import github_api, github_ci
from engine.adapters.console import make_reporter
from engine.adapters.github_env import Event
from engine.app import execution, trigger
from engine.app.drift_follow import DriftFollower
from engine.app.runs import (
    OneAtATime,
    Place,
    _current,
    _read,
    launch,
    options,
    refuse_without_outputs,
)
from engine.app.tick import Ticker, due, parse_window
from engine.core import gh_fanout
from engine.core.expand import expand
from engine.core.manifest import (
    DONE_OK,
    TERMINAL,
    RunManifest,
    RunStatus,
    StepStatus,
    Trigger,
)
from engine.core.parse import LoadedPipeline
from engine.core.spec import ResolvedStep
from engine.core.triggers.cron import slot_iso
from engine.core.triggers.github import PlannedRun, RunTick
from engine.errors import UsageError
from engine.run.executor import Executor, new_run_id
from engine.run.options import JobRole, RunOptions
from engine.run.prepare import decide_approval

TICK_WINDOW = "1h"  # as `sluice tick`'s default
RUN = "run"  # a plan's decision for a step whose job must start


@dataclass(frozen=True)
class Planned:
    """What `plan` decided: the run (None when the event calls for nothing) and, per step,
    "run" (start its job) or the status it already has (cached, skipped...); per fan-out,
    the instances whose matrix jobs start (a group is "run" when it has any)."""

    manifest: RunManifest | None
    steps: dict[str, str]
    fanout: dict[str, list[str]] = field(default_factory=dict)


def job_info(env: Mapping[str, str]) -> dict[str, str] | None:
    """The GitHub job this process runs in (id, runner, run URL); None outside Actions."""
    ci = github_ci.ci_context(env)
    if ci is None:
        return None
    info = {"job": ci.get("job") or "", "runner": env.get("RUNNER_NAME", "")[:100]}
    if ci.get("run_url"):
        info["url"] = str(ci["run_url"])
    return {k: v for k, v in info.items() if v}


# -- plan -------------------------------------------------------------------------------


def plan(
    place: Place,
    event: Event,
    pipeline: str,
    runs: OneAtATime,
    *,
    now: datetime | None = None,
) -> Planned:
    """Make the run `event` calls for of `pipeline`, settling what needs no container."""
    loaded = place.pipeline(pipeline)
    if event.name == "workflow_dispatch":  # a pipeline's own workflow asks for no pipeline input
        inputs = dict(event.payload.get("inputs") or {})
        inputs.setdefault("pipeline", loaded.name)
        event = replace(event, payload={**event.payload, "inputs": inputs})
    planned = trigger.planned_runs(place, event, [loaded])
    if isinstance(planned, RunTick):
        run_options = _claim_slot(place, loaded, now or datetime.now(UTC))
    else:
        mine = [run for run in planned if run.pipeline == loaded.name]
        run_options = _options(place, loaded, mine[0]) if mine else None
    if run_options is None:
        return Planned(None, {})
    # the run's own sweep (params from the event) within GitHub's jobs, before any record
    gh_fanout.check_run(expand(loaded, run_options.params).steps)
    run_options.role = JobRole("plan", job=job_info(os.environ))
    manifest = execution.execute(
        place.repo, loaded, run_options, reporter=make_reporter(), on_executor=runs.started
    )
    runs.finished()
    return Planned(manifest, *decisions(manifest))


def decisions(manifest: RunManifest) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Each main step's decision (instances under their group), and each group's instances
    still to run: those the plan could not settle (not cached, not certainly skipped)."""
    steps: dict[str, str] = {}
    fanned: dict[str, list[str]] = {}
    records = manifest.steps
    for name, record in records.items():
        if record.is_finally or record.instance_of is not None:
            continue
        if record.instances:
            todo = [
                i for i in record.instances if i in records and records[i].status not in TERMINAL
            ]
            fanned[name] = todo
            steps[name] = RUN if todo else record.status.value
        else:
            steps[name] = record.status.value if record.status in TERMINAL else RUN
    return steps, fanned


def _options(place: Place, loaded: LoadedPipeline, run: PlannedRun) -> RunOptions | None:
    follower = DriftFollower(place.repo, place.config, push=place.push, log=place.log)
    return trigger._options_for(place, run, loaded, follower)


def _claim_slot(place: Place, loaded: LoadedPipeline, now: datetime) -> RunOptions | None:
    """The oldest due cron slot of `loaded`, claimed (exactly once across runners)."""
    ticker = Ticker(place.repo, place.config, place.push, place.log)
    store = ticker.open()
    try:
        if store.pushes:
            store.fetch()
        for item in due(store, [loaded], now, parse_window(TICK_WINDOW), place.log):
            run_id = new_run_id(datetime.now(UTC))  # the claim names the run that holds it
            if ticker._claim(store, item, now, run_id):
                when = slot_iso(item.slot)
                cron = Trigger(kind="cron", event=item.schedule, scheduled_for=when)
                params = dict(loaded.pipeline.params)
                claimed = options(place, loaded, params=params, trigger=cron)
                claimed.run_id = run_id
                return claimed
    finally:
        store.close()
    place.log(f"sluice: {loaded.name}: no cron slot due at {now.isoformat()}: nothing to run")
    return None


# -- step -------------------------------------------------------------------------------


def step(
    place: Place,
    run_id: str,
    name: str,
    runs: OneAtATime,
    *,
    quiet: bool = False,
    approver: Callable[[str], str | None] | None = None,
) -> RunManifest:
    """Run step `name` of planned run `run_id` here, recording only that step."""
    recorded = _read(place, run_id)
    record = recorded.steps.get(name)
    if record is None:
        raise UsageError(f"run {run_id} has no step {name!r}; {_listed(recorded, name)}")
    if record.instances:
        raise UsageError(
            f"{name!r} is a fan-out of {len(record.instances)} instances, and a step job runs "
            f"one of them: pass an instance's name, e.g. {record.instances[0]!r} "
            f"(`sluice show {run_id}` lists them)"
        )
    if record.is_finally:
        raise UsageError(f"{name!r} is a finally step: `sluice finish {run_id}` runs it")
    if recorded.status is not RunStatus.running or record.status in TERMINAL:
        place.log(
            f"sluice: step {name} of run {run_id} is already {record.status.value} "
            f"(run {recorded.status.value}): nothing to do; `sluice retry {run_id}` runs it again"
        )
        return recorded
    loaded = _current(place, recorded)
    resolved = _resolved(expand(loaded, recorded.params).steps, name, run_id)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        _left_by_matrix_jobs(recorded, resolved)
    refuse_without_outputs(place, recorded, "run the step of", _fed(recorded, resolved.needs))
    if decide_approval(resolved, recorded.params).approval and resolved.environment:
        _approved_in_environment(recorded, name, resolved.environment, approver)
    run_options = options(place, loaded, params=dict(recorded.params), trigger=recorded.trigger)
    run_options.resume = recorded
    run_options.role = JobRole("step", step=name, job=job_info(os.environ))
    manifest = execution.execute(
        place.repo,
        loaded,
        run_options,
        reporter=make_reporter(quiet=quiet),
        on_executor=runs.started,
    )
    runs.finished()
    return manifest


def _listed(manifest: RunManifest, name: str) -> str:
    """The steps of a run, for a name it does not have (an instance: its group's)."""
    group = manifest.steps.get(name.split("[", 1)[0])
    if group is not None and group.instances:
        shown = ", ".join(group.instances[:10])
        more = f" and {len(group.instances) - 10} more" if len(group.instances) > 10 else ""
        return f"instances of {name.split('[', 1)[0]}: {shown}{more}"
    plain = [n for n, r in manifest.steps.items() if r.instance_of is None]
    return f"steps: {', '.join(plain)}"


def _resolved(steps: tuple[ResolvedStep, ...], name: str, run_id: str) -> ResolvedStep:
    found = next((s for s in steps if s.name == name), None)
    if found is None:  # the file changed since the plan: its sweep no longer has it
        raise UsageError(
            f"step {name!r} of run {run_id} is no longer in the pipeline file (its fan-out "
            "changed since the run was planned): plan a new run"
        )
    return found


def _left_by_matrix_jobs(manifest: RunManifest, step: ResolvedStep) -> None:
    """GitHub starts a job once the jobs it needs have ended: an instance of a fan-out this
    step needs that has no result on the branch was left by its matrix job (a lost runner).
    It fails here, in memory (`finish` records it so), and the group settles with it."""
    for need in step.needs:
        for name in manifest.steps[need].instances:
            record = manifest.steps[name]
            if record.status not in TERMINAL:
                record.status = StepStatus.failed
                record.reason = (
                    f"its matrix job ({gh_fanout.job_id(need)}) ended; this instance recorded "
                    "no result"
                )


def _fed(manifest: RunManifest, needs: Collection[str]) -> list[str]:
    """The steps whose outputs `needs` give: each that succeeded (or was cached), and each
    instance of a group among them that did (a group settles in the part that needs it)."""
    records = manifest.steps
    fed = [d for d in needs if records[d].status in DONE_OK]
    for need in needs:
        fed += [i for i in records[need].instances if records[i].status in DONE_OK]
    return fed


def _approved_in_environment(
    manifest: RunManifest,
    name: str,
    environment: str,
    approver: Callable[[str], str | None] | None,
) -> None:
    """Record the approval GitHub gave: the job started, so the environment's reviewers
    (if it has any: docs/scaling.md) approved it. Who, when the API says."""
    if any(a.get("step") == name for a in manifest.approvals):
        return
    by = approver(environment) if approver is not None else None
    entry = {
        "step": name,
        "decision": "approve",
        "by": by or f"a reviewer of GitHub environment {environment}",
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": environment,
    }
    ci_run = github_ci.run_url(github_ci.ci_context(os.environ))
    if ci_run:
        entry["ci_run"] = ci_run
    manifest.approvals.append(entry)


def github_approver(env: Mapping[str, str]) -> Callable[[str], str | None]:
    """Who approved an environment of this workflow run, asked of GitHub's REST API (None
    when it cannot say: no token, no permission, or no such review)."""

    def approver(environment: str) -> str | None:
        token, repository = env.get("GITHUB_TOKEN", ""), env.get("GITHUB_REPOSITORY", "")
        run = env.get("GITHUB_RUN_ID", "")
        if not (token and repository and run.isdigit()):
            return None
        api = env.get("GITHUB_API_URL") or github_api.DEFAULT_API
        try:
            return github_api.environment_approver(
                repository, int(run), environment, token=token, api_url=api
            )
        except (github_api.DispatchFailed, UsageError):
            return None

    return approver


# -- finish -----------------------------------------------------------------------------


def job_results(text: str | None) -> dict[str, str]:
    """Step -> its job's result, from the finish job's `toJSON(needs)` (untrusted text).

    >>> job_results('{"plan": {"result": "success"}, "step-train": {"result": "failure"}}')
    {'train': 'failure'}
    """
    if not text or not text.strip():
        return {}
    try:
        needs = json.loads(text)
    except ValueError:
        raise UsageError("--jobs is not JSON: give the finish job's ${{ toJSON(needs) }}") from None
    if not isinstance(needs, dict):
        raise UsageError("--jobs must be a JSON object: the finish job's ${{ toJSON(needs) }}")
    results = {}
    for job, value in needs.items():
        result = value.get("result") if isinstance(value, dict) else None
        if isinstance(job, str) and job.startswith("step-") and isinstance(result, str):
            results[job.removeprefix("step-")] = result[:20]
    return results


def _cancelled(manifest: RunManifest, results: Mapping[str, str]) -> bool:
    """Whether the workflow was cancelled: a job of it was. Not a fan-out's matrix job
    whose instances GitHub's fail-fast cancelled after one failed (the sweep failed)."""
    for step, result in results.items():
        if result != "cancelled":
            continue
        record = manifest.steps.get(step)
        instances = record.instances if record is not None else []
        if any(manifest.steps[i].status is StepStatus.failed for i in instances):
            continue
        return True
    return False


def finish(
    place: Place,
    run_id: str,
    results: Mapping[str, str],
    runs: OneAtATime,
    *,
    quiet: bool = False,
) -> list[RunManifest]:
    """Run the `finally` steps of run `run_id` and settle it (then what its drift bindings
    start); a workflow that was cancelled ends the run `cancelled`."""
    recorded = _read(place, run_id)
    if recorded.status is not RunStatus.running:
        place.log(f"sluice: run {run_id} is already {recorded.status.value}: nothing to finish")
        return [recorded]
    cancelled = _cancelled(recorded, results)
    loaded = _current(place, recorded)
    finals = [n for n, r in recorded.steps.items() if r.is_finally and r.status not in TERMINAL]
    needs = {d for n in finals for d in recorded.steps[n].needs}
    done = sorted(_fed(recorded, needs))
    if not cancelled:
        refuse_without_outputs(place, recorded, "finish", done)
    run_options = options(place, loaded, params=dict(recorded.params), trigger=recorded.trigger)
    run_options.resume = recorded
    run_options.role = JobRole(
        "finish", job=job_info(os.environ), results=dict(results), cancelled=cancelled
    )

    def started(executor: Executor) -> None:
        runs.started(executor)
        if cancelled:
            executor.cancel()

    manifests = launch(place, loaded, run_options, on_executor=started, quiet=quiet)
    runs.finished()
    return manifests
