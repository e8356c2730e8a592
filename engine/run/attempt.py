"""One attempt of one step: files in, container run, outputs to the artifact store (worker side)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.core import names
from engine.core.manifest import ArtifactPointer, Attempt, utc_iso
from engine.core.printable import is_utf8, printable
from engine.core.spec import DEFAULT_PIDS, Outcome, ResolvedStep
from engine.errors import EngineUnavailable, SluiceError
from engine.local import archives
from engine.local.logs import CappedLog, MaskedLines, Masker
from engine.local.workspace import WorkspaceSnapshot
from engine.ports import (
    LABEL_ATTEMPT,
    LABEL_ENGINE,
    LABEL_PIPELINE,
    LABEL_RUN,
    LABEL_STEP,
    ArtifactStore,
    ContainerResult,
    ContainerRuntime,
    ContainerSpec,
    Reporter,
    Transfer,
)
from engine.run import files_in
from engine.run.prepare import Prepared

MAX_METRICS_BYTES = 1024**2
COMPLETE = ".sluice-complete"  # marks a local copy of a step's outputs as whole


@dataclass(frozen=True)
class AttemptReport:
    """What a worker hands back to the scheduler: data only, applied by the main thread."""

    step: str
    attempt: Attempt
    image_id: str | None = None
    outputs: dict[str, ArtifactPointer] = field(default_factory=dict)
    metrics: dict[str, float | int | bool] = field(default_factory=dict)
    checkpoints: ArtifactPointer | None = None
    engine_error: EngineUnavailable | None = None  # the engine failed: the run stops


@dataclass(frozen=True)
class _Ending:
    """How an attempt ended, before it becomes an Attempt record."""

    outcome: Outcome
    result: ContainerResult | None = None
    error: str | None = None
    outputs: dict[str, ArtifactPointer] = field(default_factory=dict)
    metrics: dict[str, float | int | bool] = field(default_factory=dict)
    checkpoints: ArtifactPointer | None = None
    engine_error: EngineUnavailable | None = None


class StepStop(threading.Event):
    """The `cancel` the attempts of one step give the runtime: set for that step alone by
    `AttemptRunner.stop` (fail_fast), and set too once the whole run is cancelled.

    Runtimes only ask `is_set()` of it (which sees both); `wait()` sees only its own flag."""

    def __init__(self, run: threading.Event) -> None:
        super().__init__()
        self._run = run

    def is_set(self) -> bool:
        return super().is_set() or self._run.is_set()


@dataclass(frozen=True)
class Staged:
    """An attempt's container made ahead (AttemptRunner.stage), not started."""

    handle: str
    spec: ContainerSpec
    config: Any  # what /sluice/config.json says in it
    number: int


def read_metrics(path: Path, mask: Callable[[str], str] = str) -> dict[str, float | int | bool]:
    """`metrics.json`: a flat JSON object of numbers and booleans (absent: no metrics),
    secrets in its keys masked (keys leave the engine: the manifest, `--json`, summaries)."""
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
    odd = next((key for key in data if not is_utf8(key)), None)
    if odd is not None:  # "\ud800": the manifest could not hold it as it is
        raise SluiceError(f"metrics.json: key '{printable(odd)}' is not valid Unicode text")
    bad = [
        k for k, v in data.items() if not isinstance(v, int | float | bool) or not math.isfinite(v)
    ]
    if bad:
        raise SluiceError(
            f"metrics.json: {bad[0]!r} is not a number or boolean; metrics are a flat object "
            'such as {"accuracy": 0.93}'
        )
    masked = {mask(key): value for key, value in data.items()}
    if len(masked) != len(data):
        raise SluiceError("metrics.json: keys holding a secret's value are the same once masked")
    return masked


# Commands that fetch from a network, and what failing to reach one prints.
_FETCHES = re.compile(
    r"\b(?:pip3?|uv\s+pip|conda|mamba|micromamba)\s+(?:install|download)\b|"
    r"\b(?:apt-get|apt)\s+(?:install|update)\b|\bapk\s+add\b|\bnpm\s+(?:install|ci)\b|"
    r"\b(?:curl|wget)\s|\bgit\s+clone\b"
)
_NO_NETWORK = re.compile(
    r"Temporary failure in name resolution|Name or service not known|Network is unreachable|"
    r"Could not resolve host|Failed to establish a new connection|\(from versions: none\)|"
    r"No address associated with hostname"
)


def network_hint(step: ResolvedStep, offline_output: bool) -> str:
    """For a failed step without a network that fetched something: how to give it one."""
    command = step.run if step.run is not None else " ".join(step.command or [])
    fetched = _FETCHES.search(command)
    if not fetched and not offline_output:
        return ""
    what = f"`{fetched.group(0).strip()}`" if fetched else "its output says it"
    return (
        f"the step has no network (network: none, the default) and {what} needs one: set "
        "`network: bridge` on the step, or install what it needs into its image "
        "(image: {build: ...})"
    )


@dataclass
class AttemptRunner:
    """Everything attempts of one run share; `run` is called on worker threads."""

    runtime: ContainerRuntime
    store: ArtifactStore
    run_dir: Path
    run_id: str
    pipeline: str
    workspace: WorkspaceSnapshot
    params: dict[str, Any]
    secrets: Mapping[str, str]
    mask: Masker
    reporter: Reporter
    cancel: threading.Event
    clock: Callable[[], datetime]
    log_cap: int
    grace_s: float
    baseline_json: bytes | None = None
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)
    _stops: dict[str, StepStop] = field(default_factory=dict)  # step -> its attempts' cancel
    _why: dict[str, str] = field(default_factory=dict)  # step -> why `stop` stopped it

    def stop(self, steps: list[str], why: str) -> None:
        """Stop these steps of the run, running or about to start, the rest going on: their
        attempts end `cancelled` with `why` as their error, and none starts after this.

        Each flag is set before its kill, as for a whole-run cancel: the runtime then reads
        the killed container as cancelled, and an attempt not started yet never starts."""
        for name in steps:
            with self._guard:
                self._why.setdefault(name, why)
            self._stop_of(name).set()
            try:
                self.runtime.kill_step(self.run_id, name)
            except SluiceError as exc:  # the daemon: the attempt reports what it meets
                self.reporter.note(self.mask(f"warning: could not stop step {name}: {exc}"))

    def _stop_of(self, name: str) -> StepStop:
        with self._guard:
            return self._stops.setdefault(name, StepStop(self.cancel))

    def step_dir(self, name: str) -> Path:
        return self.run_dir / "steps" / name

    def materialize(self, name: str, outputs: Mapping[str, ArtifactPointer]) -> Path:
        """A local copy of a step's outputs (from the store unless this process made them)."""
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        dest = self.step_dir(name) / "outputs"
        # Names come from the results branch (a cache entry, a retried run): untrusted, so
        # all are checked before the first file is written.
        for rel in outputs:
            names.checked(rel, f"output name of step {name}", nested=True)
        with lock:
            if not (dest / COMPLETE).exists():
                shutil.rmtree(dest, ignore_errors=True)
                self.store.get_files([(pointer, dest / rel) for rel, pointer in outputs.items()])
                dest.mkdir(parents=True, exist_ok=True)
                (dest / COMPLETE).touch()
        return dest

    def restore_checkpoints(self, name: str, pointer: ArtifactPointer) -> None:
        """Checkpoints of an earlier run's failed attempt, for the first attempt of a retry."""
        work = self.step_dir(name) / "restore"
        work.mkdir(parents=True, exist_ok=True)
        try:
            self.store.get_file(pointer, work / "checkpoints.tar")
            self._keep_checkpoints(work / "checkpoints.tar", self.step_dir(name) / "checkpoints")
        except SluiceError:
            pass  # a lost checkpoint only costs time: the attempt starts from scratch
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def attempt(
        self,
        prepared: Prepared,
        number: int,
        inputs: Mapping[str, Mapping[str, ArtifactPointer]],
        restore: ArtifactPointer | None,
        staged: Callable[[], Staged | None] | None = None,
    ) -> AttemptReport:
        """`run` on a worker thread, after restoring `restore`'s checkpoints; an engine bug
        comes back as an `error` outcome, never raised (the scheduler waits for a report).

        `staged`: waits for the container staged for this step (None when there is none)."""
        made = None
        try:
            made = staged() if staged is not None else None
            if restore:
                self.restore_checkpoints(prepared.step.name, restore)
            return self.run(prepared, number, inputs, made)
        except Exception as exc:
            if made is not None:
                self.discard(made)  # removed already if `run` got it: then a no-op
            now = utc_iso(self.clock())
            error = self.mask(f"engine error: {type(exc).__name__}: {exc}")
            attempt = Attempt(
                number=number, outcome=Outcome.error, started_at=now, finished_at=now, error=error
            )
            return AttemptReport(prepared.step.name, attempt)

    def run(
        self,
        prepared: Prepared,
        number: int,
        inputs: Mapping[str, Mapping[str, ArtifactPointer]],
        staged: Staged | None = None,
    ) -> AttemptReport:
        """One attempt, start to end; the engine's own failure comes back as `engine_error`.

        `staged`: this attempt's container made ahead by `stage` (used when it still fits:
        same spec and config; removed otherwise, and whenever the attempt does not run)."""
        name = prepared.step.name
        work = self.step_dir(name) / f"attempt-{number}"
        work.mkdir(parents=True, exist_ok=True)
        log_rel = f"logs/{name}.{number}.log"
        log = CappedLog(self.run_dir / log_rel, self.log_cap)
        started, mono = self.clock(), time.monotonic()
        pending = [staged] if staged is not None else []  # emptied when the runtime takes it
        stop = self._stop_of(name)
        try:
            end = self._attempt(prepared, number, inputs, work, log, pending, stop)
        except EngineUnavailable as exc:
            why = f"the engine could not run: {exc.message}"
            end = _Ending(Outcome.error, error=why, engine_error=exc)
        finally:
            for left in pending:
                self.discard(left)
        with self._guard:
            stopped = self._why.get(name)
        if stopped is not None and end.outcome is not Outcome.succeeded and not end.engine_error:
            # stopped (fail_fast): whatever the kill made of it (exit 137, a container gone)
            end = dataclasses.replace(end, outcome=Outcome.cancelled, error=stopped)
        if end.error:
            log.write(f"sluice: {self.mask(end.error)}")
        log.close()
        shutil.rmtree(work, ignore_errors=True)
        result = end.result
        attempt = Attempt(
            number=number,
            outcome=end.outcome,
            exit_code=result.exit_code if result else None,
            started_at=utc_iso(started),
            finished_at=utc_iso(self.clock()),
            duration_s=round(time.monotonic() - mono, 3),
            log=log_rel,
            max_memory_bytes=result.max_memory_bytes if result else None,
            cpu_s=result.cpu_s if result else None,
            error=self.mask(end.error) if end.error else None,
        )
        return AttemptReport(
            name,
            attempt,
            image_id=prepared.image_id,
            outputs=end.outputs,
            metrics=end.metrics,
            checkpoints=end.checkpoints,
            engine_error=end.engine_error,
        )

    def _attempt(
        self,
        prepared: Prepared,
        number: int,
        inputs: Mapping[str, Mapping[str, ArtifactPointer]],
        work: Path,
        log: CappedLog,
        pending: list[Staged],
        stop: StepStop,
    ) -> _Ending:
        step = prepared.step
        staged = pending[0] if pending and self._fits(pending[0], prepared, number) else None
        if prepared.image_id is None:
            return _Ending(Outcome.error, error=prepared.error or "no image")
        missing = [s for s in step.secrets if s not in self.secrets]
        if missing:
            why = f"secret {missing[0]} is not set in the engine's environment"
            return _Ending(Outcome.error, error=why)
        if stop.is_set():
            return _Ending(Outcome.cancelled)

        offline: list[str] = []  # output lines that say the network was missed

        def relay(masked: str) -> None:
            log.write(masked)
            self.reporter.log(step.name, masked)
            if step.network == "none" and not offline and _NO_NETWORK.search(masked):
                offline.append(masked)

        on_log = MaskedLines(self.mask, relay)  # masks across the pieces of a long line

        try:
            late = self._late_tar(prepared, inputs, work / "late.tar")
        except EngineUnavailable:
            raise
        except SluiceError as exc:
            return _Ending(Outcome.error, error=f"could not prepare the step's inputs: {exc}")
        # Staged: workspace and /sluice files are in already; only inputs and checkpoints
        # remain (often nothing: no archive call). Else all of it, as one stream.
        puts = [] if staged is not None else self._ahead_tars(prepared, work)
        puts += [late] if late is not None else []
        if staged is not None:
            pending.clear()  # the runtime removes it from here on
        outputs_tar = work / "outputs.tar"
        result = self.runtime.run(
            self._spec(prepared, number),
            # Outputs matter only when the attempt succeeded, checkpoints only when it did not
            # (a succeeded step is reused, never resumed): one archive call either way.
            Transfer(
                put=puts,
                fetch={"/sluice/outputs": outputs_tar},
                fetch_on_failure={"/sluice/checkpoints": work / "checkpoints.tar"},
            ),
            on_log=on_log,
            cancel=stop,
            staged=staged.handle if staged is not None else None,
        )
        on_log.close()
        end = self._ending(step, result, work)
        if end.outcome is Outcome.failed and step.network == "none" and end.error:
            hint = network_hint(step, bool(offline))
            if hint:
                end = dataclasses.replace(end, error=f"{end.error}; {hint}")
        return end

    def _ending(self, step: ResolvedStep, result: ContainerResult, work: Path) -> _Ending:
        """What the container's end means for the attempt (outputs stored when it succeeded)."""
        if result.error:
            return _Ending(Outcome.error, result, result.error)
        checkpoints = None
        if work / "checkpoints.tar" in result.fetched.values():
            checkpoints = self._save_checkpoints(
                work / "checkpoints.tar", self.step_dir(step.name) / "checkpoints"
            )
        if result.cancelled:
            return _Ending(Outcome.cancelled, result, checkpoints=checkpoints)
        if result.timed_out:
            why = f"timed out after {step.timeout:g} s"
            return _Ending(Outcome.timed_out, result, why, checkpoints=checkpoints)
        if result.oom_killed:
            why = f"killed: out of memory (limit {step.resources.memory} bytes)"
            return _Ending(Outcome.oom_killed, result, why, checkpoints=checkpoints)
        if result.exit_code != 0:
            why = f"exited with code {result.exit_code}"
            return _Ending(Outcome.failed, result, why, checkpoints=checkpoints)
        if result.fetch_error:
            return _Ending(Outcome.failed, result, result.fetch_error)
        try:
            outputs, metrics = self._collect(
                work / "outputs.tar", result, self.step_dir(step.name) / "outputs"
            )
        except EngineUnavailable:
            raise
        except SluiceError as exc:
            return _Ending(Outcome.failed, result, str(exc))
        return _Ending(Outcome.succeeded, result, outputs=outputs, metrics=metrics)

    def _spec(self, prepared: Prepared, number: int) -> ContainerSpec:
        step = prepared.step
        env = {
            "SLUICE_RUN_ID": self.run_id,
            "SLUICE_PIPELINE": self.pipeline,
            "SLUICE_STEP": step.name,
            "SLUICE_ATTEMPT": str(number),
            "SLUICE_CONFIG": "/sluice/config.json",
            "SLUICE_INPUTS": "/sluice/inputs",
            "SLUICE_OUTPUTS": "/sluice/outputs",
            **({"SLUICE_INSTANCE": step.name} if step.instance_of else {}),
            **prepared.env,
            **{name: self.secrets[name] for name in step.secrets},
        }
        resources = step.resources
        assert prepared.image_id is not None
        return ContainerSpec(
            image=prepared.image_id,
            command=prepared.argv,
            env=env,
            labels={
                LABEL_RUN: self.run_id,
                LABEL_PIPELINE: self.pipeline,
                LABEL_STEP: step.name,
                LABEL_ATTEMPT: str(number),
                LABEL_ENGINE: f"{socket.gethostname()}:{os.getpid()}",
            },
            timeout=step.timeout,
            grace=self.grace_s,
            network=step.network,
            nano_cpus=int(resources.cpus * 1e9) if resources.cpus else None,
            mem_limit=resources.memory,
            gpus=resources.gpus,
            pids_limit=resources.pids or DEFAULT_PIDS,
            capabilities=tuple(step.capabilities),
        )

    def stage(self, prepared: Prepared, number: int) -> Staged | None:
        """Make attempt `number`'s container ahead, with the workspace and /sluice files in
        it (everything but inputs and checkpoints); None when it cannot be made now."""
        step = prepared.step
        if prepared.image_id is None or self.cancel.is_set():
            return None
        if any(name not in self.secrets for name in step.secrets):
            return None  # the attempt says which one is missing
        work = self.step_dir(step.name) / f"attempt-{number}"
        work.mkdir(parents=True, exist_ok=True)
        spec = self._spec(prepared, number)
        handle = self.runtime.stage(spec, self._ahead_tars(prepared, work))
        return Staged(handle, spec, prepared.config, number) if handle is not None else None

    def discard(self, staged: Staged) -> None:
        """Remove a staged container (its step ended without it, or it no longer fits)."""
        # a daemon that went away took it with it; else `sluice gc` will
        with contextlib.suppress(SluiceError):
            self.runtime.discard(staged.handle)

    def _fits(self, staged: Staged, prepared: Prepared, number: int) -> bool:
        return (
            staged.number == number
            and staged.config == prepared.config
            and prepared.image_id is not None
            and staged.spec == self._spec(prepared, number)
        )

    def _ahead_tars(self, prepared: Prepared, work: Path) -> list[Path]:
        return files_in.ahead_tars(prepared, self.workspace, self.params, self.baseline_json, work)

    def _late_tar(
        self, prepared: Prepared, inputs: Mapping[str, Mapping[str, ArtifactPointer]], out: Path
    ) -> Path | None:
        checkpoints = self.step_dir(prepared.step.name) / "checkpoints"
        return files_in.late_tar(prepared.step, inputs, checkpoints, self.materialize, out)

    def _keep_checkpoints(self, archive: Path, dest: Path) -> bool:
        fresh = dest.with_name("checkpoints.new")
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir(parents=True)
        try:
            archives.extract_tar(archive, fresh, strip="checkpoints")
        except SluiceError:
            shutil.rmtree(fresh, ignore_errors=True)
            return False  # unsafe checkpoints are dropped: the next attempt starts clean
        shutil.rmtree(dest, ignore_errors=True)
        fresh.rename(dest)
        return True

    def _save_checkpoints(self, archive: Path, dest: Path) -> ArtifactPointer | None:
        """Keep them for the next attempt here, and in the store for a later `sluice retry`."""
        if not self._keep_checkpoints(archive, dest):
            return None
        try:
            return self.store.put_file(archive)
        except EngineUnavailable:
            raise  # a store that cannot be written stops the run
        except SluiceError:
            return None

    def _collect(
        self, archive: Path, result: ContainerResult, dest: Path
    ) -> tuple[dict[str, ArtifactPointer], dict[str, float | int | bool]]:
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        written: list[Path] = []
        if archive in result.fetched.values():
            try:
                written = archives.extract_tar(archive, dest, strip="outputs")
            except SluiceError:
                shutil.rmtree(dest, ignore_errors=True)
                raise
        for rel in written:
            if not is_utf8(rel.as_posix()):  # a manifest is UTF-8: refused, never altered
                raise SluiceError(
                    f"output name '{printable(rel.as_posix())}' is not UTF-8: rename it"
                )
            name = rel.as_posix()
            why = names.problem(name, nested=True)
            if why is None and self.mask(name) != name:
                why = "contains the value of a secret"  # masked, it would name no file
            if why is not None:  # (else it could not be read back from the results branch)
                raise SluiceError(f"output {names.shown(self.mask(name))} {why}: rename it")
        metrics = read_metrics(dest / "metrics.json", self.mask)
        files = [
            rel
            for rel in sorted(written)
            if (dest / rel).is_file() and not (dest / rel).is_symlink()
        ]
        stored = self.store.put_files([dest / rel for rel in files])  # batched on S3
        outputs = {rel.as_posix(): pointer for rel, pointer in zip(files, stored, strict=True)}
        (dest / COMPLETE).touch()
        return outputs, metrics
