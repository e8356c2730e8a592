"""`sluice trigger`: run what a GitHub event (push, dispatch, schedule) calls for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from engine.cli import tick
from engine.cli.common import (
    CONTEXT,
    EXIT_ENGINE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    State,
    echo_json,
    exit_with,
    install_signal_handlers,
    problems_exit,
    push_option,
    runs_exit_code,
    say,
)
from engine.cli.run import quiet_option
from engine.errors import PipelineInvalid

if TYPE_CHECKING:
    from engine.core.manifest import RunManifest
    from engine.core.triggers.github import RunTick


@click.command("trigger", context_settings=CONTEXT)
@click.option("--event-name", metavar="NAME", help="The event (default: $GITHUB_EVENT_NAME).")
@click.option(
    "--event-path", metavar="FILE", help="Its JSON payload (default: $GITHUB_EVENT_PATH)."
)
@push_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of manifests on stdout.")
@quiet_option
@click.pass_context
def command(
    ctx: click.Context,
    event_name: str | None,
    event_path: str | None,
    push: bool | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Run the pipelines a GitHub event calls for, one after another.

    \b
    push                  validate every pipeline (exit 2 on a problem, nothing run),
                          then run those with a push trigger whose own file or
                          `paths` changed between the event's before and after
    pull_request          opened/synchronize/reopened: preview runs of the pipelines whose file
                          or push paths changed between base and head; one sticky comment each
    workflow_dispatch     inputs: pipeline (name or file), params (a JSON object)
    repository_dispatch   sluice-run {pipeline, params}; sluice-drift {monitor, metrics};
                          any other type runs pipelines with `webhook: {event: TYPE}`
    schedule              as `sluice tick`

    \b
    In GitHub Actions it also writes the outputs run-ids and status to
    $GITHUB_OUTPUT and a job summary to $GITHUB_STEP_SUMMARY.
    Exits 0 when every run succeeded or waits for approval, and when there is
    nothing to run; 1 when a run failed; 2 on invalid input; 3 when the engine could
    not run or push a run's record; 130 when interrupted.

    \b
    Examples:
      sluice trigger                       (in a workflow: reads the job's event)
      sluice trigger --event-name push --event-path event.json --json
    """
    from engine.app import trigger  # lazy: `sluice --help` does not load pydantic
    from engine.app.runs import OneAtATime, Place, outcome, report_errors  # lazy: as above
    from engine.core.triggers.github import RunTick  # lazy: as above

    state: State = ctx.obj
    event = trigger.read_event(event_name, event_path)
    place = Place(state.repo, state.config, push, say, quiet)
    try:
        pipelines = trigger.load(place, strict=event.name in ("push", "pull_request"))
    except PipelineInvalid as exc:
        trigger.summarise_problems(exc.problems)
        problems_exit(exc.problems, "; nothing was run")
    planned = trigger.planned_runs(place, event, pipelines)
    if isinstance(planned, RunTick):
        _tick(ctx, planned, as_json=as_json, push=push, quiet=quiet)
        return
    if not planned:
        say(f"sluice: the {event.name} event calls for no pipeline: nothing to run")
    manifests: list[RunManifest] = []
    runs = OneAtATime()
    if planned:
        install_signal_handlers(runs.cancel)
    finished = False
    try:
        trigger.run_all(place, pipelines, planned, manifests, runs)
        finished = True
    finally:
        # Also after an engine error, so later workflow steps see what did run.
        status = trigger.overall(manifests, runs.interrupted.is_set()) if finished else "failed"
        trigger.publish(place, event.name, manifests, pipelines, status)
    if as_json:
        echo_json([m.to_dict() for m in manifests])
    report_errors(manifests, say, summary=False)  # the job summary shows their errors
    if status == "cancelled":
        exit_with(EXIT_INTERRUPTED)
    code = runs_exit_code(outcome(m) for m in manifests)
    if status == "failed" or code == EXIT_ENGINE:  # a record not pushed is never green
        exit_with(max(EXIT_FAILED, code))


def _tick(
    ctx: click.Context, event: RunTick, *, as_json: bool, push: bool | None, quiet: bool
) -> None:
    """Hand a `schedule` event to `sluice tick`: the cron slot, not the event, names the run."""
    say(f"sluice: schedule event ({event.schedule or 'no cron line'}): as `sluice tick`")
    # Pass only what the tick command declares, so its own defaults (now, window) apply.
    declared = {param.name for param in tick.command.params}
    given: dict[str, Any] = {"as_json": as_json, "json": as_json, "push": push, "quiet": quiet}
    ctx.invoke(tick.command, **{k: v for k, v in given.items() if k in declared})
