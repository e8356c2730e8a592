"""Drives a pipeline through a container runtime, recording the manifest as the run goes."""

from __future__ import annotations

import json
import math
import os
import queue
import secrets as random_hex
import shutil
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine import __version__, archives, planner, policy, templating
from engine.errors import SluiceError
from engine.loader import LoadedPipeline
from engine.logs import DEFAULT_LOG_CAP, CappedLog, Masker
from engine.manifest import (
    DONE_OK,
    TERMINAL,
    Attempt,
    RunManifest,
    RunStatus,
    StepRecord,
    StepStatus,
    Trigger,
    utc_iso,
)
from engine.progress import NullReporter, Reporter
from engine.runtime.base import (
    LABEL_ATTEMPT,
    LABEL_ENGINE,
    LABEL_PIPELINE,
    LABEL_RUN,
    LABEL_STEP,
    ContainerResult,
    ContainerRuntime,
    ContainerSpec,
    ImageMissing,
    Transfer,
)
from engine.spec import ImageBuild, Outcome, ResolvedStep
from engine.workspace import WorkspaceSnapshot, ensure_engine_dir, snapshot

MAX_METRICS_BYTES = 1024**2
LOOP_TICK_S = 0.25  # how often the scheduler looks at the cancel flag while it waits


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


@dataclass(frozen=True)
class _Report:
    """What a worker hands back to the scheduler after one attempt."""

    step: str
    attempt: Attempt


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Executor:
    """Runs one pipeline: schedules ready steps, retries attempts, records everything.

    Decisions come from the pure `planner` and `policy` modules; this class only applies
    them: it starts attempts on worker threads (at most `max_parallel` at once), waits for
    their reports, and writes the manifest after every change.
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
        self.steps = {step.name: step for step in loaded.steps}
        self.planner = planner.Planner(loaded.dag, self.steps)
        self.mask = Masker(options.secrets.values())
        self._cancel = threading.Event()
        self._reports: queue.Queue[_Report] = queue.Queue()
        self._images: dict[str, str] = {}
        self._image_lock = threading.Lock()
        self._workspace: WorkspaceSnapshot | None = None
        started = clock()
        self.run_id = options.run_id or new_run_id(started)
        self.run_dir = ensure_engine_dir(repo) / "runs" / self.run_id
        self.manifest = RunManifest(
            run_id=self.run_id,
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
        self._started_mono = time.monotonic()

    # ---- public -------------------------------------------------------------------------

    def cancel(self) -> None:
        """Ask the run to stop (safe to call from a signal handler or another thread)."""
        self._cancel.set()

    def run(self) -> RunManifest:
        """Run to the end (or a pause, or cancellation) and return the final manifest."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._workspace = snapshot(self.repo, self.run_dir / "workspace.tar")
        self.manifest.commit = self._workspace.commit
        self.manifest.dirty = self._workspace.dirty
        self._save()
        self.reporter.run_started(self.manifest, self.loaded.dag)
        try:
            self._schedule()
        finally:
            self._finish()
        return self.manifest

    # ---- scheduling -----------------------------------------------------------------------

    def _statuses(self) -> dict[str, StepStatus]:
        return {name: rec.status for name, rec in self.manifest.steps.items()}

    def _context(self) -> dict[str, Any]:
        trigger = self.manifest.trigger
        return {
            "params": self.options.params,
            "steps": {
                name: {"status": rec.status.value, "metrics": dict(rec.metrics)}
                for name, rec in self.manifest.steps.items()
            },
            "baseline": None,
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
        self._save()
        self.reporter.step_changed(name, record)

    def _schedule(self) -> None:
        ready: list[str] = []  # decided to run, waiting for a free slot
        retry_at: dict[str, float] = {}  # step -> monotonic time its next attempt may start
        running: set[str] = set()
        attempts: dict[str, int] = dict.fromkeys(self.steps, 0)
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
            self._record_attempt(report, retry_at, cancelling)

    def _decide(self, ready: list[str], running: set[str]) -> None:
        """Apply planner decisions until none is left that changes a status without running."""
        approved: set[str] = set()
        while True:
            statuses = self._statuses()
            decisions = self.planner.next(statuses, self._context(), approved)
            changed = False
            for decision in decisions:
                name = decision.step
                if decision.action is planner.Action.run:
                    if name not in ready and name not in running:
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

    def _record_attempt(
        self, report: _Report, retry_at: dict[str, float], cancelling: bool
    ) -> None:
        name, attempt = report.step, report.attempt
        record = self.manifest.steps[name]
        record.attempts[attempt.number - 1] = attempt
        outcome = attempt.outcome or Outcome.error
        step = self.steps[name]
        if outcome is Outcome.succeeded:
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
        self._save()
        self.reporter.run_finished(self.manifest)

    def _save(self) -> None:
        path = self.run_dir / "manifest.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.manifest.to_json())
        tmp.replace(path)

    # ---- one attempt (worker thread) ----------------------------------------------------

    def _start_attempt(self, name: str, number: int) -> None:
        attempt = Attempt(number=number, started_at=utc_iso(self.clock()))
        self.manifest.steps[name].attempts.append(attempt)
        self._set(name, StepStatus.running)
        self.reporter.attempt_started(name, number)
        worker = threading.Thread(
            target=self._worker, args=(name, number), name=f"sluice-{name}-{number}", daemon=True
        )
        worker.start()

    def _worker(self, name: str, number: int) -> None:
        try:
            attempt = self._attempt(name, number)
        except Exception as exc:  # an engine bug must not hang the scheduler
            attempt = Attempt(
                number=number,
                outcome=Outcome.error,
                started_at=utc_iso(self.clock()),
                finished_at=utc_iso(self.clock()),
                error=self.mask(f"engine error: {type(exc).__name__}: {exc}"),
            )
        self._reports.put(_Report(name, attempt))

    def _attempt(self, name: str, number: int) -> Attempt:
        step = self.steps[name]
        step_dir = self.run_dir / "steps" / name
        work = step_dir / f"attempt-{number}"
        work.mkdir(parents=True, exist_ok=True)
        log_rel = f"logs/{name}.{number}.log"
        log = CappedLog(self.run_dir / log_rel, self.options.log_cap)
        started = self.clock()
        mono = time.monotonic()

        def finish(
            outcome: Outcome, result: ContainerResult | None = None, error: str | None = None
        ) -> Attempt:
            log.close()
            shutil.rmtree(work, ignore_errors=True)
            return Attempt(
                number=number,
                outcome=outcome,
                exit_code=result.exit_code if result else None,
                started_at=utc_iso(started),
                finished_at=utc_iso(self.clock()),
                duration_s=round(time.monotonic() - mono, 3),
                log=log_rel,
                max_memory_bytes=result.max_memory_bytes if result else None,
                cpu_s=result.cpu_s if result else None,
                error=self.mask(error) if error else None,
            )

        missing = [s for s in step.secrets if s not in self.options.secrets]
        if missing:
            return finish(
                Outcome.error, error=f"secret {missing[0]} is not set in the engine's environment"
            )
        try:
            image_id = self._image_id(step)
        except ImageMissing as exc:
            log.write(f"sluice: {exc}")
            return finish(Outcome.error, error=str(exc))
        self.manifest.steps[name].image_id = image_id
        if self._cancel.is_set():
            return finish(Outcome.cancelled)

        def on_log(line: str) -> None:
            masked = self.mask(line)
            log.write(masked)
            self.reporter.log(name, masked)

        files = self._inputs_tar(step, number, work / "in.tar")
        puts = [files]
        workspace = self._workspace_tar(step, work)
        if workspace is not None:
            puts.insert(0, workspace)
        spec = self._container_spec(step, number, image_id)
        outputs_tar, checkpoints_tar = work / "outputs.tar", work / "checkpoints.tar"
        result = self.runtime.run(
            spec,
            # Outputs matter only when the attempt succeeded, checkpoints only when it did not
            # (a succeeded step is reused, never resumed): one archive call either way.
            Transfer(
                put=puts,
                fetch={"/sluice/outputs": outputs_tar},
                fetch_on_failure={"/sluice/checkpoints": checkpoints_tar},
            ),
            timeout=step.timeout,
            on_log=on_log,
            cancel=self._cancel,
            grace=self.options.grace_s,
        )
        if result.error:
            log.write(f"sluice: {result.error}")
            return finish(Outcome.error, result, result.error)
        if checkpoints_tar in result.fetched.values():
            self._keep_checkpoints(checkpoints_tar, step_dir / "checkpoints")
        if result.cancelled:
            return finish(Outcome.cancelled, result)
        if result.timed_out:
            return finish(Outcome.timed_out, result, f"timed out after {step.timeout:g} s")
        if result.oom_killed:
            limit = step.resources.memory
            return finish(
                Outcome.oom_killed, result, f"killed: out of memory (limit {limit} bytes)"
            )
        if result.exit_code != 0:
            return finish(Outcome.failed, result, f"exited with code {result.exit_code}")
        if result.fetch_error:
            return finish(Outcome.failed, result, result.fetch_error)
        try:
            self._collect_outputs(name, outputs_tar, result, step_dir / "outputs")
        except SluiceError as exc:
            log.write(f"sluice: {exc}")
            return finish(Outcome.failed, result, str(exc))
        return finish(Outcome.succeeded, result)

    def _image_id(self, step: ResolvedStep) -> str:
        key = step.image if isinstance(step.image, str) else step.image.model_dump_json()
        with self._image_lock:
            if key not in self._images:
                if isinstance(step.image, ImageBuild):
                    self._images[key] = self._build(step.image)
                else:
                    self._images[key] = self.runtime.image_id(step.image)
            return self._images[key]

    def _build(self, image: ImageBuild) -> str:
        from engine import fingerprint

        build = image.build
        context = (self.repo / build.context).resolve()
        if not context.is_relative_to(self.repo.resolve()) or not context.is_dir():
            raise ImageMissing(
                f"build context {build.context!r} is not a folder inside the repository"
            )
        prefix = context.relative_to(self.repo.resolve()).as_posix()
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
        return self.runtime.build_image(context, build.dockerfile, tag, build.args, build.target)

    def _container_spec(self, step: ResolvedStep, number: int, image_id: str) -> ContainerSpec:
        params, trigger = self.options.params, self._context()["trigger"]
        env = {
            "SLUICE_RUN_ID": self.run_id,
            "SLUICE_PIPELINE": self.loaded.name,
            "SLUICE_STEP": step.name,
            "SLUICE_ATTEMPT": str(number),
            "SLUICE_CONFIG": "/sluice/config.json",
            "SLUICE_INPUTS": "/sluice/inputs",
            "SLUICE_OUTPUTS": "/sluice/outputs",
        }
        env.update({k: templating.substitute_text(v, params, trigger) for k, v in step.env.items()})
        env.update({name: self.options.secrets[name] for name in step.secrets})
        argv = step.argv
        if step.command is not None:
            argv = [templating.substitute_text(item, params, trigger) for item in step.command]
        resources = step.resources
        return ContainerSpec(
            image=image_id,
            command=argv,
            env=env,
            labels={
                LABEL_RUN: self.run_id,
                LABEL_PIPELINE: self.loaded.name,
                LABEL_STEP: step.name,
                LABEL_ATTEMPT: str(number),
                LABEL_ENGINE: f"{socket.gethostname()}:{os.getpid()}",
            },
            network=step.network,
            nano_cpus=int(resources.cpus * 1e9) if resources.cpus else None,
            mem_limit=resources.memory,
            gpus=resources.gpus,
        )

    def _workspace_tar(self, step: ResolvedStep, work: Path) -> Path | None:
        assert self._workspace is not None
        if step.workspace is False:
            return None
        if step.workspace is True:
            return self._workspace.tar
        return self._workspace.subset_tar(step.workspace, work / "workspace.tar")

    def _inputs_tar(self, step: ResolvedStep, number: int, out: Path) -> Path:
        params, trigger = self.options.params, self._context()["trigger"]
        config = templating.substitute(step.config, params, trigger)
        with archives.TarBuilder(out) as tar:
            tar.add_dir("sluice")
            tar.add_bytes("sluice/config.json", json.dumps(config, indent=2).encode())
            tar.add_bytes("sluice/params.json", json.dumps(params, indent=2).encode())
            tar.add_dir("sluice/inputs")
            for dep in step.needs:
                outputs = self.run_dir / "steps" / dep / "outputs"
                tar.add_dir(f"sluice/inputs/{dep}")
                if self.manifest.steps[dep].status in DONE_OK and outputs.is_dir():
                    tar.add_tree(outputs, f"sluice/inputs/{dep}")
            tar.add_dir("sluice/outputs")
            tar.add_dir("sluice/checkpoints")
            checkpoints = self.run_dir / "steps" / step.name / "checkpoints"
            if checkpoints.is_dir():
                tar.add_tree(checkpoints, "sluice/checkpoints")
        return out

    def _keep_checkpoints(self, archive: Path, dest: Path) -> None:
        fresh = dest.with_name("checkpoints.new")
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir(parents=True)
        try:
            archives.extract_tar(archive, fresh, strip="checkpoints")
        except SluiceError:
            shutil.rmtree(fresh, ignore_errors=True)
            return  # unsafe checkpoints are dropped: the next attempt starts clean
        shutil.rmtree(dest, ignore_errors=True)
        fresh.rename(dest)

    def _collect_outputs(
        self, name: str, archive: Path, result: ContainerResult, dest: Path
    ) -> None:
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        if archive not in result.fetched.values():
            return
        try:
            archives.extract_tar(archive, dest, strip="outputs")
        except SluiceError:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        self.manifest.steps[name].metrics = read_metrics(dest / "metrics.json")


def read_metrics(path: Path) -> dict[str, float | int | bool]:
    """`metrics.json`: a flat JSON object of numbers and booleans (absent: no metrics)."""
    if not path.is_file():
        return {}
    if path.stat().st_size > MAX_METRICS_BYTES:
        raise SluiceError(f"metrics.json is larger than {MAX_METRICS_BYTES} bytes")
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise SluiceError(f"metrics.json is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SluiceError("metrics.json must be a JSON object of numbers and booleans")
    bad = [
        k for k, v in data.items() if not isinstance(v, int | float | bool) or not math.isfinite(v)
    ]
    if bad:
        raise SluiceError(
            f"metrics.json: {bad[0]!r} is not a number or boolean; metrics are a flat object "
            'such as {"accuracy": 0.93}'
        )
    return data
