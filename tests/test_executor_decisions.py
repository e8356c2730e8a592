"""The executor's decisions on the fakes: cache hit and miss, reuse on retry, the baseline `when`
sees, and the approval pause. No Docker, no git branch: the fake runtime and the in-memory
results branch (test_executor_docker.py and test_production.py check the same for real).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any, Literal

from conftest import make_repo

from engine.adapters.artifacts import DEFAULT_URL, ArtifactStore
from engine.adapters.fake_runtime import FakeOutcome, FakeRuntime
from engine.adapters.memory_results import MemoryResultsBranch
from engine.core.manifest import RunManifest, RunStatus, StepStatus, Trigger
from engine.core.parse import load_text
from engine.ports import ContainerSpec
from engine.run.executor import Executor, RunOptions
from engine.run.records import History


class Bench:
    """One repository, one artifact store and one in-memory results branch, for several runs."""

    def __init__(self, tmp_path: Path, text: str, runtime: FakeRuntime) -> None:
        self.repo = make_repo(tmp_path, files={"data.txt": "data\n"})
        self.loaded = load_text(textwrap.dedent(text), "pipelines/p.yaml")
        self.runtime = runtime
        self.history = History(MemoryResultsBranch())
        self.store = ArtifactStore(DEFAULT_URL, self.repo)

    def options(self, **given: Any) -> RunOptions:
        params = {**self.loaded.pipeline.params, **given.pop("params", {})}
        return RunOptions(
            params=params,
            trigger=Trigger(kind="manual"),
            max_parallel=2,
            artifacts=self.store,
            history=self.history,
            **given,
        )

    def run(self, **given: Any) -> RunManifest:
        executor = Executor(
            self.loaded, self.runtime, repo=self.repo, options=self.options(**given)
        )
        return executor.run()

    def started(self) -> list[str]:
        """The steps whose containers ran since the last call."""
        names = [spec.labels["sluice.step"] for spec in self.runtime.calls]
        self.runtime.calls.clear()
        return names


def writes(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
    """Each step writes `<step>.txt` holding its own name: different bytes per step."""
    name = spec.labels["sluice.step"]
    return FakeOutcome(files={f"{name}.txt": name.encode()})


def each_writes() -> FakeRuntime:
    return FakeRuntime({name: writes for name in ("prepare", "fit", "ship")})


TRAIN = """
name: train
params: {epochs: 3}
defaults: {image: img}
steps:
  - name: prepare
    run: prepare
  - name: fit
    needs: [prepare]
    command: [fit, "${{ params.epochs }}"]
  - name: ship
    type: deployment
    needs: [fit]
    run: ship
"""


def test_a_second_identical_run_is_served_from_the_cache(tmp_path: Path) -> None:
    bench = Bench(tmp_path, TRAIN, each_writes())
    first = bench.run()
    assert bench.started() == ["prepare", "fit", "ship"]
    second = bench.run()
    assert bench.started() == ["ship"]  # deployment steps are never cached
    for name in ("prepare", "fit"):
        record = second.steps[name]
        assert record.status is StepStatus.cached
        assert record.cached_from == first.run_id
        assert record.reason == f"cached from {first.run_id}"
        assert record.outputs == first.steps[name].outputs
        assert record.cache_key == first.steps[name].cache_key
    assert second.status is RunStatus.succeeded


def test_a_changed_param_misses_from_the_step_it_reaches(tmp_path: Path) -> None:
    bench = Bench(tmp_path, TRAIN, each_writes())
    first = bench.run()
    bench.started()
    second = bench.run(params={"epochs": 5})
    assert bench.started() == ["fit", "ship"]
    assert second.steps["prepare"].status is StepStatus.cached
    assert second.steps["fit"].status is StepStatus.succeeded
    assert second.steps["fit"].cache_key != first.steps["fit"].cache_key


def test_no_cache_and_lost_outputs_run_again(tmp_path: Path) -> None:
    bench = Bench(tmp_path, TRAIN, each_writes())
    first = bench.run()
    bench.started()
    bench.run(use_cache=False)
    assert bench.started() == ["prepare", "fit", "ship"]
    pointer = first.steps["prepare"].outputs["prepare.txt"]
    stored = bench.repo / ".sluice" / "artifacts" / "sha256" / pointer.sha256[:2]
    (stored / pointer.sha256[2:]).unlink()
    again = bench.run()
    # prepare runs again and writes the same bytes: fit's inputs, and so its key, are unchanged
    assert bench.started() == ["prepare", "ship"]
    assert again.steps["prepare"].status is StepStatus.succeeded
    assert again.steps["fit"].status is StepStatus.cached


def test_explain_says_what_would_be_cached_and_why_the_rest_runs(tmp_path: Path) -> None:
    bench = Bench(tmp_path, TRAIN, each_writes())
    first = bench.run()
    options = bench.options(params={"epochs": 5})
    executor = Executor(bench.loaded, bench.runtime, repo=bench.repo, options=options)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    verdicts = executor.explain(scratch)
    assert verdicts[0] == ("prepare", True, f"cached from {first.run_id}")
    assert verdicts[1][:2] == ("fit", False) and "command" in verdicts[1][2]
    assert verdicts[2] == ("ship", False, "deployment steps are never cached")


def test_retry_reuses_what_succeeded_and_runs_the_rest(tmp_path: Path) -> None:
    fits: list[int] = []

    def fit(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        fits.append(attempt)
        return FakeOutcome(exit_code=1) if len(fits) == 1 else writes(spec, attempt, files)

    bench = Bench(tmp_path, TRAIN, FakeRuntime({"prepare": writes, "fit": fit, "ship": writes}))
    failed = bench.run(use_cache=False)
    assert failed.status is RunStatus.failed
    assert failed.steps["ship"].status is StepStatus.upstream_failed
    bench.started()
    again = bench.run(use_cache=False, reuse=failed)
    assert bench.started() == ["fit", "ship"]
    prepare = again.steps["prepare"]
    assert prepare.status is StepStatus.cached
    assert (prepare.cached_from, prepare.reason) == (failed.run_id, f"reused from {failed.run_id}")
    assert prepare.outputs == failed.steps["prepare"].outputs
    assert again.status is RunStatus.succeeded


GATED = """
name: gated
params: {accuracy: 0.8}
baseline: {step: ship}
defaults: {image: img}
steps:
  - name: evaluate
    cache: false
    run: evaluate
  - name: ship
    type: deployment
    needs: [evaluate]
    when: "not baseline or steps.evaluate.metrics.accuracy > baseline.steps.evaluate.metrics.accuracy"
    run: ship
"""


class Gate:
    """`evaluate` reports the run's `accuracy` param; `ship` remembers the baseline it saw."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []
        self.runtime = FakeRuntime({"evaluate": self.evaluate, "ship": self.ship})

    def evaluate(self, spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        accuracy = json.loads(files["/sluice/params.json"])["accuracy"]
        return FakeOutcome(files={"metrics.json": json.dumps({"accuracy": accuracy}).encode()})

    def ship(self, spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        baseline = files.get("/sluice/baseline.json")
        self.seen.append(json.loads(baseline)["run_id"] if baseline else None)
        return FakeOutcome()


def test_when_compares_with_the_production_run(tmp_path: Path) -> None:
    gate = Gate()
    bench = Bench(tmp_path, GATED, gate.runtime)
    first = bench.run()  # no production yet: `not baseline` holds
    assert first.steps["ship"].status is StepStatus.succeeded
    assert first.baseline_run is None
    worse = bench.run(params={"accuracy": 0.7})
    assert worse.baseline_run == first.run_id
    assert worse.steps["ship"].status is StepStatus.skipped
    better = bench.run(params={"accuracy": 0.9})
    assert better.baseline_run == first.run_id  # the skipped run did not become production
    assert better.steps["ship"].status is StepStatus.succeeded
    assert gate.seen == [None, first.run_id]
    assert bench.run(params={"accuracy": 0.85}).baseline_run == better.run_id


APPROVED = """
name: approved
defaults: {image: img}
steps:
  - name: build
    run: build
  - name: release
    needs: [build]
    approval: true
    run: release
finally:
  - name: notify
    run: notify
"""


def decide(bench: Bench, paused: RunManifest, how: Literal["approve", "reject"]) -> RunManifest:
    return bench.run(resume=paused, decision=how, decided_by="alice")


def test_an_approval_pauses_the_run_and_approve_continues_it(tmp_path: Path) -> None:
    bench = Bench(tmp_path, APPROVED, FakeRuntime())
    paused = bench.run()
    assert bench.started() == ["build"]  # finally steps wait for the decision too
    assert paused.status is RunStatus.waiting_approval
    assert paused.steps["release"].status is StepStatus.waiting_approval
    assert bench.history.manifest(paused.run_id) == paused  # recorded where approve finds it
    done = decide(bench, paused, "approve")
    assert bench.started() == ["release", "notify"]  # build is not run again
    assert done.run_id == paused.run_id and done.status is RunStatus.succeeded
    assert [(a["step"], a["decision"], a["by"]) for a in done.approvals] == [
        ("release", "approve", "alice")
    ]


def test_reject_ends_the_run_failed_and_still_runs_finally(tmp_path: Path) -> None:
    bench = Bench(tmp_path, APPROVED, FakeRuntime())
    paused = bench.run()
    bench.started()
    done = decide(bench, paused, "reject")
    assert bench.started() == ["notify"]
    assert done.status is RunStatus.failed
    assert done.steps["release"].status is StepStatus.failed
    assert done.steps["release"].reason == "rejected by alice"


BUILT = """
name: built
defaults: {image: {build: {context: tools}}}
steps:
  - name: one
    run: one
  - name: two
    needs: [one]
    run: two
"""


def test_a_built_image_is_built_once_and_named_by_its_tag(tmp_path: Path) -> None:
    bench = Bench(tmp_path, BUILT, FakeRuntime())
    (bench.repo / "tools").mkdir()
    (bench.repo / "tools" / "Dockerfile").write_text("FROM scratch\n")
    first = bench.run()
    (tag,) = bench.runtime.builds
    assert tag.startswith("sluice-build/tools:")
    assert {first.steps[n].image for n in ("one", "two")} == {tag}
    assert bench.started() == ["one", "two"]
    (bench.repo / "tools" / "Dockerfile").write_text("FROM scratch\nLABEL v=2\n")
    bench.run()
    assert len(bench.runtime.builds) == 2 and bench.runtime.builds[1] != tag
