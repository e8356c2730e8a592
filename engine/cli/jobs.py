"""`sluice plan`, `step`, `finish`: one run's parts, each in its own GitHub job (jobs mode)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from engine.cli.common import (
    CONTEXT,
    EXIT_ENGINE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    State,
    echo_json,
    exit_with,
    install_signal_handlers,
    push_option,
    runs_exit_code,
    say,
)

if TYPE_CHECKING:
    from engine.app.runs import OneAtATime, Place
    from engine.core.manifest import RunManifest

_json = click.option("--json", "as_json", is_flag=True, help="Print the run's manifest as JSON.")
_quiet = click.option("-q", "--quiet", is_flag=True, help="Print no step progress.")


def _place(state: State, push: bool | None) -> tuple[Place, OneAtATime]:
    from engine.app.runs import OneAtATime, Place  # lazy: `sluice --help` does not load pydantic

    runs = OneAtATime()
    install_signal_handlers(runs.cancel)
    return Place(state.repo, state.config, push, say), runs


def _outputs(values: dict[str, str]) -> None:
    """Step outputs for the job (GITHUB_OUTPUT), when the runner provides the file."""
    from engine.adapters import github_env  # lazy: as above

    path = os.environ.get("GITHUB_OUTPUT")
    if path:
        github_env.write_outputs(Path(path), values)


def _unrecorded(manifest: RunManifest) -> None:
    """Exit 3 when the part's record did not reach the results branch: never green."""
    if manifest.engine_error:
        say(f"sluice: error: run {manifest.run_id}: {manifest.error or 'the engine failed'}")
        exit_with(EXIT_ENGINE)


@click.command("plan", context_settings=CONTEXT)
@click.argument("pipeline")
@click.option("--event-name", metavar="NAME", help="The event (default: $GITHUB_EVENT_NAME).")
@click.option("--event-path", metavar="FILE", help="Its payload (default: $GITHUB_EVENT_PATH).")
@click.option(
    "--now",
    "now_text",
    metavar="ISO",
    help="schedule events: the time to find the due cron slot at, ISO 8601 with a zone "
    "(default: now).",
)
@push_option
@_json
@click.pass_obj
def plan(
    state: State,
    pipeline: str,
    event_name: str | None,
    event_path: str | None,
    now_text: str | None,
    push: bool | None,
    as_json: bool,
) -> None:
    """Make the run a GitHub event calls for of PIPELINE, without running a step.

    \b
    The first job of a jobs-mode workflow (docs/scaling.md). It reads the event as
    `sluice trigger` does (a schedule claims the oldest due cron slot, exactly once),
    records the run with every step pending, and settles what needs no container:
    cache hits, and steps certainly skipped. Outputs (GITHUB_OUTPUT): run-id ('' when
    the event calls for nothing); steps, a JSON object of each step's decision:
    "run" (its job starts) or the status it already has (cached, skipped, ...); and
    fanout, a JSON object of each fan-out step's instances still to run (its matrix).
    Exits 0, also when there is nothing to run; 2 on invalid input; 3 when the
    engine could not record the run.

    \b
    Examples:
      sluice plan churn-retrain                  (in a workflow: reads the job's event)
      sluice plan churn-retrain --event-name workflow_dispatch --event-path event.json
    """
    from engine.app import jobs, tick, trigger  # lazy: `sluice --help` does not load pydantic

    place, runs = _place(state, push)
    event = trigger.read_event(event_name, event_path)
    now = tick.parse_now(now_text) if now_text else None
    planned = jobs.plan(place, event, pipeline, runs, now=now)
    manifest = planned.manifest
    _outputs(
        {
            "run-id": manifest.run_id if manifest else "",
            "steps": json.dumps(planned.steps, separators=(",", ":")),
            "fanout": json.dumps(planned.fanout, separators=(",", ":")),
        }
    )
    if manifest is None:
        say(f"sluice: the {event.name} event calls for no run of {pipeline}")
        if as_json:
            echo_json(None)
        return
    for name, decision in planned.steps.items():
        todo = planned.fanout.get(name)
        if decision == jobs.RUN and todo is not None:
            say(f"sluice: {name}: its matrix job runs {len(todo)} instance(s): {', '.join(todo)}")
        else:
            say(f"sluice: {name}: {'its job runs it' if decision == jobs.RUN else decision}")
    if as_json:
        echo_json(manifest.to_dict())
    _unrecorded(manifest)
    say(f"sluice: planned run {manifest.run_id} of {manifest.pipeline}")


@click.command("step", context_settings=CONTEXT)
@click.argument("run_id")
@click.argument("step_name", metavar="STEP")
@push_option
@_json
@_quiet
@click.pass_obj
def step(
    state: State, run_id: str, step_name: str, push: bool | None, as_json: bool, quiet: bool
) -> None:
    """Run one STEP of a planned run here, and record it.

    \b
    A step job of a jobs-mode workflow (docs/scaling.md), usable by hand on any machine
    that reaches the results branch and the artifact store. It reads the run's record,
    settles the step without a container when it can (a need that failed: the step is
    upstream_failed; a false `when`: skipped), else fetches its inputs, runs it with
    its retries, timeout, secrets and checkpoints, uploads its outputs, and records the
    step on the results branch (jobs running at once never lose each other's records).
    A step with `environment:` and an approval was approved by the job's GitHub
    environment. Of a fan-out step, STEP is one instance (its matrix job runs each);
    the step as a whole settles in the job that needs it, or in `finish`. Output:
    status. Exits 0 unless the step failed (1); 2 on invalid input (a fan-out's name
    instead of an instance's); 3 when the engine could not run it or record it; 130
    when interrupted.

    \b
    Examples:
      sluice step 20261124T100000Z-a1b2c3 train
      sluice step 20261124T100000Z-a1b2c3 'sweep[lr=0.1,depth=4]'
    """
    from engine.app import jobs  # lazy: `sluice --help` does not load pydantic

    place, runs = _place(state, push)
    approver = jobs.github_approver(os.environ)
    manifest = jobs.step(place, run_id, step_name, runs, quiet=quiet, approver=approver)
    status = manifest.steps[step_name].status.value
    _outputs({"status": status, "run-id": run_id})
    if as_json:
        echo_json(manifest.to_dict())
    if runs.interrupted.is_set() or status == "cancelled":
        exit_with(EXIT_INTERRUPTED)
    _unrecorded(manifest)
    reason = manifest.steps[step_name].reason
    say(f"sluice: {step_name}: {status}" + (f" ({reason})" if reason else ""))
    if status in ("failed", "upstream_failed"):
        exit_with(EXIT_FAILED if status == "failed" else EXIT_OK)


@click.command("finish", context_settings=CONTEXT)
@click.argument("run_id")
@click.option(
    "--jobs",
    "jobs_json",
    metavar="JSON",
    help="The finish job's ${{ toJSON(needs) }}: each step job's result (a cancelled one "
    "ends the run cancelled; one that left no record fails its step).",
)
@push_option
@_json
@_quiet
@click.pass_obj
def finish(
    state: State,
    run_id: str,
    jobs_json: str | None,
    push: bool | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Run the finally steps of a planned run, and settle it.

    \b
    The last job of a jobs-mode workflow (docs/scaling.md; it runs even when a step
    failed or the workflow was cancelled). It closes every step whose job left no
    record, runs the `finally` steps, sets the run's status (cancelled when a job
    was), folds the step jobs' records into the manifest, and writes the outputs
    run-ids and status and a job summary. Exits 0 when the run succeeded or waits
    for approval (`sluice approve` continues it on one runner), 1 when it failed,
    2 on invalid input, 3 when the engine could not finish or record it.

    \b
    Example:
      sluice finish 20261124T100000Z-a1b2c3 --jobs "$NEEDS_JSON"
    """
    from engine.app import jobs, trigger  # lazy: `sluice --help` does not load pydantic
    from engine.app.runs import outcome, report_errors  # lazy: as above

    place, runs = _place(state, push)
    results = jobs.job_results(jobs_json)
    manifests = jobs.finish(place, run_id, results, runs, quiet=quiet)
    status = trigger.overall(manifests, runs.interrupted.is_set())
    loaded = place.pipeline(manifests[0].pipeline)
    trigger.publish(place, "finish", manifests, [loaded], status)
    if as_json:
        echo_json(manifests[0].to_dict())
    report_errors(manifests, say, summary=False)
    code = runs_exit_code(outcome(m) for m in manifests)
    if code == EXIT_INTERRUPTED:  # the workflow was cancelled: recorded so; not a failure here
        say(f"sluice: run {run_id} was cancelled")
        code = EXIT_OK if not runs.interrupted.is_set() else EXIT_INTERRUPTED
    if code != EXIT_OK:
        exit_with(code)
