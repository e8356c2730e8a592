"""One contract for every ContainerRuntime: the fake (adapters/fake_runtime.py) and Docker.

Each case describes what a step does once (a `Behaviour`); the fake plays it from a script,
Docker runs it as a shell script in the busybox test image. Both must answer alike: image ids,
exit codes and logs, files in and out, timeouts, kill_run, kill_step, labels, gc.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import docker
import pytest
from conftest import poll

from engine.adapters.docker_runtime import DockerRuntime
from engine.adapters.fake_runtime import FakeOutcome, FakeRuntime, Script
from engine.local.archives import TarBuilder, extract_tar
from engine.ports import (
    LABEL_ATTEMPT,
    LABEL_PIPELINE,
    LABEL_RUN,
    LABEL_STEP,
    ContainerResult,
    ContainerRuntime,
    ContainerSpec,
    ImageMissing,
    Transfer,
)

OUTPUTS = "/sluice/outputs"
MISSING = "sluice-test/no-such-image:0"


@dataclass(frozen=True)
class Behaviour:
    """What one attempt does: print `logs`, copy container files into outputs, write
    `writes` (relative to /sluice/outputs), then block (until killed or timed out) or exit."""

    exit_code: int = 0
    logs: tuple[str, ...] = ()
    copies: dict[str, str] = field(default_factory=dict)  # container path -> output path
    writes: dict[str, str] = field(default_factory=dict)  # output path -> text
    block: bool = False


def shell(behaviour: Behaviour) -> str:
    parts = [f"echo {shlex.quote(line)}" for line in behaviour.logs]
    outputs = {**{dest: None for dest in behaviour.copies.values()}, **behaviour.writes}
    for dest in outputs:
        parts.append(f"mkdir -p {shlex.quote(str(PurePosixPath(OUTPUTS, dest).parent))}")
    for source, dest in behaviour.copies.items():
        parts.append(f"cp {shlex.quote(source)} {shlex.quote(f'{OUTPUTS}/{dest}')}")
    for dest, text in behaviour.writes.items():
        parts.append(f"printf %s {shlex.quote(text)} > {shlex.quote(f'{OUTPUTS}/{dest}')}")
    if behaviour.block:
        parts.append("sleep 600")
    parts.append(f"exit {behaviour.exit_code}")
    return "; ".join(parts)


def script(behaviour: Behaviour) -> Script:
    def play(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        written = {dest: files[source] for source, dest in behaviour.copies.items()}
        written |= {dest: text.encode() for dest, text in behaviour.writes.items()}
        return FakeOutcome(
            exit_code=behaviour.exit_code,
            logs="".join(f"{line}\n" for line in behaviour.logs),
            files=written,
            block=behaviour.block,
        )

    return play


class Harness:
    """A runtime plus how to make a spec that does a Behaviour on it."""

    name: str
    runtime: ContainerRuntime
    image: str
    short: float  # a timeout that surely ends a blocked attempt, and soon

    def __init__(self) -> None:
        self._count = 0

    def spec(self, behaviour: Behaviour, run_id: str, *, timeout: float = 60) -> ContainerSpec:
        self._count += 1
        step = f"step-{self._count}"
        labels = {
            LABEL_RUN: run_id,
            LABEL_PIPELINE: "contract",
            LABEL_STEP: step,
            LABEL_ATTEMPT: "1",
        }
        self.prepare(step, behaviour)
        command = ["sh", "-c", shell(behaviour)]
        return ContainerSpec(self.image, command, env={}, labels=labels, timeout=timeout, grace=1.0)

    def prepare(self, step: str, behaviour: Behaviour) -> None:
        pass

    def labels_seen(self, run_id: str) -> list[dict[str, str]]:
        """The labels of the run's containers the runtime made (Docker: those present)."""
        raise NotImplementedError

    def present(self, run_id: str) -> int:
        """How many of the run's containers exist (the fake: attempts still running)."""
        raise NotImplementedError

    def gc_only(self, run_id: str) -> None:
        """Scope gc() to this run: other sessions may share a Docker daemon."""


class FakeHarness(Harness):
    name = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.fake = FakeRuntime(default=None, missing_images=[MISSING])
        self.runtime = self.fake
        self.image = "sluice-test/fake:1"
        self.short = 0.05

    def prepare(self, step: str, behaviour: Behaviour) -> None:
        self.fake.steps[step] = script(behaviour)

    def labels_seen(self, run_id: str) -> list[dict[str, str]]:
        return [dict(c.labels) for c in self.fake.calls if c.labels.get(LABEL_RUN) == run_id]

    def present(self, run_id: str) -> int:
        staged = [spec for spec, _ in self.fake.staged.values() if spec.labels[LABEL_RUN] == run_id]
        return len(self.fake._running.get(run_id, [])) + len(staged)


class DockerHarness(Harness):
    name = "docker"

    def __init__(self, client: docker.DockerClient, image: str) -> None:
        super().__init__()
        self.client = client
        self.docker = DockerRuntime(client)
        self.runtime = self.docker
        self.image = image
        self.short = 1.0

    def labels_seen(self, run_id: str) -> list[dict[str, str]]:
        listed = self.client.containers.list(
            all=True, filters={"label": f"{LABEL_RUN}={run_id}"}, sparse=True
        )
        return [dict(c.attrs.get("Labels") or {}) for c in listed]

    def present(self, run_id: str) -> int:
        return len(self.labels_seen(run_id))

    def gc_only(self, run_id: str) -> None:
        own = self.docker._sluice_containers
        self.docker._sluice_containers = lambda _: own(run_id)  # type: ignore[method-assign]


@pytest.fixture(params=["fake", pytest.param("docker", marks=pytest.mark.docker)])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "fake":
        yield FakeHarness()
        return
    image = request.getfixturevalue("busybox_image")  # fails the test if it leaves containers
    yield DockerHarness(request.getfixturevalue("docker_client"), image)


@pytest.fixture
def rid(run_id: str) -> str:
    return run_id


def run(
    harness: Harness,
    spec: ContainerSpec,
    transfer: Transfer | None = None,
    cancel: threading.Event | None = None,
    lines: list[str] | None = None,
) -> ContainerResult:
    sink = lines if lines is not None else []
    return harness.runtime.run(
        spec, transfer or Transfer(), on_log=sink.append, cancel=cancel or threading.Event()
    )


class Background:
    """An attempt running on another thread: its log lines so far, and its result."""

    def __init__(self, harness: Harness, spec: ContainerSpec) -> None:
        self.cancel = threading.Event()
        self.lines: list[str] = []
        self.results: list[ContainerResult] = []
        self.thread = threading.Thread(
            target=lambda: self.results.append(
                run(harness, spec, cancel=self.cancel, lines=self.lines)
            ),
            daemon=True,
        )
        self.thread.start()

    def started(self) -> None:
        poll(lambda: self.lines, 30, "the attempt's first log line")

    def result(self) -> ContainerResult:
        self.thread.join(30)
        assert not self.thread.is_alive(), "the attempt did not return"
        return self.results[0]


# --- the contract ----------------------------------------------------------------------------


def test_image_ids_are_stable_and_a_missing_image_raises(harness: Harness) -> None:
    first = harness.runtime.image_id(harness.image)
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    assert harness.runtime.image_id(harness.image) == first
    with pytest.raises(ImageMissing, match=MISSING):
        harness.runtime.image_id(MISSING)


def test_exit_code_and_logs_line_by_line(harness: Harness, rid: str) -> None:
    lines: list[str] = []
    result = run(harness, harness.spec(Behaviour(3, ("one", "two")), rid), lines=lines)
    assert result.exit_code == 3
    assert not (result.timed_out or result.oom_killed or result.cancelled)
    assert result.error is None and result.fetch_error is None
    assert result.fetched == {}
    assert lines == ["one\n", "two\n"]
    ok = run(harness, harness.spec(Behaviour(), rid))
    assert ok.exit_code == 0 and ok.error is None


def test_files_go_in_and_outputs_come_out(harness: Harness, rid: str, tmp_path: Path) -> None:
    put = tmp_path / "put.tar"
    with TarBuilder(put) as tar:
        tar.add_bytes("sluice/inputs/in.txt", b"from the host")
    out, absent = tmp_path / "out.tar", tmp_path / "absent.tar"
    transfer = Transfer(put=[put], fetch={OUTPUTS: out, "/sluice/nothing-here": absent})
    behaviour = Behaviour(
        copies={"/sluice/inputs/in.txt": "copy.txt"}, writes={"made/deep.txt": "deep"}
    )
    result = run(harness, harness.spec(behaviour, rid), transfer)
    assert result.exit_code == 0
    assert result.fetched == {OUTPUTS: out}  # a path the container lacks is skipped
    assert not absent.exists()
    dest = tmp_path / "dest"
    assert extract_tar(out, dest, strip="outputs") == [Path("copy.txt"), Path("made/deep.txt")]
    assert (dest / "copy.txt").read_bytes() == b"from the host"
    assert (dest / "made" / "deep.txt").read_text() == "deep"


def test_a_failed_attempt_fetches_what_failure_asks_for(
    harness: Harness, rid: str, tmp_path: Path
) -> None:
    kept, wanted = tmp_path / "kept.tar", tmp_path / "wanted.tar"
    transfer = Transfer(fetch={OUTPUTS: wanted}, fetch_on_failure={OUTPUTS: kept})
    result = run(harness, harness.spec(Behaviour(1, writes={"half.txt": "h"}), rid), transfer)
    assert result.exit_code == 1
    assert result.fetched == {OUTPUTS: kept}
    assert not wanted.exists()
    assert extract_tar(kept, tmp_path / "d", strip="outputs") == [Path("half.txt")]


def test_a_timeout_ends_the_attempt_as_timed_out(harness: Harness, rid: str) -> None:
    lines: list[str] = []
    spec = harness.spec(Behaviour(logs=("waiting",), block=True), rid, timeout=harness.short)
    result = run(harness, spec, lines=lines)
    assert result.timed_out
    assert result.exit_code is not None and result.exit_code != 0
    assert not result.cancelled and result.error is None
    assert lines == ["waiting\n"]
    assert harness.present(rid) == 0  # removed before run() returned


def test_kill_run_ends_that_run_only(harness: Harness, rid: str) -> None:
    other = f"{rid}-other"
    mine = Background(harness, harness.spec(Behaviour(logs=("up",), block=True), rid))
    theirs = Background(harness, harness.spec(Behaviour(logs=("up",), block=True), other))
    mine.started()
    theirs.started()
    mine.cancel.set()  # the executor's order: cancel, then kill the run's containers
    assert harness.runtime.kill_run(rid) == 1
    ended = mine.result()
    assert ended.cancelled and ended.exit_code is None
    assert theirs.thread.is_alive() and theirs.results == []
    theirs.cancel.set()
    assert harness.runtime.kill_run(other) == 1
    assert theirs.result().cancelled
    assert harness.runtime.kill_run(rid) == 0  # nothing left to kill
    assert harness.present(rid) == harness.present(other) == 0


def test_kill_step_ends_that_step_of_the_run_only(harness: Harness, rid: str) -> None:
    mine_spec = harness.spec(Behaviour(logs=("up",), block=True), rid)
    mine = Background(harness, mine_spec)
    sibling_spec = harness.spec(Behaviour(logs=("up",), block=True), rid)
    sibling = Background(harness, sibling_spec)
    mine.started()
    sibling.started()
    mine.cancel.set()  # the executor's order (fail_fast): the step's cancel, then the kill
    assert harness.runtime.kill_step(rid, mine_spec.labels[LABEL_STEP]) == 1
    ended = mine.result()
    assert ended.cancelled and ended.exit_code is None and ended.error is None
    assert sibling.thread.is_alive() and sibling.results == []
    assert harness.present(rid) == 1
    assert harness.runtime.kill_step(rid, mine_spec.labels[LABEL_STEP]) == 0  # gone already
    other_run = f"{rid}-other"
    assert harness.runtime.kill_step(other_run, sibling_spec.labels[LABEL_STEP]) == 0
    assert sibling.thread.is_alive()
    sibling.cancel.set()
    assert harness.runtime.kill_run(rid) == 1
    assert sibling.result().cancelled
    assert harness.present(rid) == 0


def test_a_cancel_before_the_start_runs_nothing(harness: Harness, rid: str) -> None:
    cancel = threading.Event()
    cancel.set()
    lines: list[str] = []
    result = run(harness, harness.spec(Behaviour(logs=("never",)), rid), cancel=cancel, lines=lines)
    assert result.cancelled and result.exit_code is None
    assert lines == []


def test_a_missing_image_is_an_error_result_not_an_exception(harness: Harness, rid: str) -> None:
    spec = harness.spec(Behaviour(logs=("never",)), rid)
    result = run(harness, ContainerSpec(MISSING, spec.command, {}, spec.labels, timeout=30))
    assert result.exit_code is None and result.error
    assert not result.cancelled


def test_containers_carry_the_specs_labels(harness: Harness, rid: str) -> None:
    spec = harness.spec(Behaviour(logs=("up",), block=True), rid)
    running = Background(harness, spec)
    running.started()
    seen = harness.labels_seen(rid)
    running.cancel.set()
    harness.runtime.kill_run(rid)
    assert running.result().cancelled
    assert len(seen) == 1
    assert seen[0].items() >= spec.labels.items()


def test_gc_finds_nothing_after_finished_attempts(harness: Harness, rid: str) -> None:
    harness.gc_only(rid)
    assert run(harness, harness.spec(Behaviour(2), rid)).exit_code == 2
    timed_out = run(harness, harness.spec(Behaviour(block=True), rid, timeout=harness.short))
    assert timed_out.timed_out
    assert harness.runtime.gc() == []  # every attempt removed its own container
    assert harness.present(rid) == 0


def test_a_staged_container_takes_files_ahead_and_at_start(
    harness: Harness, rid: str, tmp_path: Path
) -> None:
    ahead, late = tmp_path / "ahead.tar", tmp_path / "late.tar"
    with TarBuilder(ahead) as tar:
        tar.add_bytes("sluice/ahead.txt", b"put ahead")
    with TarBuilder(late) as tar:
        tar.add_bytes("sluice/late.txt", b"put at start")
    copies = {"/sluice/ahead.txt": "ahead.txt", "/sluice/late.txt": "late.txt"}
    spec = harness.spec(Behaviour(logs=("ran",), copies=copies), rid)
    staged = harness.runtime.stage(spec, [ahead])
    assert staged is not None
    assert harness.present(rid) == 1  # made, not started
    out, lines = tmp_path / "out.tar", list[str]()
    result = harness.runtime.run(
        spec,
        Transfer(put=[late], fetch={OUTPUTS: out}),
        on_log=lines.append,
        cancel=threading.Event(),
        staged=staged,
    )
    assert (result.exit_code, lines) == (0, ["ran\n"])
    dest = tmp_path / "dest"
    assert extract_tar(out, dest, strip="outputs") == [Path("ahead.txt"), Path("late.txt")]
    assert (dest / "ahead.txt").read_bytes() == b"put ahead"
    assert (dest / "late.txt").read_bytes() == b"put at start"
    assert harness.present(rid) == 0


def test_staged_containers_go_with_discard_and_kill_run(harness: Harness, rid: str) -> None:
    first = harness.runtime.stage(harness.spec(Behaviour(), rid), [])
    second = harness.runtime.stage(harness.spec(Behaviour(), rid), [])
    assert first is not None and second is not None
    assert harness.present(rid) == 2
    harness.runtime.discard(first)
    assert harness.present(rid) == 1
    assert harness.runtime.kill_run(rid) == 1
    assert harness.present(rid) == 0
    harness.runtime.discard(second)  # gone already: nothing to say


def test_kill_step_removes_that_steps_staged_container_only(harness: Harness, rid: str) -> None:
    spec = harness.spec(Behaviour(), rid)
    mine = harness.runtime.stage(spec, [])
    theirs = harness.runtime.stage(harness.spec(Behaviour(), rid), [])
    assert mine is not None and theirs is not None
    assert harness.runtime.kill_step(rid, spec.labels[LABEL_STEP]) == 1
    assert harness.present(rid) == 1
    harness.runtime.discard(mine)  # gone already: nothing to say
    harness.runtime.discard(theirs)
    assert harness.present(rid) == 0
