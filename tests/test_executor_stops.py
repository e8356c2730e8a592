"""The engine's own failures stop the run: no further step starts, the manifest says why (exit 3).

Fast on the fake runtime; then for real, `sluice run` against a Docker socket nobody serves.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from conftest import make_repo, sluice

from engine.adapters.artifacts import DEFAULT_URL, ArtifactStore
from engine.adapters.fake_runtime import FakeOutcome, FakeRuntime
from engine.adapters.memory_results import MemoryResultsBranch
from engine.core.manifest import RunManifest, RunStatus, StepStatus
from engine.core.parse import load_text
from engine.core.spec import Outcome
from engine.errors import EngineUnavailable
from engine.ports import ContainerSpec, RuntimeUnavailable
from engine.run.executor import Executor, RunOptions
from engine.run.records import History

CHAIN = """
name: chain
defaults: {image: img, retries: {limit: 2, backoff: 0.01s, outcomes: [failed, error]}}
steps:
  - name: a
    run: a
  - name: b
    needs: [a]
    run: b
  - name: c
    needs: [b]
    run: c
finally:
  - name: z
    run: z
"""


def run(
    tmp_path: Path,
    text: str,
    runtime: FakeRuntime,
    *,
    store: ArtifactStore | None = None,
    history: History | None = None,
    max_parallel: int = 4,
) -> tuple[Path, RunManifest]:
    repo = make_repo(tmp_path, files={"data.txt": "data\n"})
    loaded = load_text(textwrap.dedent(text), "pipelines/p.yaml")
    options = RunOptions(
        params=dict(loaded.pipeline.params),
        max_parallel=max_parallel,
        artifacts=store or ArtifactStore(DEFAULT_URL, repo),
        history=history,
    )
    return repo, Executor(loaded, runtime, repo=repo, options=options).run()


def daemon_gone(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
    raise RuntimeUnavailable("the Docker daemon does not answer: connection refused")


def started(runtime: FakeRuntime) -> list[str]:
    return [spec.labels["sluice.step"] for spec in runtime.calls]


def on_disk(repo: Path, manifest: RunManifest) -> RunManifest:
    return RunManifest.from_json(
        (repo / ".sluice/runs" / manifest.run_id / "manifest.json").read_text()
    )


def test_a_runtime_that_dies_mid_run_stops_it(tmp_path: Path) -> None:
    runtime = FakeRuntime({"b": daemon_gone})
    repo, manifest = run(tmp_path, CHAIN, runtime)
    assert started(runtime) == ["a", "b"]  # neither c nor the finally step z, nor a retry of b
    assert manifest.status is RunStatus.failed
    assert manifest.engine_error is True
    assert manifest.error == (
        "the engine could not run (in step 'b'): the Docker daemon does not answer: "
        "connection refused"
    )
    steps = manifest.steps
    assert steps["a"].status is StepStatus.succeeded
    assert steps["b"].status is StepStatus.failed
    assert [a.outcome for a in steps["b"].attempts] == [Outcome.error]
    for name in ("c", "z"):
        assert steps[name].status is StepStatus.cancelled
        assert steps[name].reason == "not started: the engine could not run"
        assert steps[name].attempts == []
    assert on_disk(repo, manifest) == manifest


def test_parallel_steps_waiting_for_a_slot_do_not_start(tmp_path: Path) -> None:
    text = """
    name: wide
    defaults: {image: img}
    steps:
      - {name: x, run: x}
      - {name: y, run: y}
      - {name: w, run: w}
    """
    runtime = FakeRuntime({"x": daemon_gone})
    _, manifest = run(tmp_path, text, runtime, max_parallel=1)
    assert started(runtime) == ["x"]
    assert [manifest.steps[n].status for n in ("y", "w")] == [StepStatus.cancelled] * 2
    assert manifest.status is RunStatus.failed and manifest.engine_error


class DeadDaemon(FakeRuntime):
    """A daemon that is gone before the first step: looking up an image fails."""

    def image_id(self, ref: str) -> str:
        raise RuntimeUnavailable("cannot reach the Docker daemon", hint="start it")


def test_a_runtime_that_is_gone_from_the_start_runs_nothing(tmp_path: Path) -> None:
    runtime = DeadDaemon()
    repo, manifest = run(tmp_path, CHAIN, runtime)
    assert runtime.calls == []
    assert manifest.status is RunStatus.failed and manifest.engine_error
    assert manifest.error == "the engine could not run: cannot reach the Docker daemon"
    assert all(rec.status is StepStatus.cancelled for rec in manifest.steps.values())
    assert on_disk(repo, manifest) == manifest


def test_an_artifact_store_that_cannot_be_written_stops_the_run(tmp_path: Path) -> None:
    store_root = tmp_path / "store"
    store_root.mkdir()
    (store_root / "sha256").write_text("a file where the store's folders go\n")
    store = ArtifactStore(f"file://{store_root}", tmp_path)
    with_output = FakeOutcome(files={"model.txt": b"weights"})
    runtime = FakeRuntime({"a": [with_output]})
    _, manifest = run(tmp_path, CHAIN, runtime, store=store)
    assert started(runtime) == ["a"]
    assert manifest.status is RunStatus.failed and manifest.engine_error
    assert manifest.error is not None
    assert manifest.error.startswith("the engine could not run (in step 'a'): cannot write")
    assert manifest.steps["a"].status is StepStatus.failed
    assert manifest.steps["b"].status is StepStatus.cancelled


class UnreadableBranch(MemoryResultsBranch):
    """A results branch whose git cannot read objects any more (a broken or vanished repo)."""

    def read(self, path: str, *, at: str | None = None) -> bytes | None:
        raise EngineUnavailable(f"git cat-file failed reading {path}")


def test_a_results_branch_that_cannot_be_read_stops_the_run(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    _, manifest = run(tmp_path, CHAIN, runtime, history=History(UnreadableBranch()))
    assert runtime.calls == []  # the cache look-up of the first step failed
    assert manifest.status is RunStatus.failed and manifest.engine_error
    assert manifest.error is not None
    assert manifest.error.startswith("the engine could not run: git cat-file failed reading cache/")


def test_a_failed_step_is_not_an_engine_error(tmp_path: Path) -> None:
    runtime = FakeRuntime({"b": [FakeOutcome(exit_code=1)] * 3})
    _, manifest = run(tmp_path, CHAIN, runtime)
    assert manifest.status is RunStatus.failed
    assert manifest.engine_error is False and manifest.error is None
    assert started(runtime) == ["a", "b", "b", "b", "z"]


def test_sluice_run_without_a_docker_daemon_exits_3_and_records_why(tmp_path: Path) -> None:
    pipeline = """
    name: p
    steps:
      - name: a
        image: sluice-test/busybox:1
        run: echo a
      - name: b
        needs: [a]
        image: sluice-test/busybox:1
        run: echo b
    """
    repo = make_repo(tmp_path, {"p.yaml": pipeline}, commit="pipelines")
    nobody = f"unix://{tmp_path / 'nobody.sock'}"
    done = sluice("run", "p", "--json", repo=repo, env={"DOCKER_HOST": nobody})
    assert done.returncode == 3, done.stderr
    printed = RunManifest.model_validate(json.loads(done.stdout))
    assert printed.status is RunStatus.failed and printed.engine_error
    assert printed.error is not None and "Docker daemon" in printed.error
    assert {rec.status for rec in printed.steps.values()} == {StepStatus.cancelled}
    assert on_disk(repo, printed) == printed
    shown = sluice("show", printed.run_id, "--json", repo=repo)  # on the results branch too
    assert shown.returncode == 0, shown.stderr
    recorded = json.loads(shown.stdout)
    recorded = recorded[0] if isinstance(recorded, list) else recorded
    assert (recorded["status"], recorded["engine_error"]) == ("failed", True)
    assert recorded["error"] == printed.error
