"""`sluice trigger`: run what a GitHub event (push, dispatch, schedule) calls for."""

from __future__ import annotations

import collections
import contextlib
import importlib
import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from engine.app.drift_ledger import Signal
    from engine.app.launch import OneAtATime
    from engine.cli.main import State
    from engine.core.manifest import RunManifest, Trigger
    from engine.core.parse import LoadedPipeline
    from engine.core.triggers.github import PlannedRun, RunTick

# engine.cli.main's CONTEXT, repeated: importing engine modules at the top would slow `sluice --help`.
_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_PRECEDENCE = ("cancelled", "failed", "waiting_approval", "succeeded")


@click.command("trigger", context_settings=_CONTEXT)
@click.option("--event-name", metavar="NAME", help="The event (default: $GITHUB_EVENT_NAME).")
@click.option(
    "--event-path", metavar="FILE", help="Its JSON payload (default: $GITHUB_EVENT_PATH)."
)
@click.option(
    "--push/--no-push", default=None, help="Push results to the remote (default: when one exists)."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of manifests on stdout.")
@click.pass_context
def command(
    ctx: click.Context,
    event_name: str | None,
    event_path: str | None,
    push: bool | None,
    as_json: bool,
) -> None:
    """Run the pipelines a GitHub event calls for, one after another.

    \b
    push                  validate every pipeline (exit 2 on a problem, nothing run),
                          then run those with a push trigger whose own file or
                          `paths` changed between the event's before and after
    workflow_dispatch     inputs: pipeline (name or file), params (a JSON object)
    repository_dispatch   sluice-run {pipeline, params}; sluice-drift {monitor, metrics};
                          any other type runs pipelines with `webhook: {event: TYPE}`
    schedule              as `sluice tick`

    \b
    In GitHub Actions it also writes the outputs run-ids and status to
    $GITHUB_OUTPUT and a job summary to $GITHUB_STEP_SUMMARY.
    Exits 0 when every run succeeded or waits for approval, and when there is
    nothing to run; 1 when a run failed; 2 on invalid input; 130 when interrupted.

    \b
    Examples:
      sluice trigger                       (in a workflow: reads the job's event)
      sluice trigger --event-name push --event-path event.json --json
    """
    from engine.adapters import github_env as github
    from engine.cli.main import EXIT_FAILED, EXIT_INTERRUPTED, _echo_json, _exit
    from engine.core.triggers.github import RunTick, is_zero_sha, plan

    state: State = ctx.obj
    env = os.environ
    event = github.read_event(env, name=event_name, path=event_path)
    pipelines = _load(state, strict=event.name == "push")
    changed = None
    if event.name == "push":
        before, after = event.payload.get("before"), event.payload.get("after")
        changed = github.changed_files(state.repo, before, after)
        if changed is None and not is_zero_sha(after) and event.payload.get("deleted") is not True:
            # repr() keeps untrusted payload text on one line: no workflow command can ride in.
            click.echo(
                f"sluice: git cannot diff {before!r}..{after!r} here (a new branch or a shallow "
                "clone): using the files listed in the event's commits",
                err=True,
            )
    planned = plan(event.name, event.payload, pipelines, changed_files=changed)
    if event.name == "repository_dispatch":
        _carry_hops(event.payload, env)
    if isinstance(planned, RunTick):
        _tick(ctx, planned, as_json=as_json, push=push)
        return
    if not planned:
        click.echo(
            f"sluice: the {event.name} event calls for no pipeline: nothing to run", err=True
        )
    manifests: list[RunManifest] = []
    from engine.app.launch import OneAtATime

    runs = OneAtATime()
    finished = False
    try:
        _run_all(state, pipelines, planned, push, manifests, runs)
        finished = True
    finally:
        # Also after an engine error, so later workflow steps see what did run.
        status = _overall(manifests, runs.interrupted.is_set()) if finished else "failed"
        _publish(state, event.name, manifests, pipelines, status)
    if as_json:
        _echo_json([m.to_dict() for m in manifests])
    if status == "cancelled":
        _exit(EXIT_INTERRUPTED)
    if status == "failed":
        _exit(EXIT_FAILED)


def _carry_hops(payload: Mapping[str, Any], env: MutableMapping[str, str]) -> None:
    """Pass a dispatch chain's hop count on, so `sluice dispatch` can stop a loop.

    Set for this process (a drift binding may dispatch from here) and, through GITHUB_ENV,
    for the job's later steps.
    """
    client = payload.get("client_payload")
    hops = client.get("sluice_hops") if isinstance(client, dict) else None
    count = hops if isinstance(hops, int) and not isinstance(hops, bool) and hops >= 0 else 0
    env["SLUICE_DISPATCH_HOPS"] = str(count)
    github_env = env.get("GITHUB_ENV")
    if github_env:
        with open(github_env, "a", encoding="utf-8") as handle:
            handle.write(f"SLUICE_DISPATCH_HOPS={count}\n")


def _load(state: State, *, strict: bool) -> list[LoadedPipeline]:
    """Every pipeline; `strict` (push): any problem stops everything with exit 2.

    Otherwise a broken file should not block a dispatch of a sound one: it is left out,
    with a warning, and so are pipelines sharing a name (a reference would be ambiguous).
    """
    from engine.adapters import github_env as github
    from engine.adapters.pipeline_files import find_pipeline_files, load_many
    from engine.cli.main import EXIT_INVALID, _exit
    from engine.errors import PipelineInvalid, Problem

    files = find_pipeline_files(state.pipelines_dir)
    try:
        return load_many(files, state.repo)
    except PipelineInvalid as exc:
        problems: list[Problem] = exc.problems
    if strict:
        for problem in problems:
            click.echo(str(problem), err=True)
        github.annotate(problems, os.environ, sys.stderr)
        summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary_path:
            github.append_summary(Path(summary_path), github.problems_summary(problems))
        click.echo(
            f"sluice: {len(problems)} problem(s) in {len({p.file for p in problems})} file(s); "
            "nothing was run",
            err=True,
        )
        _exit(EXIT_INVALID)
    loaded: list[LoadedPipeline] = []
    for path in files:
        with contextlib.suppress(PipelineInvalid):  # already among `problems`
            loaded.extend(load_many([path], state.repo))
    names = collections.Counter(p.name for p in loaded)
    for problem in problems:
        click.echo(f"sluice: warning: {problem} (left out)", err=True)
    github.annotate(problems, os.environ, sys.stderr, level="warning")
    return [p for p in loaded if names[p.name] == 1]


def _run_all(
    state: State,
    pipelines: list[LoadedPipeline],
    planned: list[PlannedRun],
    push: bool | None,
    manifests: list[RunManifest],
    runs: OneAtATime,
) -> None:
    """Run each planned run in turn; a signal cancels the current one and starts no more."""
    from engine.adapters import github_env as github
    from engine.adapters.console import make_reporter
    from engine.app.launch import DriftFollower, execute_following, run_options
    from engine.cli.main import _install_signal_handlers
    from engine.core.triggers.drift import bindings

    by_name = {p.name: p for p in pipelines}
    if planned:
        _install_signal_handlers(runs.cancel)

    def say(line: str) -> None:
        click.echo(line, err=True)

    follower = DriftFollower(state.repo, state.config, push=push, log=say)
    for run in planned:
        if runs.interrupted.is_set():
            click.echo(f"sluice: interrupted: {run.pipeline} was not started", err=True)
            continue
        loaded = by_name[run.pipeline]
        if run.trigger.kind == "drift":
            # A drift signal from outside: the binding's cooldown decides, as for a monitor run.
            admitted = follower.admit(
                _dispatched_signal(run.trigger),
                bindings([loaded], _monitor(run.trigger)),
                payload={k: v for k, v in run.trigger.payload.items() if k != "metrics"},
            )
            if not admitted:
                continue
            _, options = admitted[0]
        else:
            options = run_options(
                state.repo,
                state.config,
                loaded,
                params=run.params,
                trigger=run.trigger,
                push=push,
            )
        why = run.trigger.kind
        if run.trigger.event and run.trigger.event != why:
            why += f": {run.trigger.event}"
        title = f"sluice: {loaded.name} ({why})"
        with github.group(title, os.environ, sys.stderr):
            done = execute_following(
                loaded,
                options,
                follower=follower,
                reporter=make_reporter,
                on_executor=runs.started,
            )
        runs.finished()
        manifests.extend(done)
        for manifest in done:
            click.echo(
                f"sluice: {manifest.pipeline}: run {manifest.run_id} {manifest.status.value}",
                err=True,
            )


def _monitor(trigger: Trigger) -> str:
    return str(trigger.payload.get("monitor", ""))


def _dispatched_signal(trigger: Trigger) -> Signal:
    """The `sluice-drift` dispatch a planned drift run came from (its `when` already held)."""
    from engine.app.drift_ledger import Signal

    metrics = trigger.payload.get("metrics")
    monitor_run = trigger.payload.get("monitor_run")
    return Signal(
        monitor=_monitor(trigger),
        source="repository_dispatch",
        monitor_run=monitor_run if isinstance(monitor_run, str) else None,
        metrics=metrics if isinstance(metrics, dict) else None,
        checked=True,
    )


def _overall(manifests: list[RunManifest], interrupted: bool) -> str:
    statuses = {m.status.value for m in manifests}
    for status in _PRECEDENCE:
        if status in statuses:
            return status
    return "cancelled" if interrupted else "skipped"


def _publish(
    state: State,
    event_name: str,
    manifests: list[RunManifest],
    pipelines: list[LoadedPipeline],
    status: str,
) -> None:
    """GITHUB_OUTPUT and GITHUB_STEP_SUMMARY, when the runner provides them."""
    from engine.adapters import github_env as github

    output_path = os.environ.get("GITHUB_OUTPUT")
    if output_path:
        run_ids = " ".join(m.run_id for m in manifests)
        github.write_outputs(Path(output_path), {"run-ids": run_ids, "status": status})
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        markdown = github.summary(
            manifests,
            {p.name: p.dag for p in pipelines},
            _baselines(state, manifests),
            heading=f"Sluice ({event_name})",
            nothing=f"The {event_name} event calls for no pipeline: nothing ran.",
        )
        github.append_summary(Path(summary_path), markdown)


def _baselines(state: State, manifests: list[RunManifest]) -> dict[str, RunManifest]:
    """The baseline runs the manifests compared against, read from the results branch."""
    from engine.adapters.git_results import ResultsStore
    from engine.errors import SluiceError
    from engine.local.workspace import is_git_repo

    wanted = {m.baseline_run for m in manifests if m.baseline_run}
    if not wanted or not is_git_repo(state.repo):
        return {}
    found: dict[str, RunManifest] = {}
    settings = state.config.results
    try:
        with ResultsStore(
            state.repo, branch=settings.branch, remote=settings.remote, push=False
        ) as store:
            for run_id in sorted(wanted):
                manifest = store.manifest(run_id)
                if manifest is not None:
                    found[run_id] = manifest
    except SluiceError as exc:  # a summary without baselines beats no summary
        click.echo(f"sluice: warning: baselines not shown in the summary: {exc}", err=True)
    return found


def _tick(ctx: click.Context, event: RunTick, *, as_json: bool, push: bool | None) -> None:
    """Hand a `schedule` event to `sluice tick`: the cron slot, not the event, names the run."""
    from engine.errors import UsageError

    try:
        module = importlib.import_module("engine.cli.tick")
    except ModuleNotFoundError as exc:
        if exc.name != "engine.cli.tick":
            raise
        raise UsageError(
            "the schedule event runs `sluice tick`, which this engine does not provide yet",
            hint="run `sluice tick` in the scheduled workflow instead of `sluice trigger`",
        ) from None
    tick: click.Command = module.command
    click.echo(
        f"sluice: schedule event ({event.schedule or 'no cron line'}): as `sluice tick`", err=True
    )
    # Pass only what the tick command declares, so its own defaults (now, window) apply.
    declared = {param.name for param in tick.params}
    given: dict[str, Any] = {"as_json": as_json, "json": as_json, "push": push}
    ctx.invoke(tick, **{k: v for k, v in given.items() if k in declared})
