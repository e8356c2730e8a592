"""Drives a pipeline through a container runtime, recording the run as it goes."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.core import cache, layout, planner, policy
from engine.core.manifest import (
    TERMINAL,
    ArtifactPointer,
    Attempt,
    RunManifest,
    RunStatus,
    StepStatus,
    run_status,
    utc_iso,
)
from engine.core.parse import LoadedPipeline
from engine.core.spec import ImageBuild, Outcome, ResolvedStep
from engine.errors import EngineUnavailable, SluiceError
from engine.local.logs import Masker
from engine.local.workspace import WorkspaceSnapshot, ensure_engine_dir, selection, snapshot
from engine.ports import ArtifactStore, ContainerRuntime, NullReporter, Reporter
from engine.run import fanin, reuse, roles, staging
from engine.run.attempt import AttemptReport, AttemptRunner, read_metrics
from engine.run.options import RunOptions
from engine.run.prepare import Prepared, Preparer, decide_approval, expression_context
from engine.run.recorder import Recorder, new_manifest, new_run_id, resumed
from engine.run.schedule import Job, Verdict, run_loop
from engine.run.staging import Stager

NOT_STARTED = "not started: the engine could not run"

__all__ = ["Executor", "RunOptions", "new_run_id", "read_metrics"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Executor:
    """Runs one pipeline: schedules ready steps, retries attempts, records everything.

    Decisions come from the pure `planner`, `policy` and `cache` modules (and `reuse`); this
    class only applies them: it starts attempts on worker threads (at most `max_parallel`
    at once), applies their reports, and records the manifest (locally, and on the results
    branch at the start, after every finished step, and at the end).
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
        if options.artifacts is None:
            raise TypeError("RunOptions.artifacts is required: app/compose.py builds the store")
        self.runtime, self.repo, self.options = runtime, repo, options
        # fan-out steps as their instances and groups (FanOutError: exit 2, nothing ran)
        self.loaded = loaded = fanin.expanded(loaded, options)
        self.reporter: Reporter = reporter or NullReporter()
        self.clock = clock
        self.steps = {step.name: decide_approval(step, options.params) for step in loaded.steps}
        self.planner = planner.Planner(loaded.dag, self.steps)
        self.mask = Masker(options.secrets.values())
        self.store: ArtifactStore = options.artifacts
        self.history = options.history
        self._cancel = threading.Event()
        self._workspace: WorkspaceSnapshot | None = None
        self._preparer: Preparer | None = None
        self._runner: AttemptRunner | None = None
        self._stager: Stager | None = None  # containers made ahead (not in jobs mode)
        self._ahead: Preparer | None = None  # prepares them before their inputs are known
        self._baseline: RunManifest | None = None
        self._stopped: EngineUnavailable | None = None  # the engine's own failure
        if options.resume is not None:
            decision, by = options.decision, options.decided_by
            ci_run = (options.ci or {}).get("run_url")
            self.manifest = resumed(options.resume, decision, by, clock(), ci_run)
            fanin.line_up(self.manifest, loaded.steps)
        else:
            self.manifest = new_manifest(
                loaded,
                run_id=options.run_id,
                trigger=options.trigger,
                params=options.params,
                started=clock(),
                ci=options.ci,
            )
        self.run_id = self.manifest.run_id
        ensure_engine_dir(repo)
        self.run_dir = repo / layout.local_run(self.run_id)
        baseline = loaded.pipeline.baseline
        self.recorder = Recorder(
            self.run_dir,
            self.history,
            baseline_step=baseline.step if baseline else None,
            components=self._components,
            note=lambda text: self.reporter.note(text),
            artifacts=self.store,
        )
        self.recorder.for_role(options.role, [s.name for s in loaded.steps if s.is_finally])
        self._started_mono = time.monotonic()

    # ---- public -------------------------------------------------------------------------

    def cancel(self) -> None:
        """Ask the run to stop (safe to call from a signal handler or another thread)."""
        self._cancel.set()

    def run(self) -> RunManifest:
        """Run to the end (or a pause, or cancellation) and return the final manifest.

        When the engine itself fails (EngineUnavailable: Docker, git or the artifact store),
        no further step starts and the run ends failed, with `engine_error` and `error` set.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
            attempts = {name: len(rec.attempts) for name, rec in self.manifest.steps.items()}
            run_loop(self, attempts, self.options.max_parallel)
        except EngineUnavailable as exc:
            self.engine_failed(exc, None)
        finally:
            self._finish()
        return self.manifest

    def explain(self, scratch: Path) -> list[tuple[str, bool, str]]:
        """Without running anything: (step, would be cached, why) for every step, in order.

        `when` conditions and approvals are left to the real run: they depend on metrics.
        """
        self.recorder.dry = True  # nothing is saved, recorded or reported
        self.reporter = NullReporter()
        self._snapshot(scratch / "workspace.tar")
        verdicts: list[tuple[str, bool, str]] = []
        runs: set[str] = set()
        for name in [*self.loaded.dag.order, *self.loaded.dag.finally_steps]:
            step = self.steps[name]
            if step.is_group:  # cached when all its instances are
                verdicts.append(fanin.explain_group(step, runs, self.manifest.steps))
                continue
            upstream = next((d for d in step.needs if d in runs), None)
            why = reuse.never_cached(step, self.options.use_cache, self.history)
            if why is None and upstream is not None:
                why = f"needs {upstream!r}, which runs"
            if why is None and self._reuse(name):
                cached_from = self.manifest.steps[name].cached_from
                verdicts.append((name, True, f"cached from {cached_from}"))
                continue
            if why is None:
                assert self.history is not None and self._workspace is not None
                files = self._workspace.files_for(step.workspace)
                why = reuse.why_missed(self.history, self.loaded.name, self._prepare(name), files)
            runs.add(name)
            verdicts.append((name, False, why))
        return verdicts

    # ---- set-up -------------------------------------------------------------------------

    def _snapshot(self, tar: Path) -> WorkspaceSnapshot:
        # only the files some step sees (or builds from) are read
        builds = [
            s.image.build.context for s in self.steps.values() if isinstance(s.image, ImageBuild)
        ]
        include = selection([*(s.workspace for s in self.steps.values()), *builds])
        workspace = snapshot(self.repo, tar, include)
        self._workspace = workspace
        self._preparer = Preparer(self.runtime, self.repo, workspace, self.options.engine_image)
        return workspace

    def _start(self) -> None:
        workspace = self._snapshot(self.run_dir / layout.WORKSPACE_TAR)
        if self.options.resume is None:
            self.manifest.commit, self.manifest.dirty = workspace.commit, workspace.dirty
        baseline = self.loaded.pipeline.baseline
        if baseline is not None and self.history is not None:
            self._baseline = reuse.baseline(
                self.history, self.manifest, self.loaded.name, baseline.step
            )
        self._runner = AttemptRunner(
            runtime=self.runtime,
            store=self.store,
            run_dir=self.run_dir,
            run_id=self.run_id,
            pipeline=self.loaded.name,
            workspace=workspace,
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
        if self.options.role is None:  # a step job runs one step: nothing to look ahead to
            self._stager = Stager(self._runner, max(1, self.options.max_parallel))
            self._ahead = Preparer(self.runtime, self.repo, workspace, self.options.engine_image)
        self.recorder.save(self.manifest, record=self.options.role is None)
        self.reporter.run_started(self.manifest, self.loaded.dag)

    # ---- scheduling -----------------------------------------------------------------------

    def _statuses(self) -> dict[str, StepStatus]:
        return {name: rec.status for name, rec in self.manifest.steps.items()}

    def _context(self) -> dict[str, Any]:
        return expression_context(self.manifest, self._baseline)

    def _set(self, name: str, status: StepStatus, reason: str | None = None) -> None:
        record = self.manifest.steps[name]
        record.status = status
        if reason is not None:
            record.reason = self.mask(reason)
        if status in TERMINAL:
            self.recorder.step_done(name)
            if self._stager is not None:
                self._stager.drop(name)  # made ahead for nothing: it will not run
        self.recorder.save(self.manifest, record=status in TERMINAL)
        self.reporter.step_changed(name, record)
        if status is StepStatus.failed and self.steps[name].instance_of:
            waiting, running, why = fanin.to_cancel(name, self.steps, self.manifest.steps)
            for other in waiting:  # fail_fast (those running: stopped, they end cancelled)
                self._set(other, StepStatus.cancelled, why)
            if running and self._runner is not None and self.options.role is None:
                self._runner.stop(running, why)  # (in jobs mode, GitHub's fail-fast does)

    def _settle(self, decision: planner.Decision) -> None:
        """A group's instances have all ended: its fan-in index is stored (its one output,
        index.json) and it takes the status they make (never a container of its own)."""
        name, record = decision.step, self.manifest.steps[decision.step]
        assert decision.status is not None
        work = self.run_dir / layout.LOCAL_STEPS
        record.outputs = {
            fanin.INDEX: fanin.store_index(self.steps[name], self.manifest.steps, self.store, work)
        }
        self._set(name, decision.status, decision.reason)

    # ---- the plan the scheduling loop drives (run.schedule.Plan) ----------------------------

    def stopping(self) -> bool:
        return self._cancel.is_set() or self._stopped is not None

    def stop(self, running: set[str]) -> None:
        """Steps that will not start now: cancelled, saying whether by a cancel or the engine."""
        if self._cancel.is_set():
            self._kill_all()
        why = "the run was cancelled" if self._cancel.is_set() else NOT_STARTED
        for name, rec in self.manifest.steps.items():
            if rec.status not in TERMINAL and name not in running:
                self._set(name, StepStatus.cancelled, why)

    def ready(self, busy: set[str]) -> list[str]:
        """Apply planner decisions until none is left that changes a status without running."""
        approved = {a["step"] for a in self.manifest.approvals if a.get("decision") == "approve"}
        ready: list[str] = []
        while True:
            decisions = self.planner.next(self._statuses(), self._context(), approved)
            changed = False
            for given in decisions:
                name = given.step
                decision = roles.taken(self.options.role, given, self.steps[name])
                if decision is None:
                    continue
                if decision == roles.CACHE_ONLY:
                    if name not in busy and name not in ready and self._reuse(name):
                        changed = True
                    continue
                assert isinstance(decision, planner.Decision)
                if decision.warning:
                    self._warn(name, decision.warning)
                if decision.action is planner.Action.settle:
                    self._settle(decision)
                    changed = True
                    continue
                if decision.action is planner.Action.run:
                    if name not in busy and name not in ready:
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
                return ready

    def may_start(self, name: str, running: set[str]) -> Verdict:
        if self.manifest.steps[name].status in TERMINAL:
            return "drop"  # decided while it waited (fail_fast cancelled it)
        return "start" if fanin.may_start(name, running, self.steps) else "wait"

    def lookahead(self, queued: list[str], running: set[str]) -> None:
        """Make the containers of the steps that start next while others run (at most
        `max_parallel` waiting; run/staging.py says which steps)."""
        stager, ahead = self._stager, self._ahead
        if stager is None or ahead is None or self.stopping() or stager.room() <= 0:
            return
        records = self.manifest.steps
        names = staging.next_up(queued, running, self.loaded.dag.order, self.steps, records)
        trigger: dict[str, Any] | None = None
        for name in names:
            if stager.has(name):
                continue
            if trigger is None:
                trigger = self._context()["trigger"]
            prepared = ahead.prepare(self.steps[name], self.manifest.params, trigger, {})
            stager.stage(name, prepared, len(records[name].attempts) + 1)
            if stager.room() <= 0:
                return

    def _warn(self, name: str, text: str) -> None:
        """A warning about step `name`: in its record (and so the summary), and said now."""
        record = self.manifest.steps[name]
        if text not in record.warnings:
            record.warnings.append(self.mask(text))
            self.reporter.note(f"warning: {name}: {self.mask(text)}")

    # ---- preparing, and results taken over --------------------------------------------

    def _inputs(self, step: ResolvedStep) -> dict[str, dict[str, ArtifactPointer]]:
        """Folder under /sluice/inputs -> outputs (a group's: `<group>/<instance>` too)."""
        return fanin.inputs(step, self.steps, self.manifest.steps)

    def _prepare(self, name: str) -> Prepared:
        """The step made concrete, with its cache key (once: retries reuse it)."""
        assert self._preparer is not None
        step = self.steps[name]
        digests = fanin.digests(step, self._inputs(step), self.steps, self.manifest.steps)
        prepared = self._preparer.prepare(
            step, self.manifest.params, self._context()["trigger"], digests
        )
        if isinstance(step.image, ImageBuild):  # the manifest names what was built
            built = self._preparer.built_tag(step.image)
            self.manifest.steps[name].image = built or self.manifest.steps[name].image
        return prepared

    def _components(self, name: str) -> dict[str, Any] | None:
        """What the results branch keeps of a finished step's cache key, to explain a miss."""
        prepared = self._preparer.get(name) if self._preparer else None
        if prepared is None or not prepared.components or self._workspace is None:
            return None
        files = self._workspace.files_for(prepared.step.workspace)
        small = len(files) <= cache.MAX_LISTED_FILES
        return {"parts": prepared.components, "files": files if small else None}

    def _reuse(self, name: str) -> bool:
        """Take a step's result from `sluice retry`'s original run, or from the cache."""
        record, step = self.manifest.steps[name], self.steps[name]
        found = reuse.from_retried(self.options.reuse, step, self.store)
        if found is None:
            retry = self.options.reuse is not None
            if reuse.never_cached(step, self.options.use_cache, self.history, retry) is not None:
                return False
            assert self.history is not None
            prepared = self._prepare(name)
            record.cache_key = prepared.key
            found = reuse.from_cache(self.history, prepared, self.store, self.reporter.note)
            if found is None:
                if self._workspace is not None:  # the summary says why it runs
                    files = self._workspace.files_for(step.workspace)
                    record.reason = reuse.ran_because(
                        self.history, self.loaded.name, prepared, files
                    )
                return False
        record.outputs, record.metrics = found.outputs, found.metrics
        record.cache_key, record.image_id = found.cache_key, found.image_id
        record.cached_from = found.cached_from
        self._set(name, StepStatus.cached, found.reason)
        return True

    # ---- attempts -----------------------------------------------------------------------

    def start(self, name: str, number: int) -> Job:
        prepared = self._prepare(name)
        record = self.manifest.steps[name]
        record.cache_key = prepared.key
        record.attempts.append(Attempt(number=number, started_at=utc_iso(self.clock())))
        if self.options.role is not None and self.options.role.job:
            record.job = dict(self.options.role.job)
        self._set(name, StepStatus.running)
        self.reporter.attempt_started(name, number)
        inputs = self._inputs(self.steps[name])
        original = self.options.reuse.steps.get(name) if self.options.reuse else None
        restore = original.checkpoints if number == 1 and original is not None else None
        runner = self._runner
        assert runner is not None
        staged = self._stager.take(name) if self._stager is not None else None
        return lambda: runner.attempt(prepared, number, inputs, restore, staged)

    def apply(self, report: AttemptReport, stopping: bool) -> float | None:
        name, attempt = report.step, report.attempt
        record = self.manifest.steps[name]
        record.attempts[attempt.number - 1] = attempt
        record.image_id = report.image_id or record.image_id
        if attempt.log:
            self.recorder.log_written(attempt.log)
        if report.checkpoints is not None:
            record.checkpoints = report.checkpoints
        if report.engine_error is not None:
            self.engine_failed(report.engine_error, name)
            stopping = True
        outcome = attempt.outcome or Outcome.error
        retries = self.steps[name].retries
        stopping = stopping or fanin.halted(name, self.steps, self.manifest.steps)  # fail_fast
        if outcome is Outcome.succeeded:
            record.outputs, record.metrics = report.outputs, report.metrics
            self._set(name, StepStatus.succeeded)
        elif not stopping and policy.should_retry(retries, attempt.number, outcome):
            delay = policy.backoff(retries, attempt.number)
            self.recorder.save(self.manifest)
            self.reporter.retrying(name, attempt, delay)
            return delay
        else:
            reason = attempt.error or f"attempt {attempt.number} {outcome.value.replace('_', ' ')}"
            self._set(name, policy.final_status(outcome), reason)
        return None

    def engine_failed(self, exc: EngineUnavailable, step: str | None) -> None:
        """The engine itself failed (`step`: in that step's attempt): nothing more starts."""
        if self._stopped is None:
            self._stopped = exc
            self.manifest.engine_error = True
            where = f" (in step {step!r})" if step else ""
            self.manifest.error = self.mask(f"the engine could not run{where}: {exc.message}")

    def _kill_all(self) -> None:
        try:
            self.runtime.kill_run(self.run_id)
        except SluiceError as exc:
            self.manifest.error = self.mask(f"could not remove the run's containers: {exc}")

    # ---- the end ------------------------------------------------------------------------

    def _finish(self) -> None:
        if self._stager is not None:
            self._stager.close()  # nothing made ahead outlives the run
        if self._stopped is not None and not self._cancel.is_set():
            self.stop(set())
        role = self.options.role
        if role is not None and role.part != "finish":  # the run goes on in other jobs
            if self._stopped is not None:
                self.manifest.engine_error = True
            self.recorder.save(self.manifest, record=True, final=True)
            self._tidy()
            return
        status = run_status(fanin.judged(self.manifest.steps), cancelled=self._cancel.is_set())
        if status is not RunStatus.cancelled and self._stopped is not None:
            status = RunStatus.failed  # the engine could not go on
        elif status is None:
            status = RunStatus.failed
            self.manifest.error = self.manifest.error or "the run ended with steps left undecided"
        self.manifest.status = status
        self.manifest.finished_at = utc_iso(self.clock())
        self.manifest.duration_s = round(time.monotonic() - self._started_mono, 3)
        self.recorder.save(self.manifest, record=True, final=True)
        self._tidy()
        self.reporter.run_finished(self.manifest)

    def _tidy(self) -> None:
        """One copy, the store's: a run that ended (or paused) keeps its manifest and logs
        only. The snapshot and local copies of outputs and checkpoints go; a resumed run
        takes a new snapshot and fetches outputs back from the artifact store."""
        (self.run_dir / layout.WORKSPACE_TAR).unlink(missing_ok=True)
        shutil.rmtree(self.run_dir / layout.LOCAL_STEPS, ignore_errors=True)
