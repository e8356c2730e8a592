"""A run's end, whatever happens around it (issue 12, items 7-9): a record that cannot be
pushed never ends green, a run whose engine was killed outright is closed by `sluice gc`,
an unavailable Docker says so, and concurrent runs in one clone all land.

Real git (bare origins on disk, renamed away or refusing through a hook), real Docker,
real engine processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import ROOT, git, make_repo, poll, sluice

from engine.adapters.git_results import ResultsStore
from engine.core.manifest import RunManifest, StepRecord, StepStatus, utc_iso
from engine.local import liveness

BRANCH = "sluice-results"


def quick(image: str, name: str = "p", extra: str = "") -> str:
    return f"""
    name: {name}
    {extra}
    steps:
      - name: only
        image: {image}
        run: echo working
    """


def runs_on(where: Path, pipeline: str, ref: str = BRANCH) -> list[str]:
    listed = git(where, "ls-tree", "--name-only", ref, f"runs/{pipeline}/")
    return sorted(line.rsplit("/", 1)[-1] for line in listed.splitlines())


def refuse_pushes(origin: Path) -> None:
    """The origin answers fetches but refuses every push, saying why (a pre-receive hook)."""
    hook = origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'results are frozen today' >&2\nexit 1\n")
    hook.chmod(0o755)


# --- 7. a record that could not be pushed never ends green ----------------------------------


@pytest.mark.docker
def test_an_unreachable_origin_exits_3_and_the_next_run_pushes_both(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(tmp_path, {"p.yaml": quick(busybox_image)}, origin=True)
    origin, gone = tmp_path / "origin.git", tmp_path / "gone.git"
    origin.rename(gone)
    summary = tmp_path / "summary.md"
    github = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}

    lost = sluice("run", "p", "--json", repo=repo, env=github)

    assert lost.returncode == 3, lost.stderr  # was 0: an ephemeral runner went green
    manifest = json.loads(lost.stdout)  # --json still prints the manifest
    assert manifest["status"] == "succeeded" and manifest["engine_error"] is True
    # git's whole message, not its last line alone ("and the repository exists.")
    whole = "does not appear to be a git repository"
    assert whole in manifest["error"] and "the repository exists" in manifest["error"]
    assert f"sluice: error: run {manifest['run_id']} (p): " in lost.stderr
    annotation = next(line for line in lost.stderr.splitlines() if line.startswith("::error"))
    assert manifest["run_id"] in annotation and whole in annotation
    assert "Sluice error" in summary.read_text() and whole in summary.read_text()
    # the record stays committed locally, as the run ended
    assert runs_on(repo, "p") == [manifest["run_id"]]
    recorded = json.loads(git(repo, "show", f"{BRANCH}:runs/p/{manifest['run_id']}/manifest.json"))
    assert recorded["status"] == "succeeded" and not recorded.get("engine_error")

    retried = sluice("retry", manifest["run_id"], repo=repo)  # same rule for retry
    assert retried.returncode == 3, retried.stderr

    gone.rename(origin)
    again = sluice("run", "p", "--json", repo=repo)
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert not second["engine_error"]
    ids = runs_on(repo, "p")
    assert len(ids) == 3 and {manifest["run_id"], second["run_id"]} <= set(ids)
    assert runs_on(origin, "p") == ids  # the earlier records went out with this run's


@pytest.mark.docker
def test_a_refused_push_fails_trigger_and_tick_with_3(tmp_path: Path, busybox_image: str) -> None:
    pipelines = {"p.yaml": quick(busybox_image, extra='triggers: [{cron: "0 2 * * *"}]')}
    repo = make_repo(tmp_path, pipelines, origin=True)
    refuse_pushes(tmp_path / "origin.git")
    event = tmp_path / "dispatch.json"
    event.write_text(json.dumps({"inputs": {"pipeline": "p"}}))
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs.txt"
    github = {"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(outputs)}

    triggered = sluice(
        "trigger", "--event-name", "workflow_dispatch", "--event-path", str(event), "--json",
        repo=repo, env=github,
    )  # fmt: skip

    assert triggered.returncode == 3, triggered.stderr
    [run] = json.loads(triggered.stdout)
    assert run["status"] == "succeeded" and run["engine_error"] is True
    assert "results are frozen today" in run["error"]  # what the remote said
    assert "results are frozen today" in summary.read_text()

    ticked = sluice("tick", "--now", "2026-11-25T02:05:00Z", "--json", repo=repo)
    assert ticked.returncode == 3, ticked.stderr  # was 1: the claim could not be pushed
    assert "results are frozen today" in ticked.stderr
    assert "claims/cron" not in git(repo, "ls-tree", "--name-only", BRANCH)  # taken back

    (tmp_path / "origin.git" / "hooks" / "pre-receive").unlink()  # the origin takes pushes
    again = sluice("tick", "--now", "2026-11-25T02:05:00Z", "--json", repo=repo)
    assert again.returncode == 0, again.stderr  # was: "already claimed: not run again"
    [cron] = json.loads(again.stdout)
    assert cron["trigger"]["scheduled_for"] == "2026-11-25T02:00:00Z"
    assert set(runs_on(tmp_path / "origin.git", "p")) == {run["run_id"], cron["run_id"]}


# --- held: three concurrent runs in one clone, each pushing, all recorded --------------------


@pytest.mark.docker
def test_three_concurrent_runs_in_one_clone_all_land_on_the_origin(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(tmp_path, {"p.yaml": quick(busybox_image)}, origin=True)
    barrier = threading.Barrier(3)
    done: list[subprocess.CompletedProcess[str]] = []

    def one() -> None:
        barrier.wait()
        done.append(sluice("run", "p", "--json", "-q", repo=repo, process=True))

    threads = [threading.Thread(target=one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert [d.returncode for d in done] == [0, 0, 0], [d.stderr[-800:] for d in done]
    ids = sorted(json.loads(d.stdout)["run_id"] for d in done)
    assert runs_on(tmp_path / "origin.git", "p") == ids
    for run_id in ids:
        text = git(tmp_path / "origin.git", "show", f"{BRANCH}:runs/p/{run_id}/manifest.json")
        assert json.loads(text)["status"] == "succeeded"


# --- 8. a run whose engine was killed outright is closed by `sluice gc` ---------------------

NAP = """
name: nap
defaults: {{image: {image}}}
steps:
  - name: first
    run: echo first
  - name: slow
    needs: [first]
    run: 'test -e fast || sleep 120'
"""


@pytest.mark.docker
def test_gc_closes_a_run_whose_engine_was_sigkilled_and_retry_reuses_it(
    tmp_path: Path, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    repo = make_repo(tmp_path, {"nap.yaml": NAP.format(image=busybox_image)}, origin=True)
    origin = tmp_path / "origin.git"
    engine = subprocess.Popen(
        [sys.executable, "-m", "engine", "--repo", str(repo), "run", "nap", "-q"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        slow = {"label": ["sluice.pipeline=nap", "sluice.step=slow"], "status": "running"}
        poll(lambda: docker_client.containers.list(filters=slow), 60, "step slow to start")
    finally:
        engine.kill()  # SIGKILL: no handler runs, nothing is cleaned up
        engine.wait(timeout=30)
    # a run is pushed once, at its end: until gc, its record is the local one only
    assert not git(origin, "branch", "--list", BRANCH)
    [local_manifest] = (repo / ".sluice" / "runs").glob("*/manifest.json")
    before = json.loads(local_manifest.read_text())
    run_id = before["run_id"]
    assert before["status"] == "running" and before["steps"]["first"]["status"] == "succeeded"
    assert before["engine"]["pid"] == engine.pid and before["engine"]["boot_id"]
    shown = sluice("show", run_id, repo=repo)  # a command that notices says so
    assert f"its engine (pid {engine.pid} on " in shown.stdout
    assert "`sluice gc` closes the run as cancelled" in shown.stdout

    collected = sluice("gc", repo=repo, process=True)

    assert collected.returncode == 0, collected.stderr
    assert f"run {run_id} (nap) closed as cancelled" in collected.stderr
    after = json.loads(git(origin, "show", f"{BRANCH}:runs/nap/{run_id}/manifest.json"))
    assert after["status"] == "cancelled" and f"pid {engine.pid}" in after["error"]
    assert after["steps"]["first"]["status"] == "succeeded"
    assert after["steps"]["slow"]["status"] == "cancelled"
    local = json.loads((repo / ".sluice" / "runs" / run_id / "manifest.json").read_text())
    assert local["status"] == "cancelled"
    assert not docker_client.containers.list(all=True, filters={"label": "sluice.pipeline=nap"})

    (repo / "fast").write_text("the retry need not wait\n")
    retried = sluice("retry", run_id, "--json", repo=repo)
    assert retried.returncode == 0, retried.stderr
    steps = json.loads(retried.stdout)["steps"]
    assert steps["first"]["status"] == "cached" and steps["slow"]["status"] == "succeeded"
    again = sluice("gc", repo=repo, process=True)
    assert "closed 0 runs" in again.stderr, again.stderr


def _record(repo: Path, run_id: str, engine: dict[str, Any], started: datetime) -> None:
    manifest = RunManifest(
        run_id=run_id,
        pipeline="nap",
        pipeline_file="pipelines/nap.yaml",
        pipeline_sha256="0" * 64,
        started_at=utc_iso(started),
        engine=engine,
        steps={"slow": StepRecord(type="training", status=StepStatus.running)},
    )
    with ResultsStore(repo) as store:
        store.record_run(manifest)


@pytest.mark.docker
def test_gc_closes_only_runs_whose_engine_is_provably_gone(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(tmp_path, {"nap.yaml": NAP.format(image=busybox_image)}, commit="nap")
    now = datetime.now(UTC)
    me = liveness.identity()  # this test process: alive, so its runs stay open
    cases = {
        "alive": (me, now),
        "pid-reused": ({**me, "pid_started": me["pid_started"] + 1}, now),
        "rebooted": ({**me, "boot_id": "00000000-0000-0000-0000-000000000000"}, now),
        "elsewhere": ({**me, "host": "another-runner"}, now - timedelta(days=6)),
        "elsewhere-silent": ({**me, "host": "another-runner"}, now - timedelta(days=8)),
    }
    ids = {}
    for index, (name, (engine, started)) in enumerate(cases.items()):
        ids[name] = f"{started:%Y%m%dT%H%M%SZ}-00000{index}"
        _record(repo, ids[name], engine, started)

    collected = sluice("gc", repo=repo)

    assert collected.returncode == 0, collected.stderr
    with ResultsStore(repo) as store:
        status = {name: store.manifest(ids[name]).status.value for name in cases}  # type: ignore[union-attr]
    assert status == {
        "alive": "running",
        "pid-reused": "cancelled",
        "rebooted": "cancelled",
        "elsewhere": "running",
        "elsewhere-silent": "cancelled",
    }
    assert "closed 3 runs" in collected.stderr


# --- 9. Docker unavailable: the cause recorded, the manifests printed, exit 3 ----------------


@pytest.mark.parametrize("command", ["trigger", "tick"])
def test_trigger_and_tick_without_docker_exit_3_and_record_the_cause(
    tmp_path: Path, command: str
) -> None:
    pipelines = {"p.yaml": quick("sluice-test/busybox:1", extra='triggers: [{cron: "0 2 * * *"}]')}
    repo = make_repo(tmp_path, pipelines, origin=True)
    event = tmp_path / "dispatch.json"
    event.write_text(json.dumps({"inputs": {"pipeline": "p"}}))
    args = {
        "trigger": ["--event-name", "workflow_dispatch", "--event-path", str(event)],
        "tick": ["--now", "2026-11-25T02:05:00Z"],
    }[command]
    nobody = f"unix://{tmp_path / 'nobody.sock'}"
    env = {"DOCKER_HOST": nobody, "GITHUB_ACTIONS": "true"}

    done = sluice(command, *args, "--json", repo=repo, env=env)

    assert done.returncode == 3, done.stderr
    [run] = json.loads(done.stdout)
    assert run["status"] == "failed" and run["engine_error"] is True
    assert "cannot reach the Docker daemon" in run["error"]
    assert run["steps"]["only"]["reason"] == "not started: the engine could not run"
    assert any(line.startswith("::error") for line in done.stderr.splitlines())
    text = git(tmp_path / "origin.git", "show", f"{BRANCH}:runs/p/{run['run_id']}/manifest.json")
    assert json.loads(text)["error"] == run["error"]  # the cause is recorded, and pushed
