"""`sluice promote` and `sluice rollback`: re-point a pipeline's production run."""

from __future__ import annotations

import contextlib
import getpass
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from engine.adapters.git_results import ResultsStore
    from engine.cli.main import State
    from engine.core.manifest import RunManifest
    from engine.run.records import Action, History, Production

# engine.cli.main's CONTEXT, repeated: importing engine modules at the top would slow `sluice --help`.
_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_BY = "Who does it (default: $GITHUB_ACTOR, else git's user.name, else the OS user)."
_PUSH = "Push results to the remote (default: when one exists)."
_JSON = "Print {pipeline, changed, previous, production, entry} as JSON on stdout."


@click.command("promote", context_settings=_CONTEXT)
@click.argument("run_id")
@click.option("--by", metavar="NAME", help=_BY)
@click.option("--push/--no-push", default=None, help=_PUSH)
@click.option("--json", "as_json", is_flag=True, help=_JSON)
@click.pass_obj
def promote(state: State, run_id: str, by: str | None, push: bool | None, as_json: bool) -> None:
    """Make RUN_ID the production run of its pipeline: the baseline of its next runs.

    \b
    The run's baseline step (`baseline: {step: ...}` in its pipeline) must have
    succeeded in it. Recorded on the results branch (who, when, the run it replaces);
    promoting the run that already is production records nothing.
    Exits 0 once recorded, 2 when the run cannot be promoted (the message says why).

    \b
    Examples:
      sluice promote 20261124T100000Z-a1b2c3
      sluice promote 20261124T100000Z-a1b2c3 --by alice --json
    """
    from engine.errors import NotFound

    with _store(state, push) as store:
        history = _history(store)
        manifest = store.manifest(run_id)
        if manifest is None:
            raise NotFound(
                f"no run {run_id!r} on the results branch",
                hint="`sluice runs` lists runs (`--fetch` gets the remote's first)",
            )
        pipeline, step = _pipeline_and_step(state, history, manifest.pipeline)
        _check_promotable(manifest, step)

        def decide(current: Production | None) -> tuple[str, str, Action] | None:
            if current is not None and current.run_id == run_id:
                return None
            return run_id, step, "promote"

        before, after = history.change_production(pipeline, step, decide, by=by or _who(state))
    _report(pipeline, before, after, as_json)


@click.command("rollback", context_settings=_CONTEXT)
@click.argument("pipeline")
@click.option(
    "--to", "to", metavar="RUN_ID", help="Re-point to this run (checked as `promote` checks)."
)
@click.option("--by", metavar="NAME", help=_BY)
@click.option("--push/--no-push", default=None, help=_PUSH)
@click.option("--json", "as_json", is_flag=True, help=_JSON)
@click.pass_obj
def rollback(
    state: State, pipeline: str, to: str | None, by: str | None, push: bool | None, as_json: bool
) -> None:
    """Re-point PIPELINE's production to the run that was production before the current one.

    \b
    Each rollback goes one step further back: runs rolled back from are left out,
    so two rollbacks in a row undo the last two deploys or promotions. With --to,
    production goes to that run instead. Recorded on the results branch.
    Exits 0 once recorded, 2 when there is nothing earlier (or --to cannot be used).

    \b
    Examples:
      sluice rollback churn-retrain
      sluice rollback churn-retrain --to 20261124T100000Z-a1b2c3 --by alice
    """
    from engine.errors import NotFound, UsageError

    with _store(state, push) as store:
        history = _history(store)
        name, step = _pipeline_and_step(state, history, pipeline)
        if to is not None:
            target = store.manifest(to)
            if target is None:
                raise NotFound(
                    f"no run {to!r} on the results branch",
                    hint=f"`sluice runs --pipeline {name}` lists its runs",
                )
            if target.pipeline != name:
                raise UsageError(f"run {to} is a run of {target.pipeline}, not of {name}")
            _check_promotable(target, step)

        def decide(current: Production | None) -> tuple[str, str, Action] | None:
            if to is not None:
                return (
                    None if current is not None and current.run_id == to else (to, step, "rollback")
                )
            if current is None:
                raise UsageError(
                    f"{name} has no production run yet: there is nothing to roll back",
                    hint=f"a run whose {step} step succeeds becomes production",
                )
            earlier = current.rollback_target()
            if earlier is None:
                raise UsageError(
                    f"nothing earlier to roll back to: {current.run_id} is the first "
                    f"production run of {name} on record",
                    hint=f"`sluice promote RUN_ID` makes any run whose {step} succeeded "
                    f"production; `sluice runs --pipeline {name}` lists them",
                )
            return earlier, step, "rollback"

        before, after = history.change_production(name, step, decide, by=by or _who(state))
    _report(name, before, after, as_json)


@contextlib.contextmanager
def _store(state: State, push: bool | None) -> Iterator[ResultsStore]:
    """The results branch to write, up to date with the remote when it is pushed to."""
    from engine.adapters.git_results import store_for
    from engine.errors import UsageError

    store = store_for(state.repo, state.config, push)
    if store is None:
        raise UsageError(f"{state.repo} is not a git repository: there is no results branch")
    with store:
        store.catch_up()  # offline: the claim on the entry catches a stale view
        yield store


def _history(store: ResultsStore) -> History:
    from engine.run.records import History

    return History(store)


def _pipeline_and_step(state: State, history: History, ref: str) -> tuple[str, str]:
    """The pipeline's name and baseline step: from its file, else from its results.

    Without the file (deleted, renamed, or a clone of only the results branch) the step
    is the one production was last recorded with, or the one the succeeded index names.
    """
    from engine.adapters.pipeline_files import find_pipeline
    from engine.errors import NotFound, UsageError

    loaded = find_pipeline(state.repo, state.pipelines_dir, ref, must_exist=False)
    if loaded is not None:
        if loaded.pipeline.baseline is None:
            raise UsageError(
                f"pipeline {loaded.name} ({loaded.file}) has no `baseline:`: "
                "none of its runs is production, so there is nothing to re-point",
                hint="add `baseline: {step: deploy}` (the step whose success makes a run "
                "production) to the pipeline file",
            )
        return loaded.name, loaded.pipeline.baseline.step
    step = history.baseline_step(ref)
    if step is None:
        raise NotFound(
            f"no pipeline {ref!r} in {state.pipelines_dir}, and the results branch records "
            "no baseline step for it",
            hint="run this where the pipeline file is checked out",
        )
    return ref, step


def _check_promotable(manifest: RunManifest, step: str) -> None:
    """Refuse a run whose baseline step did not succeed in it, saying why."""
    from engine.core.manifest import StepStatus
    from engine.errors import UsageError

    run, pipeline = manifest.run_id, manifest.pipeline
    record = manifest.steps.get(step)
    hint = f"`sluice runs --pipeline {pipeline}` lists its runs; `sluice show RUN_ID` shows one"
    if record is None:
        raise UsageError(
            f"run {run} has no step {step!r} (the baseline step of {pipeline})", hint=hint
        )
    if record.status is StepStatus.succeeded:
        return
    how = {
        StepStatus.skipped: "was skipped",
        StepStatus.failed: "failed",
        StepStatus.upstream_failed: "never ran (a step it needs failed)",
        StepStatus.cancelled: "was cancelled",
        StepStatus.waiting_approval: "is waiting for approval",
        StepStatus.cached: "was reused from another run, not run in this one",
    }.get(record.status, f"has not finished ({record.status.value})")
    why = f" ({record.reason})" if record.reason else ""
    raise UsageError(
        f"run {run}'s {step} step {how}{why}: promote a run whose {step} succeeded", hint=hint
    )


def _who(state: State) -> str:
    """$GITHUB_ACTOR, else git's user.name, else the OS user."""
    actor = os.environ.get("GITHUB_ACTOR", "").strip()
    if actor:
        return actor
    with contextlib.suppress(OSError):
        found = subprocess.run(
            ["git", "config", "user.name"], cwd=Path(state.repo), capture_output=True, text=True
        )
        if found.stdout.strip():
            return found.stdout.strip()
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _report(
    pipeline: str, before: Production | None, after: Production | None, as_json: bool
) -> None:
    from engine.cli.main import _echo_json

    changed = after is not before
    old = before.run_id if before else None
    new = after.run_id if after else None
    if as_json:
        entry = after.entry().model_dump() if changed and after else None
        _echo_json(
            {
                "pipeline": pipeline,
                "changed": changed,
                "previous": old,
                "production": new,
                "entry": entry,
            }
        )
        return
    if not changed or after is None:
        click.echo(f"{pipeline}: production stays {new} (already production; nothing recorded)")
        return
    click.echo(f"{pipeline}: production {old or '(none)'} -> {new}")
    click.echo(f"  {after.action} #{after.seq} by {after.by} at {after.at} (step {after.step})")
