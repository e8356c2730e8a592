"""A run pushes its final state as one commit on the results branch (plus one per approval
pause); every state before it stays under `.sluice/runs/`, which crash recovery reads.

Real git repositories (a bare repository on disk as origin). Runs go through the fake
runtime, except the tests marked docker, which go through real Docker and the real CLI.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import git, make_repo, poll, sluice

from engine.adapters.fake_runtime import FakeOutcome, FakeRuntime
from engine.adapters.git_results import ResultsStore
from engine.adapters.pipeline_files import find_pipeline
from engine.app.execution import execute, run_options
from engine.core import layout
from engine.core.config import RepoConfig
from engine.core.manifest import RunManifest, RunStatus, StepStatus, Trigger
from engine.core.production import deploy_once
from engine.ports import LABEL_RUN, ContainerSpec
from engine.run.records import History

BRANCH = "sluice-results"

SIX = """
name: six
defaults: {image: img}
steps:
  - {name: s1, run: one}
  - {name: s2, needs: [s1], run: two}
  - {name: s3, needs: [s2], run: three}
  - {name: s4, needs: [s2], run: four}
  - {name: s5, needs: [s3, s4], run: five}
  - {name: s6, needs: [s5], run: six}
"""

SHIP = """
name: ship
baseline: {step: deploy}
defaults: {image: img}
steps:
  - name: train
    cache: false
    run: train
  - name: deploy
    type: deployment
    needs: [train]
    run: deploy
"""

GATED = """
name: gated
defaults: {image: img}
steps:
  - name: train
    run: train
  - name: release
    needs: [train]
    approval: true
    run: release
finally:
  - name: notify
    cache: false
    run: notify
"""


def writes(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
    """Each step writes `<step>.txt` holding its name, and logs a line."""
    name = spec.labels["sluice.step"]
    return FakeOutcome(logs=f"{name} ran\n", files={f"{name}.txt": name.encode()})


def run(repo: Path, name: str, runtime: FakeRuntime, **given: Any) -> RunManifest:
    loaded = find_pipeline(repo, repo / "pipelines", name)
    assert loaded is not None
    options = run_options(repo, RepoConfig(), loaded, trigger=Trigger(kind="manual"))
    for key, value in given.items():
        setattr(options, key, value)
    return execute(repo, loaded, options, runtime=runtime)


def commits(origin: Path) -> int:
    """Commits on the origin's results branch (0 when it has none)."""
    listed = git(origin, "branch", "--list", BRANCH)
    return int(git(origin, "rev-list", "--count", BRANCH)) if listed else 0


def changed_paths(origin: Path) -> list[str]:
    """The paths the tip commit of the origin's results branch changed."""
    return git(origin, "show", "--name-only", "--format=", BRANCH).splitlines()


def test_a_six_step_run_and_its_fully_cached_rerun_are_one_commit_each(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"six.yaml": SIX}, origin=True)
    origin = tmp_path / "origin.git"
    runtime = FakeRuntime(default=None, steps={f"s{n}": writes for n in range(1, 7)})

    first = run(repo, "six", runtime)
    assert first.status is RunStatus.succeeded and len(runtime.calls) == 6
    assert commits(origin) == 1
    paths = changed_paths(origin)
    assert f"runs/six/{first.run_id}/manifest.json" in paths
    assert sum(p.startswith(f"runs/six/{first.run_id}/logs/") for p in paths) == 6
    cached = [p for p in paths if p.startswith(layout.CACHE + "/")]
    assert {layout.cache_last("six", f"s{n}") for n in range(1, 7)} <= {*cached}
    assert len(cached) == 12  # and every step's entry
    with ResultsStore(origin, push=False) as store:
        assert store.manifest(first.run_id) == first

    runtime.calls.clear()
    again = run(repo, "six", runtime)
    assert not runtime.calls  # nothing executes
    assert {r.status for r in again.steps.values()} == {StepStatus.cached}
    assert commits(origin) == 2
    assert changed_paths(origin) == [f"runs/six/{again.run_id}/manifest.json"]


def test_a_run_that_deploys_records_production_in_the_same_commit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"ship.yaml": SHIP}, origin=True)
    origin = tmp_path / "origin.git"
    runtime = FakeRuntime(default=None, steps={"train": writes, "deploy": writes})

    first = run(repo, "ship", runtime)
    assert commits(origin) == 1
    assert {*changed_paths(origin)} >= {
        f"runs/ship/{first.run_id}/manifest.json",
        layout.production("ship"),
        layout.production_entry("ship", 1),
        layout.succeeded("ship", "deploy"),
    }
    second = run(repo, "ship", runtime)
    assert commits(origin) == 2
    assert second.baseline_run == first.run_id
    with ResultsStore(origin, push=False) as store:
        pointer = History(store).pointer("ship")
        entry = json.loads(store.read(layout.production_entry("ship", 2)) or b"{}")
    assert pointer is not None
    assert (pointer.run_id, pointer.previous, pointer.seq) == (second.run_id, first.run_id, 2)
    assert (entry["run_id"], entry["action"]) == (second.run_id, "deploy")


def test_a_pull_request_preview_never_becomes_production(tmp_path: Path) -> None:
    """Not even with a baseline step that is not a deployment (which a preview runs)."""
    text = "name: judged\nbaseline: {step: evaluate}\ndefaults: {image: img}\n"
    text += "steps:\n  - {name: prep, run: p}\n"
    text += "  - {name: evaluate, needs: [prep], cache: false, run: e}\n"
    repo = make_repo(tmp_path, {"judged.yaml": text}, origin=True)
    origin = tmp_path / "origin.git"
    runtime = FakeRuntime(default=None, steps={"prep": writes, "evaluate": writes})
    preview = Trigger(kind="pull_request", event="pull_request", payload={"number": 7})
    done = run(repo, "judged", runtime, trigger=preview)
    assert done.steps["evaluate"].status is StepStatus.succeeded
    assert commits(origin) == 1
    paths = changed_paths(origin)
    assert f"runs/judged/{done.run_id}/manifest.json" in paths
    assert layout.cache_last("judged", "prep") in paths  # the cache is shared with main
    assert not [p for p in paths if p.startswith((layout.PRODUCTION, layout.SUCCEEDED))]
    plain = run(repo, "judged", runtime)
    assert plain.steps["evaluate"].status is StepStatus.succeeded
    assert commits(origin) == 2 and layout.production("judged") in changed_paths(origin)


def test_a_claim_lost_to_another_writer_still_records_the_run_and_its_deploy(
    tmp_path: Path,
) -> None:
    """Another runner records production entry 1 while the run deploys (after it read the
    branch): the combined commit loses its claim, so the record goes alone and production
    follows as entry 2, decided on the other runner's production."""
    repo = make_repo(tmp_path, {"ship.yaml": SHIP}, origin=True)
    origin = tmp_path / "origin.git"
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(origin), str(other))
    rival = "20260101T000000Z-0000aa"

    def deploy(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        with ResultsStore(other) as store:  # pushes: the origin now has entry 1
            History(store).change_production("ship", "deploy", deploy_once(rival, "deploy"), by="x")
        return writes(spec, attempt, files)

    runtime = FakeRuntime(default=None, steps={"train": writes, "deploy": deploy})
    done = run(repo, "ship", runtime)

    assert done.status is RunStatus.succeeded and not done.engine_error
    assert commits(origin) == 3  # the rival's change, our record, our production change
    with ResultsStore(origin, push=False) as store:
        assert store.manifest(done.run_id) == done
        pointer = History(store).pointer("ship")
        first = json.loads(store.read(layout.production_entry("ship", 1)) or b"{}")
    assert pointer is not None
    assert (pointer.run_id, pointer.previous, pointer.seq) == (done.run_id, rival, 2)
    assert first["run_id"] == rival  # the rival's entry stays as it wrote it


def test_an_approval_pause_is_one_commit_and_approve_one_more(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"gated.yaml": GATED}, origin=True)
    origin = tmp_path / "origin.git"
    runtime = FakeRuntime(default=None, steps={n: writes for n in ("train", "release", "notify")})

    paused = run(repo, "gated", runtime)
    assert paused.status is RunStatus.waiting_approval
    assert commits(origin) == 1
    with ResultsStore(origin, push=False) as store:
        assert store.manifest(paused.run_id) == paused  # where `approve` finds it

    done = run(repo, "gated", runtime, resume=paused, decision="approve", decided_by="alice")
    assert done.status is RunStatus.succeeded and done.run_id == paused.run_id
    assert commits(origin) == 2
    paths = changed_paths(origin)
    assert {f"runs/gated/{done.run_id}/logs/{n}.1.log" for n in ("release", "notify")} <= {*paths}
    assert f"runs/gated/{done.run_id}/logs/train.1.log" not in paths  # recorded with the pause


def test_states_before_the_end_stay_in_the_local_manifest(tmp_path: Path) -> None:
    """While a step runs, the origin has nothing of the run; `.sluice/runs/` has every state."""
    repo = make_repo(tmp_path, {"six.yaml": SIX}, origin=True)
    origin = tmp_path / "origin.git"
    seen: list[tuple[int, dict[str, str]]] = []

    def look(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        run_id = spec.labels[LABEL_RUN]
        local = json.loads((repo / layout.local_run(run_id) / layout.MANIFEST).read_text())
        seen.append((commits(origin), {n: s["status"] for n, s in local["steps"].items()}))
        return writes(spec, attempt, files)

    runtime = FakeRuntime(default=None, steps={f"s{n}": writes for n in range(1, 7)})
    runtime.steps["s5"] = look
    assert run(repo, "six", runtime).status is RunStatus.succeeded
    [(before, states)] = seen
    assert before == 0
    assert {n: states[n] for n in ("s1", "s2", "s3", "s4", "s6")} == {
        "s1": "succeeded",
        "s2": "succeeded",
        "s3": "succeeded",
        "s4": "succeeded",
        "s6": "pending",
    }
    assert commits(origin) == 1


# ---- real Docker, the real CLI -----------------------------------------------------------

KILLED = """
name: crashed
defaults: {{image: {image}}}
steps:
  - name: first
    run: echo done > /sluice/outputs/first.txt
  - name: second
    needs: [first]
    run: 'test -e quick || sleep 120'
"""


def _local_runs(repo: Path) -> list[dict[str, Any]]:
    folder = repo / layout.LOCAL_RUNS
    found = sorted(folder.glob("*/manifest.json")) if folder.is_dir() else []
    return [json.loads(p.read_text()) for p in found]


@pytest.mark.docker
def test_retry_after_sigkill_works_before_gc_and_refuses_a_live_run(
    tmp_path: Path, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    repo = make_repo(tmp_path, {"crashed.yaml": KILLED.format(image=busybox_image)}, origin=True)
    try:
        _sigkill_then_retry(repo, tmp_path / "origin.git", docker_client)
    finally:  # a failure leaves no container to the next test (`sluice gc` does it on success)
        mine = {"label": "sluice.pipeline=crashed"}
        for left in docker_client.containers.list(all=True, filters=mine):
            left.remove(force=True)


def _sigkill_then_retry(repo: Path, origin: Path, docker_client: docker.DockerClient) -> None:
    engine = subprocess.Popen(
        [sys.executable, "-m", "engine", "--repo", str(repo), "run", "crashed", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        second = {"label": ["sluice.pipeline=crashed", "sluice.step=second"], "status": "running"}
        poll(lambda: docker_client.containers.list(filters=second), 60, "step second to start")
        [local] = _local_runs(repo)
        run_id = local["run_id"]
        assert local["status"] == "running" and local["steps"]["first"]["status"] == "succeeded"
        assert commits(origin) == 0  # nothing of the run is pushed before its end
        listed = sluice("runs", "--json", repo=repo)  # this machine lists it from .sluice/
        assert listed.returncode == 0, listed.stderr
        assert [(m["run_id"], m["status"]) for m in json.loads(listed.stdout)] == [
            (run_id, "running")
        ]
        alive = sluice("retry", run_id, repo=repo)
        assert alive.returncode == 2
        assert f"run {run_id} is still running here (pid {engine.pid})" in alive.stderr
    finally:
        engine.send_signal(signal.SIGKILL)
        engine.wait(timeout=30)
    assert commits(origin) == 0
    shown = sluice("show", run_id, repo=repo)  # the local record, before gc
    assert shown.returncode == 0, shown.stderr
    assert f"its engine (pid {engine.pid} on " in shown.stdout

    (repo / "quick").write_text("the retry need not wait\n")
    retried = sluice("retry", run_id, "--json", repo=repo, process=True)
    assert retried.returncode == 0, retried.stderr
    assert f"run {run_id} (crashed) closed as cancelled" in retried.stderr
    steps = json.loads(retried.stdout)["steps"]
    assert steps["first"]["status"] == "cached" and steps["second"]["status"] == "succeeded"
    assert commits(origin) == 2  # the crashed run, closed; the retry
    with ResultsStore(origin, push=False) as store:
        crashed = store.manifest(run_id)
        assert crashed is not None and crashed.status is RunStatus.cancelled
        assert store.log(run_id, "first", 1) is not None  # its finished step's log, kept
    again = sluice("gc", repo=repo, process=True)
    assert "closed 0 runs" in again.stderr, again.stderr
    listed = json.loads(sluice("runs", "--json", repo=repo).stdout)
    assert sorted(m["status"] for m in listed) == ["cancelled", "succeeded"]  # once each


@pytest.mark.docker
def test_a_six_step_run_through_the_cli_is_one_commit_and_so_is_its_cached_rerun(
    tmp_path: Path, busybox_image: str
) -> None:
    steps = "\n".join(
        f"  - {{name: s{n}, run: 'echo {n} > /sluice/outputs/s{n}.txt'"
        + (f", needs: [s{n - 1}]" if n > 1 else "")
        + "}"
        for n in range(1, 7)
    )
    text = f"name: six\ndefaults: {{image: {busybox_image}}}\nsteps:\n{steps}\n"
    repo = make_repo(tmp_path, {"six.yaml": text}, origin=True)
    origin = tmp_path / "origin.git"
    for expected, status in ((1, "succeeded"), (2, "cached")):
        done = sluice("run", "six", "--json", repo=repo, process=True)
        assert done.returncode == 0, done.stderr
        assert {s["status"] for s in json.loads(done.stdout)["steps"].values()} == {status}
        assert commits(origin) == expected
