"""Run a pipeline, retry a run, approve or reject a paused one; read what runs recorded."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from engine.adapters import github_env as github
from engine.adapters.artifacts import store_name
from engine.adapters.console import make_reporter
from engine.adapters.pipeline_files import find_pipeline
from engine.app import compose, execution
from engine.app.drift_follow import DriftFollower, execute_following
from engine.app.orphans import alive_here, close_orphans
from engine.app.reading import find_run as find_run  # re-exported: app.step_logs
from engine.core import layout, names
from engine.core.config import RepoConfig
from engine.core.manifest import (
    DONE_OK,
    TERMINAL,
    ArtifactPointer,
    RunManifest,
    RunStatus,
    Trigger,
)
from engine.core.params import coerce_params
from engine.core.parse import LoadedPipeline
from engine.core.payloads import check_payload
from engine.core.suggest import counted
from engine.errors import EngineUnavailable, NotFound, UsageError, json_object
from engine.local.disk import size_text
from engine.local.workspace import is_git_repo
from engine.ports import ResultsBranch
from engine.run.executor import Executor, RunOptions


class OneAtATime:
    """Runs started one after another: a signal cancels the current run and starts no more.

    Install `cancel` as the signal handler and pass `started` as `execute(on_executor=...)`.
    """

    def __init__(self) -> None:
        self.interrupted = threading.Event()
        self._current: Executor | None = None

    def cancel(self) -> None:
        self.interrupted.set()
        current = self._current
        if current is not None:
            current.cancel()

    def started(self, executor: Executor) -> None:
        self._current = executor
        if self.interrupted.is_set():  # the signal came between two runs
            executor.cancel()

    def finished(self) -> None:
        self._current = None


@dataclass(frozen=True)
class Place:
    """Where runs start and record: the repository, its settings, the push mode, a log line,
    and whether the console leaves step logs out (`-q`: they are still recorded)."""

    repo: Path
    config: RepoConfig
    push: bool | None
    log: Callable[[str], None]
    quiet: bool = False

    def pipeline(self, ref: str) -> LoadedPipeline:
        found = find_pipeline(self.repo, self.repo / self.config.pipelines, ref)
        assert found is not None
        return found


def params(
    loaded: LoadedPipeline, pairs: tuple[str, ...], params_json: str | None
) -> dict[str, Any]:
    """The pipeline's params with `--params-json`, then each `-p KEY=VALUE`, over them."""
    declared = loaded.pipeline.params
    result = dict(declared)
    if params_json:
        example = "'{\"n_estimators\": 200}'"
        given = json_object(params_json, "--params-json", example=example, error=UsageError)
        result = coerce_params(declared, given, source="--params-json", from_text=False)
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"-p {pair!r}: use KEY=VALUE, e.g. -p n_estimators=200")
        overrides[key.strip()] = value
    texts = coerce_params(declared, overrides, source="-p", from_text=True)
    result.update({key: texts[key] for key in overrides})
    check_payload(result, "the params")
    return result


def options(
    place: Place,
    loaded: LoadedPipeline,
    *,
    params: dict[str, Any],
    trigger: Trigger,
    max_parallel: int | None = None,
) -> RunOptions:
    """The run's options with the real adapters; outside git, a note that runs stay local."""
    if not is_git_repo(place.repo):
        where = layout.LOCAL_RUNS
        place.log(f"sluice: {place.repo} is not a git repository: runs are kept under {where} only")
    return execution.run_options(
        place.repo,
        place.config,
        loaded,
        params=params,
        trigger=trigger,
        push=place.push,
        max_parallel=max_parallel,
    )


def explain(
    place: Place, loaded: LoadedPipeline, run_options: RunOptions
) -> list[tuple[str, bool, str]]:
    """`--dry-run`: (step, would be cached, why) for each step; nothing runs."""
    with tempfile.TemporaryDirectory(prefix="sluice-dry-") as scratch:
        executor = execution.executor(loaded, run_options, repo=place.repo)
        return executor.explain(Path(scratch))


def launch(
    place: Place,
    loaded: LoadedPipeline,
    run_options: RunOptions,
    *,
    on_executor: Callable[[Executor], None],
    quiet: bool = False,
) -> list[RunManifest]:
    """Run with console progress, then what its drift bindings start; the requested run first.

    Step logs stay off the console when `quiet` or `place.quiet`."""
    quiet = quiet or place.quiet
    follower = DriftFollower(place.repo, place.config, push=place.push, log=place.log)
    manifests = execute_following(
        loaded,
        run_options,
        follower=follower,
        reporter=lambda: make_reporter(quiet=quiet),
        on_executor=on_executor,
    )
    for started in manifests[1:]:
        place.log(
            f"sluice: {started.pipeline}: run {started.run_id} ({started.trigger.kind}) "
            f"{started.status.value}"
        )
    return manifests


def outcome(manifest: RunManifest) -> str:
    """A run's status, with `error` for a run the engine itself could not carry out, or
    whose record it could not push (never green: exit 3)."""
    engine_failed = manifest.status is not RunStatus.cancelled and manifest.engine_error
    return "error" if engine_failed else manifest.status.value


def report_errors(
    manifests: list[RunManifest], log: Callable[[str], None], *, summary: bool = True
) -> None:
    """Say each run the engine could not finish; an annotation and a job-summary line on
    GitHub (`summary=False` where the command's own job summary shows the error)."""
    for manifest in manifests:
        if outcome(manifest) == "error":
            log(f"sluice: error: run {manifest.run_id} ({manifest.pipeline}): {manifest.error}")
            github.run_error(manifest, os.environ, sys.stderr, summary=summary)


def _read(place: Place, run_id: str) -> RunManifest:
    """The run as recorded, the remote's record first (it may have run on another runner);
    offline, the local branch's; a run not on the branch, its copy under `.sluice/runs/`."""
    return _located(place, run_id)[0]


def _located(place: Place, run_id: str) -> tuple[RunManifest, bool]:
    """`_read`'s manifest, and whether it is on the results branch (else: only here)."""
    with compose.reading_branch(place.repo, place.config) as store:
        if place.push is not False:
            with contextlib.suppress(EngineUnavailable):
                store.fetch()
        manifest = find_run(store, run_id, place.repo)
        return manifest, store.manifest(run_id) is not None


def _current(place: Place, manifest: RunManifest) -> LoadedPipeline:
    """A recorded run's pipeline as the file says now (noting when it changed)."""
    loaded = place.pipeline(manifest.pipeline)
    if loaded.sha256 != manifest.pipeline_sha256:
        place.log(
            f"sluice: {loaded.file} changed since run {manifest.run_id}; using the current file"
        )
    return loaded


def _missing(place: Place, manifest: RunManifest, steps: list[str]) -> list[str]:
    """`step/output` of `steps`' outputs that the configured store does not hold."""
    store = compose.artifact_store(place.config, place.repo)
    return [
        f"{name}/{rel} (sha256 {pointer.sha256[:12]}, {size_text(pointer.size)}, "
        f"recorded in {pointer.store})"
        for name in steps
        for rel, pointer in manifest.steps[name].outputs.items()
        if not store.has(pointer)
    ]


def refuse_without_outputs(
    place: Place, manifest: RunManifest, verb: str, steps: list[str]
) -> None:
    """Exit 2 before anything changes when the outputs `verb` builds on are not in the store."""
    missing = _missing(place, manifest, steps)
    if not missing:
        return
    used = sorted({p.store for s in steps for p in manifest.steps[s].outputs.values()})
    stays = {"approve": "waiting for approval", "retry": "as it was, retryable"}.get(
        verb, "as it was"
    )
    configured = store_name(place.config.artifacts, place.repo)
    listed = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
    raise UsageError(
        f"cannot {verb} run {manifest.run_id} here: {counted(len(missing), 'output')} it needs are not "
        f"in the artifact store {configured}: {listed}. Nothing was changed: the run stays "
        f"{stays}",
        hint=_fix(configured, used),
    )


def _fix(configured: str, used: list[str]) -> str:
    """How to get a run's outputs within reach, from where they were stored and where not."""
    where = ", ".join(used)
    if used != [configured]:
        return (
            f"configure the store the run used ({where}) as `artifacts:` in sluice.yaml, with "
            "its credentials (AWS_* or AWS_PROFILE for s3://), then run the command again"
        )
    if configured.startswith("file://"):
        return (
            f"{configured} is a folder on the machine that ran the run: run the command there, "
            "or give runs a lasting store (`artifacts: s3://...`, gs://, az:// in sluice.yaml) "
            "that every runner reaches; a store inside a CI runner's workspace ends with its job"
        )
    return (
        f"the objects are gone from {configured} (removed by `sluice gc --runs` or a lifecycle "
        "rule), or this machine reaches another endpoint or account (check AWS_ENDPOINT_URL "
        "and the credentials); run the pipeline again to rebuild them"
    )


def retry(
    place: Place,
    run_id: str,
    *,
    max_parallel: int | None,
    on_executor: Callable[[Executor], None],
) -> list[RunManifest]:
    """A new run that reuses `run_id`'s succeeded steps and runs the rest."""
    original, recorded = _located(place, run_id)
    pid = alive_here(original)
    if pid is not None:
        raise UsageError(
            f"run {run_id} is still running here (pid {pid}): wait for it to end, or stop "
            f"it (Ctrl-C where it runs, or `kill -INT {pid}`) and retry it then",
            hint="a run whose engine was killed outright can be retried at once",
        )
    done = [name for name, rec in original.steps.items() if rec.status in DONE_OK]
    refuse_without_outputs(place, original, "retry", done)
    if not recorded and original.status is RunStatus.running:  # its engine is gone: recorded
        # closed first, as `sluice gc` does, so that the retry's `retry_of` names a record
        try:
            closing = close_orphans(
                place.repo, place.config, log=place.log, only=run_id, push=place.push
            )
        except EngineUnavailable as exc:  # the retry goes on; the next record carries it
            place.log(f"sluice: run {run_id} was not recorded as closed: {exc.message}")
        else:
            original = closing[0] if closing else original
    loaded = _current(place, original)
    trigger = Trigger(kind="retry", event=run_id, payload={"retry_of": run_id})
    run_options = options(
        place, loaded, params=dict(original.params), trigger=trigger, max_parallel=max_parallel
    )
    run_options.reuse = original
    return launch(place, loaded, run_options, on_executor=on_executor)


def decide(
    place: Place,
    run_id: str,
    decision: Literal["approve", "reject"],
    by: str | None,
    *,
    on_executor: Callable[[Executor], None],
) -> list[RunManifest]:
    """Continue a paused run with the decision; finished steps are not run again."""
    paused = _read(place, run_id)
    if paused.status is not RunStatus.waiting_approval:
        raise UsageError(f"run {run_id} is {paused.status.value}, not waiting for approval")
    if decision == "approve":  # what the steps still to run need from those that ran
        needed = {
            need
            for rec in paused.steps.values()
            if rec.status not in TERMINAL
            for need in rec.needs
            if need in paused.steps and paused.steps[need].status in DONE_OK
        }
        needed |= {  # a fan-out group hands over its instances' outputs too
            instance
            for need in list(needed)
            for instance in paused.steps[need].instances
            if instance in paused.steps and paused.steps[instance].status in DONE_OK
        }
        refuse_without_outputs(place, paused, "approve", sorted(needed))
    loaded = _current(place, paused)
    run_options = options(place, loaded, params=dict(paused.params), trigger=paused.trigger)
    run_options.resume = paused
    run_options.decision = decision
    run_options.decided_by = (
        by or os.environ.get("GITHUB_ACTOR") or os.environ.get("USER") or "unknown"
    )
    return launch(place, loaded, run_options, on_executor=on_executor)


def outputs(
    place: Place, store: ResultsBranch, run_id: str, step: str, dest: Path | None
) -> dict[str, ArtifactPointer]:
    """A step's recorded outputs; with `dest`, each copied there from the artifact store,
    verified against its sha256 (exit 2, nothing written, when some are not in the store)."""
    manifest = find_run(store, run_id)
    record = manifest.steps.get(step)
    if record is None:
        raise NotFound(f"run {run_id} has no step {step!r}; steps: {', '.join(manifest.steps)}")
    if dest is not None:
        refuse_without_outputs(place, manifest, "fetch the outputs of", [step])
        artifacts = compose.artifact_store(place.config, place.repo)
        for rel, pointer in record.outputs.items():
            names.checked(rel, f"output name of step {step}", nested=True)
            artifacts.get_file(pointer, dest / rel)
    return dict(record.outputs)
