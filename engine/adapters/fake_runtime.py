"""An in-memory ContainerRuntime for testing the executor's decisions without Docker."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from engine.local import archives
from engine.ports import (
    LABEL_ATTEMPT,
    LABEL_RUN,
    LABEL_STEP,
    BuildRequest,
    ContainerResult,
    ContainerSpec,
    ImageMissing,
    LogSink,
    Transfer,
)

OUTPUTS = "/sluice/outputs"


@dataclass(frozen=True)
class FakeOutcome:
    """What one scripted attempt does.

    `files`: container path -> content the step writes; a relative path is taken
    under /sluice/outputs. `block`: run until `kill_run`/`kill_step` (or the timeout) ends it.
    """

    exit_code: int = 0
    logs: str = ""
    files: Mapping[str, bytes] = field(default_factory=dict)
    oom_killed: bool = False
    error: str | None = None
    max_memory_bytes: int | None = None
    cpu_s: float | None = None
    block: bool = False


Script = Callable[[ContainerSpec, int, dict[str, bytes]], FakeOutcome]


class FakeRuntime:
    """Plays scripted outcomes per step name, with real tar files in and out.

    `steps` maps a step name (label `sluice.step`) to a function of (spec, attempt,
    files put into the container by absolute path) or to a list of outcomes, one per
    attempt. Steps not named there get `default`; with `default=None` they fail the test.
    """

    def __init__(
        self,
        steps: Mapping[str, Script | Sequence[FakeOutcome]] | None = None,
        *,
        default: FakeOutcome | None = FakeOutcome(),  # frozen: one shared default is safe
        missing_images: Sequence[str] = (),
    ) -> None:
        self.steps = dict(steps or {})
        self.default = default
        self.missing_images = set(missing_images)
        self.calls: list[ContainerSpec] = []
        self.builds: list[str] = []
        self.killed_runs: list[str] = []
        self.killed_steps: list[tuple[str, str]] = []  # (run id, step), as kill_step was called
        self._lock = threading.Lock()
        self._running: dict[str, list[tuple[str, threading.Event]]] = {}  # run -> (step, kill)
        self.staged: dict[str, tuple[ContainerSpec, list[Path]]] = {}  # not yet run or discarded
        self.staged_runs = 0  # runs that used a staged container
        self.discarded: list[str] = []
        self._handles = 0

    def image_id(self, ref: str) -> str:
        if ref in self.missing_images:
            raise ImageMissing(f"image {ref!r} is missing (fake)")
        return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()

    def build_image(self, build: BuildRequest) -> str:
        self.builds.append(build.tag)
        self.missing_images.discard(build.tag)
        return self.image_id(build.tag)

    def stage(self, spec: ContainerSpec, put: list[Path]) -> str | None:
        if spec.image in self.missing_images:
            return None
        with self._lock:
            self._handles += 1
            handle = f"staged-{self._handles}"
            # the archives are read at `run`, as docker would have them: copied now
            copies = []
            for index, path in enumerate(put):
                copy = path.with_name(f"{path.name}.{handle}.{index}")
                copy.write_bytes(path.read_bytes())
                copies.append(copy)
            self.staged[handle] = (spec, copies)
        return handle

    def discard(self, staged: str) -> None:
        with self._lock:
            if staged in self.staged:  # else removed already (kill_run), as docker answers
                self.discard_locked(staged)

    def run(
        self,
        spec: ContainerSpec,
        transfer: Transfer,
        *,
        on_log: LogSink,
        cancel: threading.Event,
        staged: str | None = None,
    ) -> ContainerResult:
        if staged is not None:
            with self._lock:
                found = self.staged.pop(staged, None)
                self.staged_runs += 1
            if found is None:  # kill_run removed it
                if cancel.is_set():
                    return ContainerResult(exit_code=None, cancelled=True)
                return ContainerResult(exit_code=None, error="the container was removed")
            made, copies = found
            if made != spec:
                raise AssertionError(f"FakeRuntime: {staged} was staged for another spec")
            try:
                transfer = dataclasses.replace(transfer, put=[*copies, *transfer.put])
                return self._run(spec, transfer, on_log=on_log, cancel=cancel)
            finally:
                for copy in copies:
                    copy.unlink(missing_ok=True)
        return self._run(spec, transfer, on_log=on_log, cancel=cancel)

    def _run(
        self, spec: ContainerSpec, transfer: Transfer, *, on_log: LogSink, cancel: threading.Event
    ) -> ContainerResult:
        step = spec.labels.get(LABEL_STEP, "")
        with self._lock:
            self.calls.append(spec)
            attempt = int(
                spec.labels.get(LABEL_ATTEMPT)
                or sum(1 for call in self.calls if call.labels.get(LABEL_STEP, "") == step)
            )
        if cancel.is_set():
            return ContainerResult(exit_code=None, cancelled=True)
        if spec.image in self.missing_images:
            return ContainerResult(exit_code=None, error=f"image {spec.image!r} not found (fake)")
        files: dict[str, bytes] = {}
        dirs: set[str] = set()
        if transfer.put:  # read as docker gets it: one concatenated stream
            _read_tar(io.BytesIO(b"".join(archives.concatenated(transfer.put))), files, dirs)
        outcome = self._outcome(step, spec, attempt, dict(files))
        if outcome.error is not None:
            return ContainerResult(exit_code=None, error=outcome.error)
        killed = threading.Event()
        run_id = spec.labels.get(LABEL_RUN, "")
        with self._lock:  # running from here on, so the logs below mean "started"
            self._running.setdefault(run_id, []).append((step, killed))
        for line in outcome.logs.splitlines(keepends=True):
            on_log(line)
        # kill_run/kill_step may have come before the attempt was registered: cancel says so
        ended = not outcome.block or cancel.is_set() or killed.wait(spec.timeout)
        with self._lock:
            self._running[run_id].remove((step, killed))
        timed_out = not ended
        if cancel.is_set():
            return ContainerResult(exit_code=None, cancelled=True)
        if killed.is_set():  # killed without a cancel, like a stray `docker rm`
            return ContainerResult(exit_code=None, error="the container was removed while running")
        for path, data in outcome.files.items():
            files[str(PurePosixPath(OUTPUTS, path))] = data
        succeeded = outcome.exit_code == 0 and not timed_out and not outcome.oom_killed
        fetched, fetch_error = _fetch(files, dirs, transfer, succeeded)
        return ContainerResult(
            exit_code=143 if timed_out else outcome.exit_code,
            timed_out=timed_out,
            oom_killed=outcome.oom_killed,
            max_memory_bytes=outcome.max_memory_bytes,
            cpu_s=outcome.cpu_s,
            fetched=fetched,
            fetch_error=fetch_error,
        )

    def kill_run(self, run_id: str) -> int:
        self.killed_runs.append(run_id)
        return self._kill(run_id, None)

    def kill_step(self, run_id: str, step: str) -> int:
        self.killed_steps.append((run_id, step))
        return self._kill(run_id, step)

    def _kill(self, run_id: str, step: str | None) -> int:
        """End the run's running attempts and remove its staged containers (of `step` only)."""
        with self._lock:
            running = [k for s, k in self._running.get(run_id, []) if step in (None, s)]
            staged = [
                h
                for h, (spec, _) in self.staged.items()
                if spec.labels.get(LABEL_RUN) == run_id
                and step in (None, spec.labels.get(LABEL_STEP))
            ]
            for handle in staged:  # docker removes them too
                self.discard_locked(handle)
        for killed in running:
            killed.set()
        return len(running) + len(staged)

    def discard_locked(self, staged: str) -> None:
        _, copies = self.staged.pop(staged)
        self.discarded.append(staged)
        for copy in copies:
            copy.unlink(missing_ok=True)

    def gc(self, *, everything: bool = False) -> list[str]:
        return []

    def _outcome(
        self, step: str, spec: ContainerSpec, attempt: int, files: dict[str, bytes]
    ) -> FakeOutcome:
        script = self.steps.get(step)
        if script is None:
            if self.default is None:
                raise AssertionError(f"FakeRuntime: no outcome scripted for step {step!r}")
            return self.default
        if callable(script):
            return script(spec, attempt, files)
        if attempt > len(script):
            raise AssertionError(
                f"FakeRuntime: step {step!r} ran {attempt} times, scripted {len(script)}"
            )
        return script[attempt - 1]


def _read_tar(archive: io.BytesIO, files: dict[str, bytes], dirs: set[str]) -> None:
    """Add the files and folders of a tar put at `/`, by absolute container path."""
    with tarfile.open(fileobj=archive) as tar:
        for member in tar:
            path = "/" + PurePosixPath(member.name).as_posix()
            handle = tar.extractfile(member) if member.isreg() else None
            if handle is not None:
                files[path] = handle.read()
            elif member.isdir():
                dirs.add(path)


def _fetch(
    files: dict[str, bytes], dirs: set[str], transfer: Transfer, succeeded: bool
) -> tuple[dict[str, Path], str | None]:
    """Write each fetched path as docker does: a tar whose members start at its basename."""
    fetched: dict[str, Path] = {}
    total = 0
    wanted = transfer.fetch if succeeded else transfer.fetch_on_failure
    for path, local in wanted.items():
        root = PurePosixPath(path)
        inside = {p: data for p, data in files.items() if PurePosixPath(p).is_relative_to(root)}
        folders = {d for d in dirs if PurePosixPath(d).is_relative_to(root)}
        if not inside and not folders:
            continue  # docker answers 404: the path does not exist
        total += sum(len(data) for data in inside.values())
        if total > transfer.max_fetch_bytes:
            return fetched, f"{path}: more than {transfer.max_fetch_bytes} bytes to copy out"
        local.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(local, mode="w") as tar:
            added: set[PurePosixPath] = set()
            for p in sorted([*inside, *folders]):
                name = PurePosixPath(root.name, PurePosixPath(p).relative_to(root))
                parents = [name, *name.parents][:-1] if p in folders else name.parents[:-1]
                for folder in reversed(parents):
                    if folder not in added:
                        added.add(folder)
                        tar.addfile(_info(folder.as_posix(), tarfile.DIRTYPE, 0o755))
                if p in inside:
                    info = _info(name.as_posix(), tarfile.REGTYPE, 0o644)
                    info.size = len(inside[p])
                    tar.addfile(info, io.BytesIO(inside[p]))
        fetched[path] = local
    return fetched, None


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    return info
