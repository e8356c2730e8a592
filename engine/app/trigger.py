"""Trigger: run what a GitHub event (push, pull request, dispatch, schedule) calls for, one
run after another."""

from __future__ import annotations

import collections
import contextlib
import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from engine.adapters import github_env as github
from engine.adapters.console import make_reporter
from engine.adapters.pipeline_files import find_pipeline_files, load_many
from engine.app import compose, execution
from engine.app.drift_follow import DriftFollower, execute_following
from engine.app.drift_ledger import Signal
from engine.app.runs import OneAtATime, Place
from engine.core.manifest import RunManifest, Trigger, overall_status
from engine.core.parse import LoadedPipeline
from engine.core.preview import PREVIEW_KIND
from engine.core.printable import printable
from engine.core.triggers.drift import bindings
from engine.core.triggers.github import PlannedRun, RunTick, is_zero_sha, plan
from engine.errors import PipelineInvalid, Problem, SluiceError
from engine.local import gitcli
from engine.local.workspace import is_git_repo
from engine.run.executor import RunOptions


def read_event(name: str | None, path: str | None) -> github.Event:
    """The event: the options given, else the job's ($GITHUB_EVENT_NAME, $GITHUB_EVENT_PATH)."""
    return github.read_event(os.environ, name=name, path=path)


def carry_hops(payload: Mapping[str, Any], env: MutableMapping[str, str]) -> None:
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


def load(place: Place, *, strict: bool) -> list[LoadedPipeline]:
    """Every pipeline; `strict` (push): any problem raises PipelineInvalid (nothing runs).

    Otherwise a broken file should not block a dispatch of a sound one: it is left out,
    with a warning, and so are pipelines sharing a name (a reference would be ambiguous).
    """
    files = find_pipeline_files(place.repo / place.config.pipelines)
    try:
        return load_many(files, place.repo)
    except PipelineInvalid as exc:
        if strict:
            raise
        problems: list[Problem] = exc.problems
    loaded: list[LoadedPipeline] = []
    for path in files:
        with contextlib.suppress(PipelineInvalid):  # already among `problems`
            loaded.extend(load_many([path], place.repo))
    names = collections.Counter(p.name for p in loaded)
    for problem in problems:
        place.log(f"sluice: warning: {printable(str(problem))} (left out)")
    github.annotate(problems, os.environ, sys.stderr, level="warning")
    return [p for p in loaded if names[p.name] == 1]


def summarise_problems(problems: list[Problem]) -> None:
    """A push with invalid pipelines: the problems in the job summary."""
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        github.append_summary(Path(summary_path), github.problems_summary(problems))


def planned_runs(
    place: Place, event: github.Event, pipelines: list[LoadedPipeline]
) -> list[PlannedRun] | RunTick:
    """What the event calls for; a push is planned over the files it changed."""
    changed = None
    if event.name == "push":
        before, after = event.payload.get("before"), event.payload.get("after")
        changed = github.changed_files(place.repo, before, after)
        if changed is None and not is_zero_sha(after) and event.payload.get("deleted") is not True:
            # repr() keeps untrusted payload text on one line: no workflow command can ride in.
            place.log(
                f"sluice: git cannot diff {before!r}..{after!r} here (a new branch or a shallow "
                "clone): using the files listed in the event's commits"
            )
    elif event.name == "pull_request":
        changed = pull_request_files(place, event.payload)
    planned = plan(event.name, event.payload, pipelines, changed_files=changed)
    if event.name == "repository_dispatch":
        carry_hops(event.payload, os.environ)
    return planned


def pull_request_files(place: Place, payload: Mapping[str, Any]) -> list[str] | None:
    """The files a pull request changes: from the merge base of its base and head to its
    head (what GitHub's "Files changed" shows); None when git cannot tell."""
    pr = payload.get("pull_request")
    head = pr.get("head") if isinstance(pr, Mapping) else None
    base = pr.get("base") if isinstance(pr, Mapping) else None
    head_sha = head.get("sha") if isinstance(head, Mapping) else None
    base_sha = base.get("sha") if isinstance(base, Mapping) else None
    changed = None
    if isinstance(head_sha, str) and isinstance(base_sha, str) and _is_sha(head_sha, base_sha):
        fork_point = gitcli.output(place.repo, "merge-base", base_sha, head_sha)
        if fork_point:
            changed = github.changed_files(place.repo, fork_point.strip(), head_sha)
        else:
            changed = _shallow_changes(place.repo, base_sha, head_sha)
    if changed is None and payload.get("action") in ("opened", "synchronize", "reopened"):
        place.log(
            f"sluice: git cannot diff the pull request's base {base_sha!r} and head "
            f"{head_sha!r} here (neither is in the clone, nor can be fetched from origin): "
            "previewing every pipeline with a push trigger"
        )
    return changed


def _shallow_changes(repo: Path, base_sha: str, head_sha: str) -> list[str] | None:
    """A shallow clone has no history to find the fork point in. GitHub's checkout of a
    pull_request event is its merge commit (refs/pull/N/merge: parents base tip and head):
    against its first parent it shows exactly the pull request's changes. Otherwise base
    against head (each fetched when missing) also lists what the base changed since, so
    a pipeline may be previewed needlessly, never left out."""
    raw = gitcli.output(repo, "cat-file", "commit", "HEAD") or ""
    headers = raw.split("\n\n", 1)[0].splitlines()
    parents = [line.split()[1] for line in headers if line.startswith("parent ")]
    if len(parents) == 2 and parents[1] == head_sha and _is_sha(parents[0]):
        merge = (gitcli.output(repo, "rev-parse", "HEAD") or "").strip()
        if _is_sha(merge):
            found = github.changed_files(repo, parents[0], merge)
            if found is not None:
                return found
    return github.changed_files(repo, base_sha, head_sha)


def _is_sha(*values: str) -> bool:
    """Hex commit ids only: untrusted payload text is never read as a git option."""
    return all(len(v) in (40, 64) and all(c in "0123456789abcdef" for c in v) for v in values)


def _options_for(
    place: Place, run: PlannedRun, loaded: LoadedPipeline, follower: DriftFollower
) -> RunOptions | None:
    """The run's options; None when a drift signal's cooldown holds it back."""
    if run.trigger.kind != "drift":
        push = place.push
        if run.trigger.kind == PREVIEW_KIND:
            from engine.app import preview  # lazy: only a pull request needs it (~15 ms)

            push = preview.pushes(run.trigger.payload, push)
            if push is False and place.push is not False:
                place.log(
                    f"sluice: {loaded.name}: a fork's pull request: the preview's record is "
                    "not pushed, and steps naming a secret are skipped"
                )
        options = execution.run_options(
            place.repo,
            place.config,
            loaded,
            params=run.params,
            trigger=run.trigger,
            push=push,
        )
        if run.trigger.kind == PREVIEW_KIND and run.trigger.payload.get("fork") is True:
            from engine.app import preview  # lazy: only a pull request needs it (~15 ms)

            preview.fork_options(options, place.config, place.repo, place.log)
        return options
    # A drift signal from outside: the binding's cooldown decides, as for a monitor run.
    admitted = follower.admit(
        dispatched_signal(run.trigger),
        bindings([loaded], _monitor(run.trigger)),
        payload={k: v for k, v in run.trigger.payload.items() if k != "metrics"},
    )
    return admitted[0][1] if admitted else None


def run_all(
    place: Place,
    pipelines: list[LoadedPipeline],
    planned: list[PlannedRun],
    manifests: list[RunManifest],
    runs: OneAtATime,
) -> None:
    """Run each planned run in turn; a signal cancels the current one and starts no more."""
    by_name = {p.name: p for p in pipelines}
    follower = DriftFollower(place.repo, place.config, push=place.push, log=place.log)
    for run in planned:
        if runs.interrupted.is_set():
            place.log(f"sluice: interrupted: {run.pipeline} was not started")
            continue
        loaded = by_name[run.pipeline]
        options = _options_for(place, run, loaded, follower)
        if options is None:
            continue
        why = run.trigger.kind
        if run.trigger.event and run.trigger.event != why:
            why += f": {run.trigger.event}"
        title = f"sluice: {loaded.name} ({why})"
        with github.group(title, os.environ, sys.stderr):
            if run.trigger.kind == PREVIEW_KIND:
                # A preview's drift signal starts nothing: the pipelines bound to it would
                # run for real (and could deploy) on a pull request's code.
                done = [
                    execution.execute(
                        place.repo,
                        loaded,
                        options,
                        reporter=make_reporter(quiet=place.quiet),
                        on_executor=runs.started,
                    )
                ]
            else:
                done = execute_following(
                    loaded,
                    options,
                    follower=follower,
                    reporter=lambda: make_reporter(quiet=place.quiet),
                    on_executor=runs.started,
                )
        runs.finished()
        manifests.extend(done)
        for manifest in done:
            place.log(f"sluice: {manifest.pipeline}: run {manifest.run_id} {manifest.status.value}")


def _monitor(trigger: Trigger) -> str:
    return str(trigger.payload.get("monitor", ""))


def dispatched_signal(trigger: Trigger) -> Signal:
    """The `sluice-drift` dispatch a planned drift run came from (its `when` already held)."""
    metrics = trigger.payload.get("metrics")
    monitor_run = trigger.payload.get("monitor_run")
    return Signal(
        monitor=_monitor(trigger),
        source="repository_dispatch",
        monitor_run=monitor_run if isinstance(monitor_run, str) else None,
        metrics=metrics if isinstance(metrics, dict) else None,
        checked=True,
    )


def overall(manifests: list[RunManifest], interrupted: bool) -> str:
    """The status of the event's runs in one word (`cancelled` when interrupted before any)."""
    none = "cancelled" if interrupted else "skipped"
    return overall_status((m.status for m in manifests), none=none)


def publish(
    place: Place,
    event_name: str,
    manifests: list[RunManifest],
    pipelines: list[LoadedPipeline],
    status: str,
) -> None:
    """GITHUB_OUTPUT and GITHUB_STEP_SUMMARY, when the runner provides them."""
    output_path = os.environ.get("GITHUB_OUTPUT")
    if output_path:
        run_ids = " ".join(m.run_id for m in manifests)
        github.write_outputs(Path(output_path), {"run-ids": run_ids, "status": status})
    if event_name == "pull_request" and manifests:
        # the previews' whole reports go in the summary, and one comment each on the PR
        from engine.app import preview  # lazy: only a pull request needs it (~15 ms)

        if preview.publish(place.repo, place.config, manifests, pipelines, os.environ, place.log):
            return  # else (no results branch to read) the plain summary below
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        markdown = github.summary(
            manifests,
            {p.name: p.dag for p in pipelines},
            _baselines(place, manifests),
            heading=f"Sluice ({event_name})",
            nothing=f"The {event_name} event calls for no pipeline: nothing ran.",
            results_branch=place.config.results.branch,
        )
        github.append_summary(Path(summary_path), markdown)


def _baselines(place: Place, manifests: list[RunManifest]) -> dict[str, RunManifest]:
    """The baseline runs the manifests compared against, read from the results branch."""
    wanted = {m.baseline_run for m in manifests if m.baseline_run}
    if not wanted or not is_git_repo(place.repo):
        return {}
    found: dict[str, RunManifest] = {}
    try:
        with compose.reading_branch(place.repo, place.config) as store:
            for run_id in sorted(wanted):
                manifest = store.manifest(run_id)
                if manifest is not None:
                    found[run_id] = manifest
    except SluiceError as exc:  # a summary without baselines beats no summary
        place.log(f"sluice: warning: baselines not shown in the summary: {exc}")
    return found
