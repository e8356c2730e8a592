"""Drives a pipeline through a container runtime, recording the run as it goes."""

from __future__ import annotations

import os
import queue
import secrets as random_hex
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from engine import __version__
from engine.adapters.artifacts import DEFAULT_URL, ArtifactStore
from engine.adapters.console import NullReporter, Reporter
from engine.core import cache, fingerprint, layout, planner, policy, templating
from engine.core.manifest import (
    DONE_OK,
    TERMINAL,
    ArtifactPointer,
    Attempt,
    RunManifest,
    RunStatus,
    StepRecord,
    StepStatus,
    Trigger,
    utc_iso,
)
from engine.core.parse import LoadedPipeline
from engine.core.spec import ENGINE_IMAGE, ImageBuild, Outcome, ResolvedStep
from engine.errors import SluiceError
from engine.local.logs import DEFAULT_LOG_CAP, Masker
from engine.local.workspace import WorkspaceSnapshot, ensure_engine_dir, snapshot
from engine.ports import ContainerRuntime, ImageMissing
from engine.run.attempt import AttemptReport, AttemptRunner, Prepared, read_metrics
from engine.run.records import History

LOOP_TICK_S = 0.25  # how often the scheduler looks at the cancel flag while it waits

__all__ = ["Executor", "RunOptions", "new_run_id", "read_metrics"]


def new_run_id(moment: datetime) -> str:
    """`YYYYMMDDTHHMMSSZ-xxxxxx`: UTC start time and 6 random hex digits, so ids sort by time."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + random_hex.token_hex(3)


@dataclass
class RunOptions:
    params: dict[str, Any]
    trigger: Trigger = field(default_factory=Trigger)
    max_parallel: int = field(default_factory=lambda: os.cpu_count() or 2)
    secrets: Mapping[str, str] = field(default_factory=dict)  # name -> value, from the engine's env
    grace_s: float = 5.0
    log_cap: int = DEFAULT_LOG_CAP
    run_id: str | None = None
    use_cache: bool = True
    artifacts: ArtifactStore | None = None  # None: file://.sluice/artifacts under the repo
    history: History | None = None  # None: the run is recorded under .sluice/runs only
    reuse: RunManifest | None = None  # `sluice retry`: the run whose succeeded steps are reused
    resume: RunManifest | None = None  # `sluice approve|reject`: the paused run to continue
    decision: Literal["approve", "reject"] | None = None
    decided_by: str = ""
    engine_image: str | None = None  # what `image: "@engine"` means (SLUICE_ENGINE_IMAGE)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _step_view(manifest: RunManifest) -> dict[str, Any]:
    return {
        name: {"status": rec.status.value, "metrics": dict(rec.metrics)}
        for name, rec in manifest.steps.items()
    }


def _decide_approval(step: ResolvedStep, params: Mapping[str, Any]) -> ResolvedStep:
    """`approval: "${{ params.x }}"` made true or false by this run's params."""
    if isinstance(step.approval, bool):
        return step
    value = templating.substitute(step.approval, params, {})
    return step.model_copy(update={"approval": value is True})


class Executor:
    """Runs one pipeline: schedules ready steps, retries attempts, records everything.

    Decisions come from the pure `planner`, `policy` and `cache` modules; this class only
    applies them: it starts attempts on worker threads (at most `max_parallel` at once),
    applies their reports, and records the manifest (locally, and on the results branch
    at the start, after every finished step, and at the end).
    """

    def __init__(
        self,
        loaded: LoadedPipeline,
        runtime: ContainerRuntime,
        *,
        repo: Path,
        options: RunOptions,
        reporter: Reporter | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.loaded = loaded
        self.runtime = runtime
        self.repo = repo
        self.options = options
        self.reporter = reporter or NullReporter()
        self.clock = clock
        self.steps = {step.name: _decide_approval(step, options.params) for step in loaded.steps}
        self.planner = planner.Planner(loaded.dag, self.steps)
        self.mask = Masker(options.secrets.values())
        self.store = options.artifacts or ArtifactStore(DEFAULT_URL, repo)
        self.history = options.history
        self._cancel = threading.Event()
        self._reports: queue.Queue[AttemptReport] = queue.Queue()
        self._images: dict[str, str] = {}
        self._built: dict[str, str] = {}  # a build's settings -> the tag it was built as
        self._prepared: dict[str, Prepared] = {}
        self._workspace: WorkspaceSnapshot | None = None
        self._runner: AttemptRunner | None = None
        self._unrecorded_logs: list[str] = []
        self._newly_done: set[str] = set()
        self._baseline: RunManifest | None = None
        self._dry = False
        started = clock()
        if options.resume is not None:
            self.manifest = self._resumed(options.resume)
        else:
            self.manifest = RunManifest(
                run_id=options.run_id or new_run_id(started),
                pipeline=loaded.name,
                pipeline_file=loaded.file,
                pipeline_sha256=loaded.sha256,
                trigger=options.trigger,
                params=options.params,
                started_at=utc_iso(started),
                engine={"version": __version__, "host": socket.gethostname()},
                steps={
                    step.name: StepRecord(
                        type=step.type.value,
                        image=step.image if isinstance(step.image, str) else "build",
                        needs=list(step.needs),
                        is_finally=step.is_finally,
                    )
                    for step in loaded.steps
                },
            )
        self.run_id = self.manifest.run_id
        ensure_engine_dir(repo)
        self.run_dir = repo / layout.local_run(self.run_id)
        self._started_mono = time.monotonic()

    # ---- public -------------------------------------------------------------------------

    def cancel(self) -> None:
        """Ask the run to stop (safe to call from a signal handler or another thread)."""
        self._cancel.set()

    def run(self) -> RunManifest:
        """Run to the end (or a pause, or cancellation) and return the final manifest."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._workspace = snapshot(self.repo, self.run_dir / "workspace.tar")
        if self.options.resume is None:
            self.manifest.commit = self._workspace.commit
            self.manifest.dirty = self._workspace.dirty
        self._baseline = self._resolve_baseline()
        self._runner = AttemptRunner(
            runtime=self.runtime,
            store=self.store,
            run_dir=self.run_dir,
            run_id=self.run_id,
            pipeline=self.loaded.name,
            workspace=self._workspace,
            params=self.manifest.params,
            secrets=self.options.secrets,
            mask=self.mask,
            reporter=self.reporter,
            cancel=self._cancel,
            clock=self.clock,
            log_cap=self.options.log_cap,
            grace_s=self.options.grace_s,
            baseline_json=self._baseline.to_json().encode() if self._baseline else None,
        )
        self._save(record=True)
        self.reporter.run_started(self.manifest, self.loaded.dag)
        try:
            self._schedule()
        finally:
            self._finish()
        return self.manifest

    def explain(self, scratch: Path) -> list[tuple[str, bool, str]]:
        """Without running anything: (step, would be cached, why) for every step, in order.

        `when` conditions and approvals are left to the real run: they depend on metrics.
        """
        self._dry = True  # nothing is saved, recorded or reported
        self.reporter = NullReporter()
        self._workspace = snapshot(self.repo, scratch / "workspace.tar")
        verdicts: list[tuple[str, bool, str]] = []
        runs: set[str] = set()
        for name in [*self.loaded.dag.order, *self.loaded.dag.finally_steps]:
            step = self.steps[name]
            upstream = next((d for d in step.needs if d in runs), None)
            if not step.cache:
                why = (
                    "deployment steps are never cached"
                    if step.type.value == "deployment"
                    else "cache: false"
                )
            elif not self.options.use_cache:
                why = "--no-cache"
            elif self.history is None:
                why = "no results branch to look the cache up in"
            elif upstream is not None:
                why = f"needs {upstream!r}, which runs"
            elif self._reuse(name):
                verdicts.append(
                    (name, True, f"cached from {self.manifest.steps[name].cached_from}")
                )
                continue
            else:
                prepared = self._prepare(name)
                last = self.history.last_components(self.loaded.name, name) or {}
                why = prepared.error or cache.why_missed(
                    last.get("parts"),
                    prepared.components,
                    last.get("files"),
                    self._workspace.files_for(step.workspace),
                )
            runs.add(name)
            verdicts.append((name, False, why))
        return verdicts

    # ---- set-up -------------------------------------------------------------------------

    def _resumed(self, paused: RunManifest) -> RunManifest:
        """A paused or crashed run, ready to continue: approved steps and unfinished ones pend."""
        manifest = paused.model_copy(deep=True)
        manifest.status = RunStatus.running
        manifest.finished_at = None
        manifest.error = None
        decision = self.options.decision
        decisions = list(manifest.approvals)
        for name, rec in manifest.steps.items():
            if rec.status is StepStatus.waiting_approval and decision is not None:
                by = self.options.decided_by or "someone"
                decisions.append(
                    {"step": name, "decision": decision, "by": by, "at": utc_iso(self.clock())}
                )
                if decision == "approve":
                    rec.status, rec.reason = StepStatus.pending, None
                else:
                    rec.status, rec.reason = StepStatus.failed, f"rejected by {by}"
            elif rec.status is StepStatus.running:
                rec.status = StepStatus.pending
        manifest.approvals = decisions
        return manifest

    def _approved(self) -> set[str]:
        return {a["step"] for a in self.manifest.approvals if a.get("decision") == "approve"}

    def _resolve_baseline(self) -> RunManifest | None:
        baseline = self.loaded.pipeline.baseline
        if baseline is None or self.history is None:
            return None
        pinned = self.manifest.baseline_run
        found = self.history.manifest(pinned) if pinned else None
        if found is None and not pinned:
            found = self.history.production(self.loaded.name, baseline.step)
        if found is not None and found.run_id != self.run_id:
            self.manifest.baseline_run = found.run_id
            return found
        return None

    # ---- scheduling -----------------------------------------------------------------------

    def _statuses(self) -> dict[str, StepStatus]:
        return {name: rec.status for name, rec in self.manifest.steps.items()}

    def _context(self) -> dict[str, Any]:
        trigger = self.manifest.trigger
        return {
            "params": self.manifest.params,
            "steps": _step_view(self.manifest),
            "baseline": {"steps": _step_view(self._baseline)} if self._baseline else None,
            # The payload sits under its own key: an untrusted payload cannot pose as `kind`.
            "trigger": {
                "kind": trigger.kind,
                "event": trigger.event,
                "scheduled_for": trigger.scheduled_for,
                "payload": trigger.payload,
            },
        }

    def _set(self, name: str, status: StepStatus, reason: str | None = None) -> None:
        record = self.manifest.steps[name]
        record.status = status
        if reason is not None:
            record.reason = self.mask(reason)
        if status in TERMINAL:
            self._newly_done.add(name)
        self._save(record=status in TERMINAL)
        self.reporter.step_changed(name, record)

    def _schedule(self) -> None:
        ready: list[str] = []  # decided to run, waiting for a free slot
        retry_at: dict[str, float] = {}  # step -> monotonic time its next attempt may start
        running: set[str] = set()
        attempts = {name: len(rec.attempts) for name, rec in self.manifest.steps.items()}
        cancelling = False
        while True:
            if self._cancel.is_set() and not cancelling:
                cancelling = True
                self._kill_all()
                for name, rec in self.manifest.steps.items():
                    if rec.status not in TERMINAL and name not in running:
                        self._set(name, StepStatus.cancelled, "the run was cancelled")
                ready.clear()
                retry_at.clear()
            if not cancelling:
                self._decide(ready, running)
                now = time.monotonic()
                for name in [n for n, at in retry_at.items() if at <= now]:
                    del retry_at[name]
                    ready.append(name)
                while ready and len(running) < self.options.max_parallel:
                    name = ready.pop(0)
                    attempts[name] += 1
                    running.add(name)
                    self._start_attempt(name, attempts[name])
            if not running and not ready and not retry_at:
                return
            timeout = LOOP_TICK_S
            if retry_at and not ready:
                timeout = max(0.0, min(timeout, min(retry_at.values()) - time.monotonic()))
            try:
                report = self._reports.get(timeout=timeout)
            except queue.Empty:
                continue
            running.discard(report.step)
            self._apply(report, retry_at, cancelling)

    def _decide(self, ready: list[str], running: set[str]) -> None:
        """Apply planner decisions until none is left that changes a status without running."""
        approved = self._approved()
        while True:
            decisions = self.planner.next(self._statuses(), self._context(), approved)
            changed = False
            for decision in decisions:
                name = decision.step
                if decision.action is planner.Action.run:
                    if name not in ready and name not in running:
                        if self._reuse(name):
                            changed = True
                        else:
                            ready.append(name)
                    continue
                changed = True
                status = {
                    planner.Action.skip: StepStatus.skipped,
                    planner.Action.upstream_failed: StepStatus.upstream_failed,
                    planner.Action.wait_approval: StepStatus.waiting_approval,
                    planner.Action.fail: StepStatus.failed,
                }[decision.action]
                self._set(name, status, decision.reason)
            if not changed:
                return

    # ---- cache and reuse ----------------------------------------------------------------

    def _image_id(self, step: ResolvedStep) -> str:
        key = step.image if isinstance(step.image, str) else step.image.model_dump_json()
        if key not in self._images:
            if isinstance(step.image, ImageBuild):
                self._images[key] = self._build(step.image)
            elif step.image == ENGINE_IMAGE:
                if not self.options.engine_image:
                    raise ImageMissing(
                        f'step {step.name!r} runs in image "{ENGINE_IMAGE}" (the Sluice engine '
                        "image), and none is known: set SLUICE_ENGINE_IMAGE to a local image "
                        "with sluice installed (`docker build -t sluice .` in Sluice's "
                        "repository, then SLUICE_ENGINE_IMAGE=sluice); the Action sets it itself"
                    )
                self._images[key] = self.runtime.image_id(self.options.engine_image)
            else:
                self._images[key] = self.runtime.image_id(step.image)
        return self._images[key]

    def _build(self, image: ImageBuild) -> str:
        build = image.build
        root = self.repo.resolve()
        context = (self.repo / build.context).resolve()
        if not context.is_relative_to(root) or not context.is_dir():
            raise ImageMissing(
                f"build context {build.context!r} is not a folder inside the repository"
            )
        prefix = context.relative_to(root).as_posix()
        assert self._workspace is not None
        files = {
            k: v
            for k, v in self._workspace.digests.items()
            if prefix in ("", ".") or k == prefix or k.startswith(prefix + "/")
        }
        digest = fingerprint.digest({"files": files, "build": build.model_dump(mode="json")})
        # Named after the context and tagged by its content: pipelines sharing it build once.
        name = "-".join(p for p in prefix.lower().replace("_", "-").split("/") if p and p != ".")
        tag = f"sluice-build/{name or 'root'}:{digest[:16]}"
        self._built[image.model_dump_json()] = tag
        return self.runtime.build_image(context, build.dockerfile, tag, build.args, build.target)

    def _inputs(self, step: ResolvedStep) -> dict[str, dict[str, ArtifactPointer]]:
        return {
            dep: dict(self.manifest.steps[dep].outputs)
            for dep in step.needs
            if self.manifest.steps[dep].status in DONE_OK
        }

    def _prepare(self, name: str) -> Prepared:
        """The step made concrete, with its cache key (once: retries reuse it)."""
        if name in self._prepared:
            return self._prepared[name]
        step = self.steps[name]
        params, trigger = self.manifest.params, self._context()["trigger"]
        config = templating.substitute(step.config, params, trigger)
        env = {k: templating.substitute_text(v, params, trigger) for k, v in step.env.items()}
        argv = step.argv
        if step.command is not None:
            argv = [templating.substitute_text(item, params, trigger) for item in step.command]
        try:
            image_id: str | None = self._image_id(step)
            error = None
        except ImageMissing as exc:
            image_id, error = None, str(exc)
        if isinstance(step.image, ImageBuild):  # the manifest names what was built
            built = self._built.get(step.image.model_dump_json())
            self.manifest.steps[name].image = built or self.manifest.steps[name].image
        parts: dict[str, Any] = {}
        key = None
        if image_id is not None:
            assert self._workspace is not None
            inputs = {
                d: {p: o.sha256 for p, o in outs.items()} for d, outs in self._inputs(step).items()
            }
            parts = cache.components(
                image_id=image_id,
                argv=argv,
                config=config,
                env=env,
                secret_names=step.secrets,
                inputs=inputs,
                workspace=self._workspace.files_for(step.workspace),
            )
            key = cache.key(parts)
        prepared = Prepared(step, image_id, argv, config, env, parts, key, error)
        self._prepared[name] = prepared
        return prepared

    def _reuse(self, name: str) -> bool:
        """Take a step's result from `sluice retry`'s original run, or from the cache."""
        record = self.manifest.steps[name]
        original = self.options.reuse
        done = original.steps.get(name) if original else None
        if (
            original is not None
            and done is not None
            and done.status in DONE_OK
            # re-verified: a retry must never build on outputs that changed under it
            and all(self.store.has(p, verify=True) for p in done.outputs.values())
        ):
            record.outputs, record.metrics = dict(done.outputs), dict(done.metrics)
            record.cache_key, record.image_id = done.cache_key, done.image_id
            record.cached_from = done.cached_from or original.run_id
            self._set(name, StepStatus.cached, f"reused from {record.cached_from}")
            return True
        step = self.steps[name]
        if not (step.cache and self.options.use_cache and self.history is not None):
            return False
        prepared = self._prepare(name)
        record.cache_key = prepared.key
        entry = self.history.cache_entry(prepared.key) if prepared.key else None
        if entry is None or not all(self.store.has(p) for p in entry.outputs.values()):
            return False
        record.outputs, record.metrics = dict(entry.outputs), dict(entry.metrics)
        record.image_id, record.cached_from = prepared.image_id, entry.run_id
        self._set(name, StepStatus.cached, f"cached from {entry.run_id}")
        return True

    # ---- attempts -----------------------------------------------------------------------

    def _start_attempt(self, name: str, number: int) -> None:
        prepared = self._prepare(name)
        record = self.manifest.steps[name]
        record.cache_key = prepared.key
        record.attempts.append(Attempt(number=number, started_at=utc_iso(self.clock())))
        self._set(name, StepStatus.running)
        self.reporter.attempt_started(name, number)
        inputs = self._inputs(self.steps[name])
        restore = None
        original = self.options.reuse.steps.get(name) if self.options.reuse else None
        if number == 1 and original is not None:
            restore = original.checkpoints
        worker = threading.Thread(
            target=self._worker,
            args=(prepared, number, inputs, restore),
            name=f"sluice-{name}-{number}",
            daemon=True,
        )
        worker.start()

    def _worker(
        self,
        prepared: Prepared,
        number: int,
        inputs: dict[str, dict[str, ArtifactPointer]],
        restore: ArtifactPointer | None,
    ) -> None:
        name = prepared.step.name
        assert self._runner is not None
        try:
            if restore:
                self._runner.restore_checkpoints(name, restore)
            report = self._runner.run(prepared, number, inputs)
        except Exception as exc:  # an engine bug must not hang the scheduler
            now = utc_iso(self.clock())
            error = self.mask(f"engine error: {type(exc).__name__}: {exc}")
            attempt = Attempt(
                number=number, outcome=Outcome.error, started_at=now, finished_at=now, error=error
            )
            report = AttemptReport(name, attempt)
        self._reports.put(report)

    def _apply(self, report: AttemptReport, retry_at: dict[str, float], cancelling: bool) -> None:
        name, attempt = report.step, report.attempt
        record = self.manifest.steps[name]
        record.attempts[attempt.number - 1] = attempt
        record.image_id = report.image_id or record.image_id
        if attempt.log:
            self._unrecorded_logs.append(attempt.log)
        if report.checkpoints is not None:
            record.checkpoints = report.checkpoints
        outcome = attempt.outcome or Outcome.error
        step = self.steps[name]
        if outcome is Outcome.succeeded:
            record.outputs, record.metrics = report.outputs, report.metrics
            self._set(name, StepStatus.succeeded)
        elif not cancelling and policy.should_retry(step.retries, attempt.number, outcome):
            delay = policy.backoff(step.retries, attempt.number)
            retry_at[name] = time.monotonic() + delay
            self._save()
            self.reporter.retrying(name, attempt, delay)
        else:
            reason = attempt.error or f"attempt {attempt.number} {outcome.value.replace('_', ' ')}"
            self._set(name, policy.final_status(outcome), reason)

    def _kill_all(self) -> None:
        try:
            self.runtime.kill_run(self.run_id)
        except SluiceError as exc:
            self.manifest.error = self.mask(f"could not remove the run's containers: {exc}")

    # ---- the record ---------------------------------------------------------------------

    def _finish(self) -> None:
        statuses = self._statuses()
        if self._cancel.is_set():
            status = RunStatus.cancelled
        elif any(s in (StepStatus.failed, StepStatus.upstream_failed) for s in statuses.values()):
            status = RunStatus.failed
        elif any(s is StepStatus.waiting_approval for s in statuses.values()):
            status = RunStatus.waiting_approval
        elif all(s in TERMINAL for s in statuses.values()):
            status = RunStatus.succeeded
        else:
            status = RunStatus.failed
            self.manifest.error = self.manifest.error or "the run ended with steps left undecided"
        self.manifest.status = status
        self.manifest.finished_at = utc_iso(self.clock())
        self.manifest.duration_s = round(time.monotonic() - self._started_mono, 3)
        self._save(record=True)
        self.reporter.run_finished(self.manifest)

    def _save(self, *, record: bool = False) -> None:
        """Write the manifest locally; with `record`, also commit it to the results branch."""
        if self._dry:
            return
        path = self.run_dir / "manifest.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.manifest.to_json())
        tmp.replace(path)
        if record and self.history is not None:
            self._record()

    def _record(self) -> None:
        assert self.history is not None
        logs = {}
        for rel in self._unrecorded_logs:
            local = self.run_dir / rel
            if local.is_file():
                logs[Path(rel).name] = local.read_bytes()
        assert self._workspace is not None
        components = {}
        for name in self._newly_done:
            prepared = self._prepared.get(name)
            if prepared is not None and prepared.components:
                files = self._workspace.files_for(prepared.step.workspace)
                small = len(files) <= cache.MAX_LISTED_FILES
                components[name] = {"parts": prepared.components, "files": files if small else None}
        baseline = self.loaded.pipeline.baseline
        try:
            self.history.record(
                self.manifest,
                logs=logs,
                components=components,
                baseline_step=baseline.step if baseline else None,
                newly_done=set(self._newly_done),
            )
        except SluiceError as exc:
            # The run goes on: the manifest is on disk, and the next record tries again.
            self.reporter.note(f"results branch: {exc}")
            return
        self._unrecorded_logs.clear()
        self._newly_done.clear()
