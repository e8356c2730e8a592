"""Fan-out steps run by the single-runner executor, on the fake runtime and the in-memory
results branch: instances, the group's settling, fan-in inputs and index, failure policy,
max_parallel, retry and the cache (test_fanout_run_docker.py: the same on real Docker)."""

from __future__ import annotations

import json
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import make_repo, poll

from engine.adapters.artifacts import DEFAULT_URL, ArtifactStore
from engine.adapters.fake_runtime import FakeOutcome, FakeRuntime, Script
from engine.adapters.memory_results import MemoryResultsBranch
from engine.core.expand import expand
from engine.core.fanout import FanOutError
from engine.core.manifest import Attempt, RunManifest, RunStatus, StepRecord, StepStatus, Trigger
from engine.core.parse import load_text
from engine.core.spec import Outcome
from engine.ports import ContainerSpec
from engine.run import fanin
from engine.run.executor import Executor, RunOptions
from engine.run.records import History
from engine.run.schedule import Job


class Bench:
    """One repository, artifact store and in-memory results branch, for several runs."""

    def __init__(self, tmp_path: Path, text: str, runtime: FakeRuntime) -> None:
        self.repo = make_repo(tmp_path, files={"data.txt": "data\n"})
        self.loaded = load_text(textwrap.dedent(text), "pipelines/p.yaml")
        self.runtime = runtime
        self.history = History(MemoryResultsBranch())
        self.store = ArtifactStore(DEFAULT_URL, self.repo)

    def executor(self, **given: Any) -> Executor:
        params = {**self.loaded.pipeline.params, **given.pop("params", {})}
        options = RunOptions(
            params=params,
            trigger=Trigger(kind="manual"),
            max_parallel=given.pop("max_parallel", 4),
            artifacts=self.store,
            history=self.history,
            **given,
        )
        return Executor(self.loaded, self.runtime, repo=self.repo, options=options)

    def run(self, **given: Any) -> RunManifest:
        return self.executor(**given).run()

    def started(self) -> list[str]:
        """The steps whose containers ran since the last call, in order."""
        names = [spec.labels["sluice.step"] for spec in self.runtime.calls]
        self.runtime.calls.clear()
        return names


class Scripted(FakeRuntime):
    """A fake runtime whose scripts are chosen by the step's group (`train` for every
    `train[...]` instance), else by name; everything else gets `default`."""

    def __init__(self, scripts: dict[str, Script], default: Script | None = None) -> None:
        super().__init__()
        self.scripts, self.fallback = scripts, default or writes
        self.files_seen: dict[str, dict[str, bytes]] = {}  # step -> the files put in
        self.specs: dict[str, ContainerSpec] = {}  # step -> its (last) container

    def _outcome(
        self, step: str, spec: ContainerSpec, attempt: int, files: dict[str, bytes]
    ) -> FakeOutcome:
        self.files_seen[step], self.specs[step] = files, spec
        script = self.scripts.get(step) or self.scripts.get(step.split("[")[0]) or self.fallback
        return script(spec, attempt, files)


def writes(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
    """Writes `model.txt` (its name: different bytes per step) and metrics from its env."""
    name = spec.labels["sluice.step"]
    metrics = {"auc": float(spec.env["AUC"])} if "AUC" in spec.env else {}
    return FakeOutcome(
        files={"model.txt": name.encode(), "metrics.json": json.dumps(metrics).encode()}
    )


def fails(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
    return FakeOutcome(exit_code=1)


def fails_where(**values: Any) -> Script:
    """Fails the instances whose /sluice/matrix.json holds all of `values`."""

    def script(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        matrix = json.loads(files["/sluice/matrix.json"])
        if all(matrix.get(k) == v for k, v in values.items()):
            return FakeOutcome(exit_code=1)
        return writes(spec, attempt, files)

    return script


def stored_index(bench: Bench, manifest: RunManifest, group: str) -> bytes:
    """The fan-in index a group recorded, read back from the artifact store."""
    dest = bench.repo.parent / f"{manifest.run_id}-{group}-index.json"
    bench.store.get_file(manifest.steps[group].outputs["index.json"], dest)
    return dest.read_bytes()


GRID = """
name: sweep
defaults: {image: img}
steps:
  - name: prepare
    run: prepare
  - name: train
    needs: [prepare]
    matrix:
      n_estimators: [50, 100]
      max_depth: [3, 5, 8]
    env: {AUC: "0.${{ matrix.max_depth }}${{ matrix.n_estimators }}"}
    config: {n: "${{ matrix.n_estimators }}", depth: "${{ matrix.max_depth }}"}
    run: train --depth ${{ matrix.max_depth }}
  - name: select
    needs: [train]
    run: select
"""


def test_a_grid_runs_each_instance_settles_the_group_and_fans_in(tmp_path: Path) -> None:
    runtime = Scripted({})
    bench = Bench(tmp_path, GRID, runtime)
    manifest = bench.run()
    assert manifest.status is RunStatus.succeeded
    started = bench.started()
    instances = [n for n in started if n.startswith("train[")]
    assert sorted(instances) == sorted(
        f"train[n_estimators={n},max_depth={d}]" for n in (50, 100) for d in (3, 5, 8)
    )
    assert started[0] == "prepare" and started[-1] == "select" and "train" not in started

    one = "train[n_estimators=100,max_depth=5]"
    record = manifest.steps[one]
    assert (record.instance_of, record.matrix) == ("train", {"n_estimators": 100, "max_depth": 5})
    seen = runtime.files_seen[one]
    assert json.loads(seen["/sluice/matrix.json"]) == {"n_estimators": 100, "max_depth": 5}
    assert json.loads(seen["/sluice/config.json"]) == {"n": 100, "depth": 5}
    assert "/sluice/inputs/prepare/model.txt" in seen  # an instance gets the template's needs
    spec = runtime.specs[one]
    assert spec.env["SLUICE_INSTANCE"] == one
    assert spec.command is not None and "train --depth 5" in spec.command[-1]

    group = manifest.steps["train"]
    assert group.status is StepStatus.succeeded
    assert group.instances == [
        f"train[n_estimators={n},max_depth={d}]" for n in (50, 100) for d in (3, 5, 8)
    ]
    assert group.reason == "6 instances: 6 succeeded"
    assert list(group.outputs) == ["index.json"] and not group.attempts

    select = runtime.files_seen["select"]
    index = json.loads(select["/sluice/inputs/train/index.json"])
    assert [entry["name"] for entry in index] == group.instances
    assert index[4] == {
        "name": one,
        "matrix": {"n_estimators": 100, "max_depth": 5},
        "status": "succeeded",
        "metrics": {"auc": 0.5100},
    }
    for name in group.instances:
        assert select[f"/sluice/inputs/train/{name}/model.txt"] == name.encode()
    assert "/sluice/matrix.json" not in select and "/sluice/inputs/prepare/model.txt" not in select
    assert "SLUICE_INSTANCE" not in runtime.specs["select"].env
    # the index the group recorded is the one the step after it got
    assert stored_index(bench, manifest, "train") == select["/sluice/inputs/train/index.json"]


def test_include_and_exclude_shape_the_instances(tmp_path: Path) -> None:
    text = GRID.replace(
        "      max_depth: [3, 5, 8]\n",
        "      max_depth: [3, 5, 8]\n"
        "      exclude: [{n_estimators: 50, max_depth: 8}]\n"
        "      include: [{n_estimators: 200, max_depth: 12}, {max_depth: 3, tag: small}]\n",
    )
    runtime = Scripted({})
    bench = Bench(tmp_path, text, runtime)
    manifest = bench.run()
    assert manifest.status is RunStatus.succeeded
    assert manifest.steps["train"].instances == [
        "train[n_estimators=50,max_depth=3,tag=small]",
        "train[n_estimators=50,max_depth=5]",
        "train[n_estimators=100,max_depth=3,tag=small]",
        "train[n_estimators=100,max_depth=5]",
        "train[n_estimators=100,max_depth=8]",
        "train[n_estimators=200,max_depth=12]",
    ]
    assert sorted(n for n in bench.started() if n.startswith("train[")) == sorted(
        manifest.steps["train"].instances
    )
    seen = runtime.files_seen["train[n_estimators=100,max_depth=3,tag=small]"]
    assert json.loads(seen["/sluice/matrix.json"]) == {
        "n_estimators": 100,
        "max_depth": 3,
        "tag": "small",
    }


FOREACH = """
name: regions
params: {regions: [eu, us-east, "a b"]}
defaults: {image: img}
steps:
  - name: score
    foreach: "${{ params.regions }}"
    env: {REGION: "${{ matrix.item }}"}
    run: score
  - name: report
    needs: score
    run: report
"""


def test_foreach_over_a_list_param_names_odd_values_safely(tmp_path: Path) -> None:
    runtime = Scripted({})
    bench = Bench(tmp_path, FOREACH, runtime)
    manifest = bench.run()
    assert manifest.status is RunStatus.succeeded
    names = manifest.steps["score"].instances
    assert names[:2] == ["score[eu]", "score[us-east]"] and names[2].startswith("score[~")
    report = runtime.files_seen["report"]
    for name in names:
        assert report[f"/sluice/inputs/score/{name}/model.txt"] == name.encode()
    index = json.loads(report["/sluice/inputs/score/index.json"])
    assert [e["matrix"] for e in index] == [{"item": "eu"}, {"item": "us-east"}, {"item": "a b"}]

    again = Bench(tmp_path / "2", FOREACH, Scripted({}))
    manifest = again.run(params={"regions": ["eu"]})
    assert manifest.steps["score"].instances == ["score[eu]"]


def test_an_empty_sweep_is_refused_before_anything_runs(tmp_path: Path) -> None:
    runtime = Scripted({})
    bench = Bench(tmp_path, FOREACH, runtime)
    with pytest.raises(FanOutError, match="fans out over nothing") as caught:
        bench.executor(params={"regions": []})
    assert caught.value.exit_code == 2
    assert runtime.calls == []
    assert not (bench.repo / ".sluice" / "runs").exists() or not any(
        (bench.repo / ".sluice" / "runs").iterdir()
    )


def test_a_failed_instance_fails_the_group_and_its_dependents(tmp_path: Path) -> None:
    runtime = Scripted({"train": fails_where(n_estimators=100, max_depth=8)})
    bench = Bench(tmp_path, GRID, runtime)
    manifest = bench.run()
    assert manifest.status is RunStatus.failed
    assert manifest.steps["train[n_estimators=100,max_depth=8]"].status is StepStatus.failed
    group = manifest.steps["train"]
    assert group.status is StepStatus.failed
    assert group.reason == "6 instances: 5 succeeded, 1 failed (allowed failures: 0)"
    assert manifest.steps["select"].status is StepStatus.upstream_failed
    assert manifest.steps["select"].reason == "needs 'train', which failed"
    assert "select" not in bench.started()


@pytest.mark.parametrize(
    ("allow", "failing", "settled"),
    [
        ("1", 1, StepStatus.succeeded),
        ("1", 2, StepStatus.failed),
        ("0.34", 2, StepStatus.succeeded),  # floor(0.34 * 6) = 2
        ("0.3", 2, StepStatus.failed),  # floor(0.3 * 6) = 1
    ],
)
def test_allow_failures_as_a_count_or_a_fraction(
    tmp_path: Path, allow: str, failing: int, settled: StepStatus
) -> None:
    text = GRID.replace(
        "    needs: [prepare]\n", f"    needs: [prepare]\n    allow_failures: {allow}\n"
    )
    depths = [3, 5][:failing]

    def script(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        matrix = json.loads(files["/sluice/matrix.json"])
        bad = matrix["n_estimators"] == 50 and matrix["max_depth"] in depths
        return FakeOutcome(exit_code=1) if bad else writes(spec, attempt, files)

    runtime = Scripted({"train": script})
    bench = Bench(tmp_path, text, runtime)
    manifest = bench.run()
    assert manifest.steps["train"].status is settled
    select = manifest.steps["select"]
    if settled is StepStatus.succeeded:
        assert select.status is StepStatus.succeeded
        assert manifest.status is RunStatus.succeeded  # the failures it allows
        seen = runtime.files_seen["select"]
        index = json.loads(seen["/sluice/inputs/train/index.json"])
        assert [e["status"] for e in index].count("failed") == failing
        for entry in index:  # only what succeeded is handed over
            inside = f"/sluice/inputs/train/{entry['name']}/model.txt" in seen
            assert inside == (entry["status"] == "succeeded")
    else:
        assert select.status is StepStatus.upstream_failed


def test_an_instances_when_reads_its_matrix_values(tmp_path: Path) -> None:
    text = GRID.replace(
        "    run: train --depth", "    when: matrix.max_depth < 8\n    run: train --depth"
    )
    bench = Bench(tmp_path, text, Scripted({}))
    manifest = bench.run()
    skipped = [n for n, r in manifest.steps.items() if r.status is StepStatus.skipped]
    assert skipped == ["train[n_estimators=50,max_depth=8]", "train[n_estimators=100,max_depth=8]"]
    assert manifest.steps["train"].status is StepStatus.succeeded
    assert manifest.steps["select"].status is StepStatus.succeeded
    index = json.loads(stored_index(bench, manifest, "train"))
    assert [e["status"] for e in index].count("skipped") == 2


def test_fail_fast_cancels_the_instances_not_started(tmp_path: Path) -> None:
    text = GRID.replace("    needs: [prepare]\n", "    needs: [prepare]\n    fail_fast: true\n")
    runtime = Scripted({"train": fails_where(n_estimators=50, max_depth=3)})
    bench = Bench(tmp_path, text, runtime)
    manifest = bench.run(max_parallel=1)  # one at a time: the first instance fails first
    first = "train[n_estimators=50,max_depth=3]"
    assert [n for n in bench.started() if n.startswith("train[")] == [first]
    assert manifest.steps[first].status is StepStatus.failed
    others = [n for n in manifest.steps["train"].instances if n != first]
    for name in others:
        record = manifest.steps[name]
        assert record.status is StepStatus.cancelled and not record.attempts
        assert record.reason == f"fail_fast: {first} failed"
    assert manifest.steps["train"].status is StepStatus.failed
    assert manifest.steps["select"].status is StepStatus.upstream_failed
    assert manifest.status is RunStatus.failed


FAST = GRID.replace(
    "    needs: [prepare]\n", "    needs: [prepare]\n    fail_fast: true\n    timeout: 20s\n"
)
FIRST, SECOND = "train[n_estimators=50,max_depth=3]", "train[n_estimators=50,max_depth=5]"


def test_fail_fast_stops_a_running_instance_and_records_it_cancelled(tmp_path: Path) -> None:
    second_up = threading.Event()

    def script(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        if spec.labels["sluice.step"] == FIRST:
            assert second_up.wait(30), "the second instance never started"
            return FakeOutcome(exit_code=1)
        second_up.set()
        return FakeOutcome(logs="up\n", block=True)  # until killed (or its 20 s timeout)

    runtime = Scripted({"train": script})
    bench = Bench(tmp_path, FAST, runtime)
    manifest = bench.run(max_parallel=2)  # the first two instances start side by side
    assert sorted(n for n in bench.started() if n.startswith("train[")) == [FIRST, SECOND]
    assert runtime.killed_steps == [(manifest.run_id, SECOND)]  # that step only
    assert runtime.killed_runs == []
    assert manifest.steps[FIRST].status is StepStatus.failed
    stopped = manifest.steps[SECOND]
    why = f"fail_fast: {FIRST} failed"
    assert (stopped.status, stopped.reason) == (StepStatus.cancelled, why)
    [attempt] = stopped.attempts  # a cancelled attempt is never tried again
    assert (attempt.outcome, attempt.error, attempt.exit_code) == (Outcome.cancelled, why, None)
    for name in manifest.steps["train"].instances[2:]:  # never started
        record = manifest.steps[name]
        assert (record.status, record.reason, record.attempts) == (StepStatus.cancelled, why, [])
    group = manifest.steps["train"]
    assert group.status is StepStatus.failed  # its failure wins over the cancelled ones
    assert group.reason == "6 instances: 1 failed, 5 cancelled (allowed failures: 0)"
    assert manifest.steps["select"].status is StepStatus.upstream_failed
    assert manifest.status is RunStatus.failed
    assert runtime._running.get(manifest.run_id, []) == [] and runtime.staged == {}


class StopsFirst(Scripted):
    """Holds the attempts of `held` until a kill_step came for them (so that the stop
    reaches them before their container is made)."""

    def __init__(self, scripts: dict[str, Script], held: str) -> None:
        super().__init__(scripts)
        self.held, self.gate = held, threading.Event()

    def kill_step(self, run_id: str, step: str) -> int:
        killed = super().kill_step(run_id, step)
        if step == self.held:
            self.gate.set()
        return killed


def test_fail_fast_stops_an_instance_started_before_its_container_runs(tmp_path: Path) -> None:
    runtime = StopsFirst({"train": fails_where(n_estimators=50, max_depth=3)}, held=SECOND)

    class Held(Executor):
        def start(self, name: str, number: int) -> Job:
            job = super().start(name, number)
            if name != SECOND:
                return job
            return lambda: (runtime.gate.wait(30), job())[1]

    bench = Bench(tmp_path, FAST, runtime)
    options = bench.executor(max_parallel=2).options
    manifest = Held(bench.loaded, runtime, repo=bench.repo, options=options).run()
    assert runtime.gate.is_set()
    assert [n for n in bench.started() if n.startswith("train[")] == [FIRST]  # no container
    stopped = manifest.steps[SECOND]
    assert (stopped.status, stopped.reason) == (StepStatus.cancelled, f"fail_fast: {FIRST} failed")
    assert [a.outcome for a in stopped.attempts] == [Outcome.cancelled]
    assert manifest.steps["train"].status is StepStatus.failed
    assert manifest.status is RunStatus.failed
    assert runtime.staged == {}  # what was made ahead for it is gone too


def test_fail_fast_lets_instances_run_while_failures_are_allowed(tmp_path: Path) -> None:
    text = FAST.replace("    fail_fast: true\n", "    fail_fast: true\n    allow_failures: 1\n")
    failed = threading.Event()
    release = threading.Event()

    def script(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        if spec.labels["sluice.step"] == FIRST:
            failed.wait(30)  # the other one runs by then
            return FakeOutcome(exit_code=1)
        failed.set()
        assert release.wait(30), "never released"
        return writes(spec, attempt, files)

    runtime = Scripted({"train": script})
    bench = Bench(tmp_path, text, runtime)
    executor = bench.executor(max_parallel=2)
    thread = threading.Thread(target=executor.run)
    thread.start()
    poll(
        lambda: executor.manifest.steps[FIRST].status is StepStatus.failed,
        30,
        "the first instance to fail",
    )
    assert executor.manifest.steps[SECOND].status is StepStatus.running
    release.set()
    thread.join(30)
    manifest = executor.manifest
    assert runtime.killed_steps == []  # one failure is allowed: nothing is stopped
    assert manifest.steps[SECOND].status is StepStatus.succeeded
    assert [r.status for r in manifest.steps.values()].count(StepStatus.cancelled) == 0
    assert manifest.steps["train"].status is StepStatus.succeeded


def test_fail_fast_splits_a_groups_instances_into_waiting_and_running() -> None:
    now = "2026-12-04T05:00:00Z"
    loaded = load_text(textwrap.dedent(FAST), "pipelines/p.yaml")
    steps = {s.name: s for s in expand(loaded, dict(loaded.pipeline.params)).steps}
    names = list(steps["train"].instances)
    records = {
        name: StepRecord(type="container", image="img", needs=[], instance_of="train")
        for name in names
    }
    assert fanin.to_cancel(names[0], steps, records) == ([], [], "")  # nothing failed yet
    assert not fanin.halted(names[0], steps, records)
    records[names[0]].status = StepStatus.failed
    records[names[1]].status = StepStatus.running  # its attempt runs
    records[names[1]].attempts = [Attempt(number=1, started_at=now)]
    records[names[2]].status = StepStatus.running  # its attempt ended: waiting for a retry
    records[names[2]].attempts = [Attempt(number=1, started_at=now, outcome=Outcome.failed)]
    records[names[3]].status = StepStatus.succeeded
    waiting, running, why = fanin.to_cancel(names[0], steps, records)
    assert (waiting, running) == ([names[2], names[4], names[5]], [names[1]])
    assert why == f"fail_fast: {names[0]} failed"
    assert fanin.halted(names[1], steps, records)  # none of them is tried again
    assert not fanin.halted("prepare", steps, records)


class Counting(Executor):
    """Counts, as the scheduling loop sees them, the instances of each group in flight."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_flight: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    def start(self, name: str, number: int) -> Job:
        group = self.steps[name].instance_of or name
        self.in_flight[group] = self.in_flight.get(group, 0) + 1
        self.peak[group] = max(self.peak.get(group, 0), self.in_flight[group])
        return super().start(name, number)

    def apply(self, report: Any, stopping: bool) -> float | None:
        group = self.steps[report.step].instance_of or report.step
        self.in_flight[group] -= 1
        return super().apply(report, stopping)


MANY = """
name: many
defaults: {image: img, retries: {limit: 1, backoff: 0.01s}}
steps:
  - name: train
    foreach: [1, 2, 3, 4, 5, 6, 7]
    max_parallel: 2
    run: train
  - name: other
    foreach: [a, b, c]
    run: other
"""


def test_max_parallel_is_never_exceeded_even_by_a_retry(tmp_path: Path) -> None:
    lock = threading.Condition()
    state = {"now": 0, "peak": 0, "entered": 0}

    def script(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        with lock:  # held until two run at once (or no other one can come)
            state["now"] += 1
            state["entered"] += 1
            state["peak"] = max(state["peak"], state["now"])
            lock.notify_all()
            lock.wait_for(lambda: state["now"] >= 2 or state["entered"] >= 8, timeout=30)
            state["now"] -= 1
        if spec.labels["sluice.step"] == "train[3]" and attempt == 1:
            return FakeOutcome(exit_code=1)  # tried again: 8 attempts in all
        return writes(spec, attempt, files)

    bench = Bench(tmp_path, MANY, Scripted({"train": script}))
    loaded = bench.loaded
    options = bench.executor(max_parallel=5).options
    executor = Counting(loaded, bench.runtime, repo=bench.repo, options=options)
    manifest = executor.run()
    assert manifest.status is RunStatus.succeeded
    assert executor.peak["train"] == 2  # the loop's view: reached, never passed
    assert state["peak"] == 2  # the runtime's
    assert len(manifest.steps["train[3]"].attempts) == 2
    assert executor.peak["other"] == 3  # no limit of its own: the global one (5) applies


def test_retry_runs_only_the_failed_instances_again(tmp_path: Path) -> None:
    broken = {"on": True}

    def script(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        matrix = json.loads(files["/sluice/matrix.json"])
        if broken["on"] and matrix["max_depth"] == 8:
            return FakeOutcome(exit_code=1)
        return writes(spec, attempt, files)

    runtime = Scripted({"train": script})
    bench = Bench(tmp_path, GRID, runtime)
    failed = bench.run(use_cache=False)
    assert failed.status is RunStatus.failed
    assert failed.steps["train"].status is StepStatus.failed
    bench.started()
    broken["on"] = False
    again = bench.run(use_cache=False, reuse=failed)
    started = bench.started()  # the instances in either order (they run side by side)
    assert sorted(started[:2]) == [
        "train[n_estimators=100,max_depth=8]",
        "train[n_estimators=50,max_depth=8]",
    ]
    assert started[2:] == ["select"]
    for name in failed.steps["train"].instances:
        record = again.steps[name]
        if name.endswith("max_depth=8]"):
            assert record.status is StepStatus.succeeded
        else:
            assert (record.status, record.reason) == (
                StepStatus.cached,
                f"reused from {failed.run_id}",
            )
            assert record.outputs == failed.steps[name].outputs
    assert again.steps["train"].status is StepStatus.succeeded
    assert again.status is RunStatus.succeeded
    index = json.loads(runtime.files_seen["select"]["/sluice/inputs/train/index.json"])
    assert [e["status"] for e in index] == ["cached", "cached", "succeeded"] * 2


SWEEP = """
name: sweep
params: {depths: [3, 5]}
defaults: {image: img}
steps:
  - name: train
    matrix: {depth: "${{ params.depths }}"}
    run: train
  - name: select
    needs: [train]
    run: select
"""


def test_a_cached_rerun_with_one_value_more_runs_only_the_new_instance(tmp_path: Path) -> None:
    bench = Bench(tmp_path, SWEEP, Scripted({}))
    first = bench.run()
    started = bench.started()  # the instances in either order (they run side by side)
    assert sorted(started[:2]) == ["train[depth=3]", "train[depth=5]"] and started[2:] == ["select"]
    keys = {n: first.steps[n].cache_key for n in first.steps["train"].instances}
    assert len(set(keys.values())) == 2  # same command, config, env: the matrix tells apart

    same = bench.run()  # all of it from the cache, the step after the sweep too
    assert bench.started() == []
    assert same.steps["train"].status is StepStatus.cached
    assert same.steps["select"].status is StepStatus.cached

    more = bench.run(params={"depths": [3, 5, 8]})
    assert bench.started() == ["train[depth=8]", "select"]
    assert [more.steps[n].status for n in more.steps["train"].instances] == [
        StepStatus.cached,
        StepStatus.cached,
        StepStatus.succeeded,
    ]
    assert more.steps["train[depth=3]"].cache_key == keys["train[depth=3]"]
    assert more.steps["train"].status is StepStatus.succeeded
    assert (
        more.steps["select"].reason is not None and "inputs changed" in more.steps["select"].reason
    )


@pytest.mark.parametrize(
    ("bar", "runs"), [("0.8", True), ("0.9", False)]
)  # the best AUC is 0.8100 (max_depth 8, 100 estimators)
def test_a_step_after_a_group_reads_its_instances_in_when(
    tmp_path: Path, bar: str, runs: bool
) -> None:
    when = (
        f"max(steps.train.instances.*.metrics.auc) > {bar} and "
        "count(steps.train.instances.*.metrics.auc) == 6"
    )
    text = GRID.replace("  - name: select\n", f"  - name: select\n    when: {when}\n")
    bench = Bench(tmp_path, text, Scripted({}))
    executor = bench.executor()
    manifest = executor.run()
    select = manifest.steps["select"]
    assert select.status is (StepStatus.succeeded if runs else StepStatus.skipped), select.reason
    view = executor._context()["steps"]["train"]
    assert view["status"] == "succeeded" and view["metrics"] == {}
    assert view["instances"][4] == {
        "name": "train[n_estimators=100,max_depth=5]",
        "matrix": {"n_estimators": 100, "max_depth": 5},
        "status": "succeeded",
        "metrics": {"auc": 0.51},
    }


def test_dry_run_explains_instances_and_groups(tmp_path: Path) -> None:
    bench = Bench(tmp_path, SWEEP, Scripted({}))
    bench.run()
    bench.started()
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch2").mkdir()
    verdicts = bench.executor().explain(tmp_path / "scratch")
    assert [(name, cached) for name, cached, _ in verdicts] == [
        ("train[depth=3]", True),
        ("train[depth=5]", True),
        ("train", True),
        ("select", True),
    ]
    verdicts = bench.executor(params={"depths": [3, 8]}).explain(tmp_path / "scratch2")
    assert verdicts[:2] == [
        ("train[depth=3]", True, verdicts[0][2]),
        ("train[depth=8]", False, "it has not run before"),
    ]
    assert verdicts[2] == ("train", False, "1 of its 2 instances run")
    assert verdicts[3] == ("select", False, "needs 'train', which runs")
    assert bench.started() == []


APPROVED = (
    SWEEP
    + """
  - name: ship
    type: deployment
    needs: [select]
    approval: true
    run: ship
"""
)


def test_an_approval_after_a_sweep_resumes_with_the_same_instances(tmp_path: Path) -> None:
    bench = Bench(tmp_path, APPROVED, Scripted({}))
    paused = bench.run(params={"depths": [3, 5, 8]})
    assert paused.status is RunStatus.waiting_approval
    assert paused.steps["train"].instances == ["train[depth=3]", "train[depth=5]", "train[depth=8]"]
    bench.started()
    # the file's own default is [3, 5]: the paused run's params decide its instances
    done = bench.run(resume=paused, decision="approve", decided_by="me")
    assert bench.started() == ["ship"]
    assert done.status is RunStatus.succeeded
    assert list(done.steps) == list(paused.steps)
    assert done.steps["train"].status is StepStatus.succeeded


def test_a_resumed_run_lines_its_records_up_with_the_file_as_it_is_now(tmp_path: Path) -> None:
    bench = Bench(tmp_path, APPROVED, Scripted({}))
    paused = bench.run()
    assert paused.status is RunStatus.waiting_approval
    bench.started()
    # meanwhile the file gained a step after the one waiting for approval
    bench.loaded = load_text(
        textwrap.dedent(APPROVED + "  - name: tell\n    needs: [ship]\n    run: tell\n"),
        "pipelines/p.yaml",
    )
    done = bench.run(resume=paused, decision="approve", decided_by="me")
    assert bench.started() == ["ship", "tell"]
    assert done.steps["tell"].status is StepStatus.succeeded
    assert done.status is RunStatus.succeeded


BASELINED = """
name: gated
params: {depths: [3, 5]}
baseline: {step: ship}
defaults: {image: img}
steps:
  - name: train
    matrix: {depth: "${{ params.depths }}"}
    env: {AUC: "0.${{ matrix.depth }}"}
    cache: false
    run: train
  - name: ship
    type: deployment
    needs: [train]
    when: >-
      not baseline or
      max(steps.train.instances.*.metrics.auc) > max(baseline.steps.train.instances.*.metrics.auc)
    run: ship
"""


def test_when_compares_a_sweep_with_the_baseline_runs_sweep(tmp_path: Path) -> None:
    bench = Bench(tmp_path, BASELINED, Scripted({}))
    first = bench.run()
    assert first.steps["ship"].status is StepStatus.succeeded  # no baseline yet
    worse = bench.run(params={"depths": [3, 4]})  # best 0.4 < 0.5
    assert worse.baseline_run == first.run_id
    assert worse.steps["ship"].status is StepStatus.skipped
    better = bench.run(params={"depths": [3, 7]})  # best 0.7 > 0.5
    assert better.steps["ship"].status is StepStatus.succeeded
