"""The ports: what run/ and app/ need from the world outside, as Protocols (and their types).

ContainerRuntime (adapters: docker_runtime, fake_runtime), ArtifactStore (artifacts),
Reporter (console; NullReporter here), ResultsBranch (git_results, memory_results), Clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from engine.core.graph import Dag
from engine.core.manifest import ArtifactPointer, Attempt, RunManifest, StepRecord
from engine.errors import EngineUnavailable, SluiceError

LABEL_RUN = "sluice.run-id"
LABEL_PIPELINE = "sluice.pipeline"
LABEL_STEP = "sluice.step"
LABEL_ATTEMPT = "sluice.attempt"
LABEL_ENGINE = "sluice.engine"  # "<hostname>:<pid>" of the engine that made it, for `sluice gc`


class ImageMissing(SluiceError):
    """An image is not present locally and could not be pulled or built."""


class RuntimeUnavailable(EngineUnavailable):
    """The container runtime (the Docker daemon) does not answer."""


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one attempt's container, and how long it may run.

    At `timeout` seconds it gets SIGTERM, then SIGKILL after `grace` seconds.
    """

    image: str
    command: list[str] | None
    env: dict[str, str]
    labels: dict[str, str]
    timeout: float
    grace: float = 5.0
    working_dir: str = "/workspace"
    network: str = "none"
    nano_cpus: int | None = None
    mem_limit: int | None = None
    gpus: int = 0  # -1: all
    pids_limit: int | None = None  # None: no limit
    capabilities: tuple[str, ...] | None = None  # all it keeps (others dropped); None: Docker's


@dataclass(frozen=True)
class BuildRequest:
    """An image to build from a folder of the repository, tagged by its content."""

    context: Path
    dockerfile: str
    tag: str
    args: dict[str, str] = field(default_factory=dict)
    target: str | None = None


@dataclass(frozen=True)
class Transfer:
    """Archives moved through the Docker API around one attempt.

    `put`: tar files extracted at `/` in the container before it starts (sent as one
    stream: each archive call on a stopped container mounts its file system, ~100 ms).
    `fetch`: container path -> local file the raw tar stream of that path is written to
    after the container exits with code 0 (a path the container lacks is skipped);
    `fetch_on_failure`: the same, used instead when it exits otherwise.
    """

    put: list[Path] = field(default_factory=list)
    fetch: dict[str, Path] = field(default_factory=dict)
    fetch_on_failure: dict[str, Path] = field(default_factory=dict)
    max_fetch_bytes: int = 2 * 1024**3


@dataclass(frozen=True)
class ContainerResult:
    """How a container ended. A non-zero exit is a result, not an exception."""

    exit_code: int | None
    timed_out: bool = False
    oom_killed: bool = False
    cancelled: bool = False
    error: str | None = None  # the engine could not create or start it
    max_memory_bytes: int | None = None
    cpu_s: float | None = None
    fetched: dict[str, Path] = field(default_factory=dict)  # the fetch entries that exist
    fetch_error: str | None = None  # a fetch over the size limit, or a broken stream


LogSink = Callable[[str], None]


class ContainerRuntime(Protocol):
    """Runs one container to completion; implementations: docker (real), fake (tests)."""

    def image_id(self, ref: str) -> str:
        """The local image id (`sha256:...`) of `ref`, pulling where a registry answers.

        Raises ImageMissing with a message that says how to get the image.
        """
        ...

    def build_image(self, build: BuildRequest) -> str:
        """Build `build.context` as `build.tag` unless that tag exists; return its image id."""
        ...

    def stage(self, spec: ContainerSpec, put: list[Path]) -> str | None:
        """Create the container of `spec` and extract the `put` archives in it, not started:
        the work of `run` that can be done while the step's upstream steps still run.

        Returns a handle for `run(spec, ..., staged=handle)`, or None when it could not (the
        `run` without it then reports why). Every handle goes to `run` or to `discard`.
        """
        ...

    def discard(self, staged: str) -> None:
        """Remove a staged container whose step will not run it."""
        ...

    def run(
        self,
        spec: ContainerSpec,
        transfer: Transfer,
        *,
        on_log: LogSink,
        cancel: threading.Event,
        staged: str | None = None,
    ) -> ContainerResult:
        """Create, copy in, start, stream logs, wait (at most `spec.timeout`), copy out, remove.

        With `staged` (from `stage(spec, ...)`, the same spec), that container is used: only
        `transfer.put` is added, and none of it is copied when that list is empty.
        `on_log` gets each line of output as it comes. When `cancel` is set (and `kill_run`
        or `kill_step` is called) it returns promptly, cancelled. The container is always
        removed before this returns.
        """
        ...

    def kill_run(self, run_id: str) -> int:
        """Kill and remove every container labelled with this run id; return how many."""
        ...

    def kill_step(self, run_id: str, step: str) -> int:
        """Kill and remove the containers of one step of a run (labelled with both), the
        rest of the run untouched; return how many. As with `kill_run`, the caller sets the
        `cancel` its attempt's `run` was given first: that `run` then returns cancelled."""
        ...

    def gc(self, *, everything: bool = False) -> list[str]:
        """Remove containers whose engine is gone (all sluice containers with `everything`)."""
        ...


# -- the artifact store and run progress ------------------------------------------------


class ArtifactStore(Protocol):
    """Content-addressed (sha256) storage of step outputs; implementation: adapters/artifacts.py.

    Raises EngineUnavailable when the store cannot be written: that stops the run.
    """

    def put_file(self, path: Path) -> ArtifactPointer:
        """Store a file (unless identical bytes are there already) and return its pointer."""
        ...

    def has(self, pointer: ArtifactPointer, *, verify: bool = False) -> bool:
        """Whether the object is there with the right size (and, with `verify`, bytes)."""
        ...

    def get_file(self, pointer: ArtifactPointer, dest: Path) -> None:
        """Copy an object to `dest`, checking its sha256 (a SluiceError when it cannot)."""
        ...

    def put_files(self, paths: Sequence[Path]) -> list[ArtifactPointer]:
        """`put_file` for many files (batched where the store can), pointers in order."""
        ...

    def get_files(self, wanted: Sequence[tuple[ArtifactPointer, Path]]) -> None:
        """`get_file` for many (pointer, dest) pairs (batched where the store can)."""
        ...


class Reporter(Protocol):
    """Receives run events; `log` may be called from several threads at once."""

    def run_started(self, manifest: RunManifest, dag: Dag) -> None: ...
    def step_changed(self, name: str, record: StepRecord) -> None: ...
    def attempt_started(self, name: str, number: int) -> None: ...
    def retrying(self, name: str, attempt: Attempt, delay: float) -> None: ...
    def log(self, step: str, line: str) -> None: ...
    def note(self, text: str) -> None: ...
    def run_finished(self, manifest: RunManifest) -> None: ...


class NullReporter:
    """Says nothing (library use, tests, `explain`)."""

    def run_started(self, manifest: RunManifest, dag: Dag) -> None:
        pass

    def step_changed(self, name: str, record: StepRecord) -> None:
        pass

    def attempt_started(self, name: str, number: int) -> None:
        pass

    def retrying(self, name: str, attempt: Attempt, delay: float) -> None:
        pass

    def log(self, step: str, line: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def run_finished(self, manifest: RunManifest) -> None:
        pass


# -- the results branch -----------------------------------------------------------------


Changes = Mapping[str, bytes | None]  # path -> content; None deletes


class ResultsBranch(Protocol):
    """The results branch: files read at its tip (or at a commit), changed only by commits
    that compare-and-swap its tip, so that concurrent writers never lose each other's work.
    Implementations: git (adapters/git_results.py), in memory (adapters/memory_results.py).

    Paths are `/`-separated and relative to the branch root (see core/layout.py).

    The tip is bounded (adapters/results_archive.py): with `keep_runs`, old runs move to
    `archive/` after a pushed record, and `manifest`, `log`, `runs`, and `read`/`list_dir`
    of a path inside a run's folder still find them, at the commit that holds them.
    """

    branch: str

    @property
    def pushes(self) -> bool:
        """Whether commits also go to a remote (so a fetch first sees other runners')."""
        ...

    def tip(self) -> str | None:
        """The commit reads see: the local branch, else the remote one; None when empty."""
        ...

    def read(self, path: str, *, at: str | None = None) -> bytes | None:
        """The file at `path` on the tip (or at commit `at`), None when absent."""
        ...

    def list_dir(self, path: str, *, at: str | None = None) -> list[str]:
        """Names of the entries of folder `path` ([] when absent), in git's order."""
        ...

    def commit(self, changes: Changes, message: str, *, expect_absent: Sequence[str] = ()) -> str:
        """Commit the changes onto the tip; returns the commit.

        `layout.run_record` gives the changes that record a run.

        Raises ClaimLost when a path of `expect_absent` exists at the tip (here or on the
        remote): of writers racing to create one path, exactly one succeeds.
        """
        ...

    def runs(self, pipeline: str | None = None, limit: int = 20) -> list[RunManifest]:
        """The newest `limit` runs, of one pipeline or of all, newest first."""
        ...

    def manifest(self, run_id: str) -> RunManifest | None:
        """The manifest of run `run_id`, whichever pipeline it belongs to."""
        ...

    def log(self, run_id: str, step: str, attempt: int) -> bytes | None:
        """The log of one attempt of a step, None when it was not recorded."""
        ...

    def fetch(self) -> None:
        """Take in the remote's commits (fast-forward only); nothing without a remote."""
        ...

    def catch_up(self) -> None:
        """Fetch when results are pushed, to decide on the newest record; offline, go on."""
        ...

    def close(self) -> None:
        """Release what reading holds open (a git process)."""
        ...


# -- time --------------------------------------------------------------------------------


class Clock(Protocol):
    """Where the engine reads the time, so that tests can set it."""

    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...


class SystemClock:
    """The machine's clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)
