"""Containers made ahead (run/staging.py): which steps get one, what goes in it ahead and
what at start, and that every one is either run or removed. FakeRuntime only: the same
behaviours against real Docker are in test_executor_staging_docker.py."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path

from conftest import make_repo, poll

from engine.adapters.artifacts import DEFAULT_URL, ArtifactStore
from engine.adapters.fake_runtime import FakeOutcome, FakeRuntime
from engine.core.manifest import RunManifest, RunStatus, StepStatus, Trigger
from engine.core.parse import load_text
from engine.ports import LABEL_STEP, ContainerSpec
from engine.run.executor import Executor, RunOptions


def executor(tmp_path: Path, text: str, runtime: FakeRuntime, max_parallel: int = 4) -> Executor:
    repo = make_repo(tmp_path, files={"data.txt": "data\n"})
    loaded = load_text(textwrap.dedent(text), "pipelines/p.yaml")
    options = RunOptions(
        params=dict(loaded.pipeline.params),
        trigger=Trigger(kind="manual"),
        max_parallel=max_parallel,
        artifacts=ArtifactStore(DEFAULT_URL, repo),
    )
    return Executor(loaded, runtime, repo=repo, options=options)


def staged_steps(runtime: FakeRuntime) -> set[str]:
    with runtime._lock:
        return {spec.labels[LABEL_STEP] for spec, _ in runtime.staged.values()}


CHAIN = """
name: chain
defaults: {image: img}
steps:
  - name: a
    run: a
  - name: b
    needs: [a]
    run: b
    config: {n: 1}
  - name: c
    needs: [b]
    run: c
"""


def test_the_next_step_is_made_while_its_upstream_runs_and_gets_its_inputs(
    tmp_path: Path,
) -> None:
    seen: dict[str, dict[str, bytes]] = {}

    def a(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        # b's container is made (workspace and /sluice files in) while a still runs
        poll(lambda: "b" in staged_steps(runtime), 10, "b to be staged", 0.01)
        return FakeOutcome(files={"out.txt": b"from a"})

    def b(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        seen["b"] = files
        return FakeOutcome()

    runtime = FakeRuntime({"a": a, "b": b})
    manifest = executor(tmp_path, CHAIN, runtime).run()
    assert manifest.status is RunStatus.succeeded
    assert runtime.staged_runs == 2  # b and c; a had nothing running before it
    files = seen["b"]
    assert files["/sluice/inputs/a/out.txt"] == b"from a"  # copied at start
    assert files["/sluice/config.json"] == b'{\n  "n": 1\n}'  # made ahead
    assert files["/workspace/data.txt"] == b"data\n"
    assert runtime.staged == {} and runtime.discarded == []


def test_a_step_made_ahead_that_will_not_run_is_removed(tmp_path: Path) -> None:
    def a(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        poll(lambda: "b" in staged_steps(runtime), 10, "b to be staged", 0.01)
        return FakeOutcome(exit_code=1)

    runtime = FakeRuntime({"a": a})
    manifest = executor(tmp_path, CHAIN, runtime).run()
    assert manifest.steps["b"].status is StepStatus.upstream_failed
    assert [spec.labels[LABEL_STEP] for spec in runtime.calls] == ["a"]
    assert len(runtime.discarded) == 1
    assert runtime.staged == {}


def test_steps_that_may_not_run_as_prepared_are_not_made_ahead(tmp_path: Path) -> None:
    text = """
    name: maybe
    defaults: {image: img}
    steps:
      - name: a
        run: a
      - name: gated
        needs: [a]
        run: g
        when: "params.go"
      - name: approved
        needs: [a]
        run: p
        approval: true
    finally:
      - name: z
        run: z
    params: {go: false}
    """
    runtime = FakeRuntime()
    manifest = executor(tmp_path, text, runtime).run()
    assert manifest.steps["gated"].status is StepStatus.skipped
    assert manifest.steps["approved"].status is StepStatus.waiting_approval
    assert runtime.discarded == [] and runtime.staged_runs == 0 and runtime.staged == {}


def test_a_retry_gets_a_fresh_container_with_the_checkpoints_of_the_last_attempt(
    tmp_path: Path,
) -> None:
    text = """
    name: retry
    defaults: {image: img}
    steps:
      - name: a
        run: a
      - name: b
        needs: [a]
        run: b
        retries: {limit: 1, backoff: 0.01s}
    """
    seen: list[dict[str, bytes]] = []

    def b(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        seen.append(files)
        if attempt == 1:
            return FakeOutcome(exit_code=1, files={"/sluice/checkpoints/epoch": b"3"})
        return FakeOutcome()

    def a(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        poll(lambda: "b" in staged_steps(runtime), 10, "b to be staged", 0.01)
        return FakeOutcome()

    runtime = FakeRuntime({"a": a, "b": b})
    manifest = executor(tmp_path, text, runtime, max_parallel=1).run()
    assert manifest.status is RunStatus.succeeded
    attempts = [
        spec.labels["sluice.attempt"] for spec in runtime.calls if spec.labels[LABEL_STEP] == "b"
    ]
    assert attempts == ["1", "2"]
    assert "/sluice/checkpoints/epoch" not in seen[0]
    assert seen[1]["/sluice/checkpoints/epoch"] == b"3"  # copied in at the retry's start
    assert runtime.staged == {}


def test_independent_steps_waiting_for_a_slot_are_made_ahead(tmp_path: Path) -> None:
    steps = "\n".join(f"  - name: s{i}\n    run: s" for i in range(8))
    text = f"name: wide\ndefaults: {{image: img}}\nsteps:\n{steps}\n"
    runtime = FakeRuntime()
    manifest = executor(tmp_path, text, runtime, max_parallel=2).run()
    assert manifest.status is RunStatus.succeeded
    assert runtime.staged_runs >= 1
    assert runtime.staged == {} and runtime.discarded == []


def test_cancel_removes_the_containers_made_ahead(tmp_path: Path) -> None:
    runtime = FakeRuntime({"a": [FakeOutcome(block=True)]})
    run = executor(tmp_path, CHAIN, runtime)
    result: list[RunManifest] = []
    worker = threading.Thread(target=lambda: result.append(run.run()))
    worker.start()
    poll(lambda: "b" in staged_steps(runtime), 10, "b to be staged", 0.01)
    run.cancel()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert result[0].status is RunStatus.cancelled
    assert runtime.staged == {}
    assert [spec.labels[LABEL_STEP] for spec in runtime.calls] == ["a"]
