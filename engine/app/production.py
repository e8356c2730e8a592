"""Promote a run to production, or roll production back, on the results branch."""

from __future__ import annotations

import contextlib
import getpass
import os
from collections.abc import Iterator
from pathlib import Path

from engine.adapters.pipeline_files import find_pipeline
from engine.app import compose
from engine.core.config import RepoConfig
from engine.core.manifest import RunManifest, StepStatus
from engine.core.preview import is_preview_run
from engine.core.production import Action, Production
from engine.errors import NotFound, UsageError
from engine.local import gitcli
from engine.ports import ResultsBranch
from engine.run.records import History

Change = tuple[str, Production | None, Production | None]  # pipeline, before, after


@contextlib.contextmanager
def _writing(repo: Path, config: RepoConfig, push: bool | None) -> Iterator[ResultsBranch]:
    """The results branch to write, up to date with the remote when it is pushed to."""
    store = compose.results_branch(repo, config, push)
    if store is None:
        raise UsageError(f"{repo} is not a git repository: there is no results branch")
    with store:
        store.catch_up()  # offline: the claim on the entry catches a stale view
        yield store


def promote(
    repo: Path, config: RepoConfig, run_id: str, by: str | None, push: bool | None
) -> Change:
    """Make `run_id` the production run of its pipeline (nothing recorded when it already is)."""
    with _writing(repo, config, push) as store:
        history = History(store)
        manifest = store.manifest(run_id)
        if manifest is None:
            raise NotFound(
                f"no run {run_id!r} on the results branch",
                hint="`sluice runs` lists runs (`--fetch` gets the remote's first)",
            )
        pipeline, step = _pipeline_and_step(repo, config, history, manifest.pipeline)
        check_promotable(manifest, step)

        def decide(current: Production | None) -> tuple[str, str, Action] | None:
            if current is not None and current.run_id == run_id:
                return None
            return run_id, step, "promote"

        before, after = history.change_production(pipeline, step, decide, by=by or who(repo))
    return pipeline, before, after


def rollback(
    repo: Path,
    config: RepoConfig,
    pipeline: str,
    to: str | None,
    by: str | None,
    push: bool | None,
) -> Change:
    """Re-point production to the run before the current one (or to `to`)."""
    with _writing(repo, config, push) as store:
        history = History(store)
        name, step = _pipeline_and_step(repo, config, history, pipeline)
        if to is not None:
            target = store.manifest(to)
            if target is None:
                raise NotFound(
                    f"no run {to!r} on the results branch",
                    hint=f"`sluice runs --pipeline {name}` lists its runs",
                )
            if target.pipeline != name:
                raise UsageError(f"run {to} is a run of {target.pipeline}, not of {name}")
            check_promotable(target, step)

        def decide(current: Production | None) -> tuple[str, str, Action] | None:
            if to is not None:
                return (
                    None if current is not None and current.run_id == to else (to, step, "rollback")
                )
            return _earlier(name, step, current), step, "rollback"

        before, after = history.change_production(name, step, decide, by=by or who(repo))
    return name, before, after


def _earlier(name: str, step: str, current: Production | None) -> str:
    """The run production was before `current`; UsageError when there is none."""
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
    return earlier


def _pipeline_and_step(
    repo: Path, config: RepoConfig, history: History, ref: str
) -> tuple[str, str]:
    """The pipeline's name and baseline step: from its file, else from its results.

    Without the file (deleted, renamed, or a clone of only the results branch) the step
    is the one production was last recorded with, or the one the succeeded index names.
    """
    folder = repo / config.pipelines
    loaded = find_pipeline(repo, folder, ref, must_exist=False)
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
            f"no pipeline {ref!r} in {folder}, and the results branch records "
            "no baseline step for it",
            hint="run this where the pipeline file is checked out",
        )
    return ref, step


def check_promotable(manifest: RunManifest, step: str) -> None:
    """Refuse a preview run, and a run whose baseline step did not succeed in it, saying why."""
    run, pipeline = manifest.run_id, manifest.pipeline
    record = manifest.steps.get(step)
    hint = f"`sluice runs --pipeline {pipeline}` lists its runs; `sluice show RUN_ID` shows one"
    if is_preview_run(manifest):
        number = manifest.trigger.payload.get("number")
        which = f" of pull request #{number}" if isinstance(number, int) else ""
        raise UsageError(
            f"run {run} is a preview{which}: a preview never becomes production",
            hint="merge the pull request; a run on the base branch can then be promoted",
        )
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


def who(repo: Path) -> str:
    """$GITHUB_ACTOR, else git's user.name, else the OS user."""
    actor = os.environ.get("GITHUB_ACTOR", "").strip()
    if actor:
        return actor
    name = (gitcli.output(repo, "config", "user.name") or "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"
