"""Every run leaves its record in git: results branch, artifacts, cache, retry, approvals, baseline.

Real git repositories (a bare repository on disk as origin), real Docker, the real CLI.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import git, make_repo, poll, sluice

pytestmark = pytest.mark.docker


def cli(repo: Path, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    done = sluice(*args, repo=repo, process=True, timeout=600)
    assert "Traceback" not in done.stderr, done.stderr
    if check is not None:
        assert done.returncode == check, done.stderr
    return done


def run_json(repo: Path, *args: str, check: int | None = 0) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(cli(repo, *args, "--json", check=check).stdout)
    return result


def five_steps(busybox: str) -> str:
    return f"""
    name: five
    params: {{fail_at: 0, scale: 1}}
    defaults: {{image: {busybox}}}
    steps:
      - name: s1
        workspace: false
        run: echo one > /sluice/outputs/one.txt
      - name: s2
        needs: [s1]
        config: {{scale: "${{{{ params.scale }}}}"}}
        workspace: false
        run: cat /sluice/inputs/s1/one.txt /sluice/config.json > /sluice/outputs/two.txt
      - name: s3
        needs: [s2]
        env: {{FAIL_AT: "${{{{ params.fail_at }}}}"}}
        workspace: [data/input.txt]
        run: '[ "$FAIL_AT" != 3 ] && cat data/input.txt /sluice/inputs/s2/two.txt > /sluice/outputs/three.txt'
      - name: s4
        needs: [s3]
        workspace: false
        run: (cat /sluice/inputs/s3/three.txt; echo four) > /sluice/outputs/four.txt
      - name: s5
        type: deployment
        needs: [s4]
        run: cat /sluice/inputs/s4/four.txt
    """


def five_repo(tmp_path: Path, image: str) -> Path:
    """A repository with `five` (five_steps) and its input, pushed to a bare origin."""
    return make_repo(
        tmp_path, {"five.yaml": five_steps(image)}, {"data/input.txt": "rows\n"}, origin=True
    )


def containers_created(client: docker.DockerClient, run_id: str, since: float) -> int:
    """Containers the daemon created for one run (docker events: nothing is missed)."""
    events = client.events(
        since=int(since) - 1,
        until=int(time.time()) + 1,
        filters={"type": "container", "event": "create", "label": f"sluice.run-id={run_id}"},
        decode=True,
    )
    return sum(1 for _ in events)


def test_a_run_leaves_the_users_repository_untouched(tmp_path: Path, busybox_image: str) -> None:
    repo = five_repo(tmp_path, busybox_image)
    git(repo, "checkout", "-qb", "feature")
    (repo / "data/input.txt").write_text("stashed edit\n")
    git(repo, "stash", "-q")
    (repo / "data/input.txt").write_text("staged edit\n")
    git(repo, "add", "data/input.txt")
    (repo / "data/input.txt").write_text("unstaged edit\n")
    (repo / "notes.txt").write_text("untracked\n")

    def state() -> dict[str, Any]:
        return {
            "status": git(repo, "status", "--porcelain=v2", "--branch"),
            "head": git(repo, "rev-parse", "HEAD"),
            "branch": git(repo, "symbolic-ref", "HEAD"),
            "stash": git(repo, "stash", "list"),
            "index": (repo / ".git" / "index").read_bytes(),
            "files": {
                p: p.read_bytes()
                for p in repo.rglob("*")
                if ".git" not in p.parts and ".sluice" not in p.parts and p.is_file()
            },
        }

    before = state()
    manifest = run_json(repo, "run", "five")
    assert manifest["status"] == "succeeded"
    assert manifest["dirty"] is True
    assert manifest["commit"] == before["head"].strip()
    assert state() == before
    # the step saw the working tree as it was (unstaged edit), never the stash
    assert "unstaged edit" in cli(repo, "logs", manifest["run_id"], "s5").stdout
    remote = git(repo, "ls-remote", "origin", "sluice-results")
    assert remote.strip(), "the results branch was pushed"


def test_concurrent_runs_from_twelve_clones_all_land(tmp_path: Path, busybox_image: str) -> None:
    repo = make_repo(
        tmp_path,
        {
            "one.yaml": f"name: one\nsteps:\n  - name: only\n    image: {busybox_image}\n    run: 'true'\n"
        },
        origin=True,
    )
    origin = tmp_path / "origin.git"
    git(origin, "config", "receive.denyNonFastForwards", "true")
    clones = []
    for index in range(12):
        clone = tmp_path / f"clone{index}"
        git(tmp_path, "clone", "-q", str(origin), str(clone))
        clones.append(clone)
    barrier = threading.Barrier(12)
    results: list[subprocess.CompletedProcess[str]] = []

    def one(clone: Path) -> None:
        barrier.wait()
        results.append(cli(clone, "run", "one", "-q", check=None))

    threads = [threading.Thread(target=one, args=(c,)) for c in clones]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert [r.returncode for r in results] == [0] * 12, [r.stderr[-500:] for r in results]
    listed = git(origin, "ls-tree", "--name-only", "sluice-results", "runs/one/")
    assert len(listed.split()) == 12
    # every recording commit of every clone reached origin (nothing force-pushed away)
    reachable = set(git(origin, "rev-list", "sluice-results").split())
    for clone in clones:
        assert set(git(clone, "rev-list", "sluice-results").split()) <= reachable
    assert repo.exists()


def test_artifact_pointers_match_the_stored_bytes(tmp_path: Path, busybox_image: str) -> None:
    pipeline = f"""
    name: twins
    defaults: {{image: {busybox_image}}}
    steps:
      - name: left
        run: printf same > /sluice/outputs/a.txt
      - name: right
        run: printf same > /sluice/outputs/b.txt; printf other > /sluice/outputs/c.txt
    """
    repo = make_repo(tmp_path, {"twins.yaml": pipeline}, origin=True)
    manifest = run_json(repo, "run", "twins")
    pointers = [
        *manifest["steps"]["left"]["outputs"].values(),
        *manifest["steps"]["right"]["outputs"].values(),
    ]
    for pointer in pointers:
        assert pointer["store"] == "file://.sluice/artifacts"  # relative to the repository
        data = (repo / pointer["uri"].removeprefix("file://")).read_bytes()
        assert hashlib.sha256(data).hexdigest() == pointer["sha256"]
        assert len(data) == pointer["size"]
    a = manifest["steps"]["left"]["outputs"]["a.txt"]
    b = manifest["steps"]["right"]["outputs"]["b.txt"]
    assert a["uri"] == b["uri"]  # identical content, one object
    objects = [p for p in (repo / ".sluice" / "artifacts").rglob("*") if p.is_file()]
    assert len(objects) == 2
    # artifacts never go on the results branch
    tree = git(repo, "ls-tree", "-r", "--name-only", "sluice-results")
    assert "a.txt" not in tree and "artifacts" not in tree


def test_caching_behaves_exactly_as_specified(
    tmp_path: Path, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    repo = five_repo(tmp_path, busybox_image)
    first = run_json(repo, "run", "five")
    assert all(s["status"] == "succeeded" for s in first["steps"].values())

    since = time.time()
    again = run_json(repo, "run", "five")
    statuses = {n: s["status"] for n, s in again["steps"].items()}
    assert statuses == {
        "s1": "cached",
        "s2": "cached",
        "s3": "cached",
        "s4": "cached",
        "s5": "succeeded",
    }
    assert all(
        again["steps"][n]["cached_from"] == first["run_id"] for n in ("s1", "s2", "s3", "s4")
    )
    # only the deployment step started a container
    assert containers_created(docker_client, again["run_id"], since) == 1

    middle = run_json(repo, "run", "five", "-p", "scale=2")
    assert {n: s["status"] for n, s in middle["steps"].items()} == {
        "s1": "cached",
        "s2": "succeeded",
        "s3": "succeeded",
        "s4": "succeeded",
        "s5": "succeeded",
    }

    (repo / "data/input.txt").write_text("new rows\n")
    edited = run_json(repo, "run", "five", "-p", "scale=2")
    assert {n: s["status"] for n, s in edited["steps"].items()} == {
        "s1": "cached",
        "s2": "cached",
        "s3": "succeeded",
        "s4": "succeeded",
        "s5": "succeeded",
    }

    pointer = edited["steps"]["s4"]["outputs"]["four.txt"]
    (repo / pointer["uri"].removeprefix("file://")).unlink()
    gone = run_json(repo, "run", "five", "-p", "scale=2")
    assert gone["steps"]["s3"]["status"] == "cached"
    assert gone["steps"]["s4"]["status"] == "succeeded"

    uncached = run_json(repo, "run", "five", "-p", "scale=2", "--no-cache")
    assert {s["status"] for s in uncached["steps"].values()} == {"succeeded"}


def test_dry_run_says_why_a_step_misses(tmp_path: Path, busybox_image: str) -> None:
    repo = five_repo(tmp_path, busybox_image)
    run_json(repo, "run", "five")
    (repo / "data/input.txt").write_text("changed\n")
    verdicts = {
        d["step"]: d
        for d in json.loads(cli(repo, "run", "five", "--dry-run", "--json", "-p", "scale=3").stdout)
    }
    assert verdicts["s1"]["cached"] is True
    assert verdicts["s2"]["reason"] == "the config changed"
    assert verdicts["s3"]["reason"] == "needs 's2', which runs"
    assert verdicts["s5"]["reason"] == "deployment steps are never cached"
    only_file = {
        d["step"]: d for d in json.loads(cli(repo, "run", "five", "--dry-run", "--json").stdout)
    }
    assert only_file["s3"]["reason"] == "workspace files changed (data/input.txt)"


def test_retry_after_a_failure_reuses_what_succeeded(tmp_path: Path, busybox_image: str) -> None:
    repo = five_repo(tmp_path, busybox_image)
    failed = run_json(repo, "run", "five", "-p", "fail_at=3", "--no-cache", check=1)
    assert [failed["steps"][n]["status"] for n in ("s1", "s2", "s3", "s4", "s5")] == [
        "succeeded",
        "succeeded",
        "failed",
        "upstream_failed",
        "upstream_failed",
    ]
    # the code is fixed: retry keeps the run's params, so make the step pass another way
    pipeline = repo / "pipelines" / "five.yaml"
    pipeline.write_text(pipeline.read_text().replace('[ "$FAIL_AT" != 3 ] && ', ""))
    retried = run_json(repo, "retry", failed["run_id"])
    assert retried["trigger"]["kind"] == "retry"
    assert [retried["steps"][n]["status"] for n in ("s1", "s2", "s3", "s4", "s5")] == [
        "cached",
        "cached",
        "succeeded",
        "succeeded",
        "succeeded",
    ]
    assert retried["steps"]["s1"]["cached_from"] == failed["run_id"]
    assert retried["steps"]["s1"]["attempts"] == []


def test_retry_after_the_engine_was_killed(
    tmp_path: Path, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    pipeline = f"""
    name: killed
    defaults: {{image: {busybox_image}}}
    steps:
      - name: first
        run: echo done > /sluice/outputs/first.txt
      - name: second
        needs: [first]
        run: sleep 60
      - name: third
        needs: [second]
        run: echo third
    """
    repo = make_repo(tmp_path, {"killed.yaml": pipeline}, origin=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "--repo", str(repo), "run", "killed", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        poll(
            lambda: bool(
                docker_client.containers.list(
                    filters={"label": ["sluice.pipeline=killed", "sluice.step=second"]}
                )
            ),
            60,
            "the second step to start",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    origin = tmp_path / "origin.git"
    assert not git(origin, "branch", "--list", "sluice-results")  # pushed once, at the end
    cli(repo, "gc")  # the killed engine's container, and its run: closed as cancelled
    assert git(origin, "rev-list", "--count", "sluice-results") == "1"  # gc pushed its record
    (crashed,) = json.loads(cli(repo, "runs", "--json").stdout)
    assert crashed["status"] == "cancelled" and "is gone" in crashed["error"]
    assert crashed["steps"]["first"]["status"] == "succeeded"
    text = (
        (repo / "pipelines" / "killed.yaml").read_text().replace("run: sleep 60", "run: echo quick")
    )
    (repo / "pipelines" / "killed.yaml").write_text(text)
    retried = run_json(repo, "retry", crashed["run_id"])
    assert {n: s["status"] for n, s in retried["steps"].items()} == {
        "first": "cached",
        "second": "succeeded",
        "third": "succeeded",
    }


def test_approval_pauses_then_continues_in_a_new_process(
    tmp_path: Path, busybox_image: str
) -> None:
    pipeline = f"""
    name: gated
    defaults: {{image: {busybox_image}}}
    steps:
      - name: train
        run: echo model > /sluice/outputs/model.txt
      - name: deploy
        type: deployment
        needs: [train]
        approval: true
        run: cat /sluice/inputs/train/model.txt
    finally:
      - name: notify
        cache: false
        run: echo notified
    """
    repo = make_repo(tmp_path, {"gated.yaml": pipeline}, origin=True)
    paused = run_json(repo, "run", "gated")
    assert paused["status"] == "waiting_approval"
    assert paused["steps"]["deploy"]["status"] == "waiting_approval"
    assert paused["steps"]["notify"]["status"] == "pending"
    on_branch = json.loads(cli(repo, "show", paused["run_id"], "--json").stdout)
    assert on_branch["status"] == "waiting_approval"

    cli(repo, "approve", paused["run_id"], "--by", "alice")
    done = json.loads(cli(repo, "show", paused["run_id"], "--json").stdout)
    assert done["status"] == "succeeded"
    assert len(done["steps"]["train"]["attempts"]) == 1  # not run again
    assert done["steps"]["deploy"]["status"] == "succeeded"
    assert "model" in cli(repo, "logs", paused["run_id"], "deploy").stdout
    assert done["approvals"][0]["by"] == "alice" and done["approvals"][0]["decision"] == "approve"

    second = run_json(repo, "run", "gated")
    rejected = cli(repo, "reject", second["run_id"], "--by", "bob")
    assert rejected.returncode == 0
    ended = json.loads(cli(repo, "show", second["run_id"], "--json").stdout)
    assert ended["status"] == "failed"
    assert ended["steps"]["deploy"]["status"] == "failed"
    assert ended["steps"]["deploy"]["reason"] == "rejected by bob"
    assert ended["steps"]["notify"]["status"] == "succeeded"
    again = cli(repo, "approve", second["run_id"], check=2)
    assert "not waiting for approval" in again.stderr


def gate_pipeline(image: str, deploy: str) -> str:
    """`gate`: evaluate reports the `accuracy` param; deploy (the baseline step) runs
    `deploy` only when there is no baseline or the accuracy beats the baseline's."""
    return f"""
    name: gate
    params: {{accuracy: 0.8}}
    baseline: {{step: deploy}}
    defaults: {{image: {image}}}
    steps:
      - name: evaluate
        env: {{ACC: "${{{{ params.accuracy }}}}"}}
        run: 'echo "{{\\"accuracy\\": $ACC}}" > /sluice/outputs/metrics.json'
      - name: deploy
        type: deployment
        needs: [evaluate]
        when: "not baseline or steps.evaluate.metrics.accuracy > baseline.steps.evaluate.metrics.accuracy"
        run: {deploy}
    """


def test_baseline_gate_compares_with_production(tmp_path: Path, busybox_image: str) -> None:
    pipeline = gate_pipeline(
        busybox_image, """'grep -o "run_id[^,]*" /sluice/baseline.json || echo "no baseline"'"""
    )
    repo = make_repo(tmp_path, {"gate.yaml": pipeline}, origin=True)
    first = run_json(repo, "run", "gate")
    assert first["steps"]["deploy"]["status"] == "succeeded"
    assert "no baseline" in cli(repo, "logs", first["run_id"], "deploy").stdout

    worse = run_json(repo, "run", "gate", "-p", "accuracy=0.7")
    assert worse["baseline_run"] == first["run_id"]
    assert worse["steps"]["deploy"]["status"] == "skipped"

    better = run_json(repo, "run", "gate", "-p", "accuracy=0.9")
    assert better["steps"]["deploy"]["status"] == "succeeded"
    assert first["run_id"] in cli(repo, "logs", better["run_id"], "deploy").stdout

    after = run_json(repo, "run", "gate", "-p", "accuracy=0.85")
    assert after["baseline_run"] == better["run_id"]
    assert after["steps"]["deploy"]["status"] == "skipped"


def test_reading_commands_work_in_a_clone_with_only_the_results_branch(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = five_repo(tmp_path, busybox_image)
    manifest = run_json(repo, "run", "five")
    clone = tmp_path / "results-only"
    git(
        tmp_path,
        "clone",
        "-q",
        "--single-branch",
        "--branch",
        "sluice-results",
        str(tmp_path / "origin.git"),
        str(clone),
    )
    listed = json.loads(cli(clone, "runs", "--json").stdout)
    assert [m["run_id"] for m in listed] == [manifest["run_id"]]
    shown = cli(clone, "show", manifest["run_id"])
    assert "s3" in shown.stdout and "succeeded" in shown.stdout
    assert "one" in cli(clone, "logs", manifest["run_id"], "s5").stdout
    missing = cli(clone, "show", "20200101T000000Z-000000", check=2)
    assert "no run" in missing.stderr
