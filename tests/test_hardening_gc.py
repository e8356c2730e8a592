"""Issue 12, item 12: `.sluice/` keeps one copy of outputs (the store's), and `sluice gc --runs`
removes old runs' local data and unreferenced artifacts without breaking rollback, retry,
approve or the cache. Real Docker, real git (a bare origin on disk), the CLI in a process."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import make_repo, sluice

from engine.adapters.artifacts import ArtifactStore

MB = 1024 * 1024


def cli(repo: Path, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    done = sluice(*args, repo=repo, process=True, timeout=600)
    assert "Traceback" not in done.stderr, done.stderr
    if check is not None:
        assert done.returncode == check, done.stdout + done.stderr
    return done


def run_json(repo: Path, *args: str, check: int | None = 0) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(cli(repo, *args, "--json", check=check).stdout)
    return result


def files_under(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file under `folder` (links not followed)."""
    found: dict[str, int] = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = Path(base) / name
            found[path.relative_to(folder).as_posix()] = path.lstat().st_size
    return found


def beyond_store(repo: Path) -> dict[str, int]:
    """`.sluice/`'s files outside the artifact store, by path."""
    return {
        path: size
        for path, size in files_under(repo / ".sluice").items()
        if not path.startswith("artifacts/")
    }


def blobs(repo: Path) -> set[str]:
    return {
        p.replace("/", "").removeprefix("sha256")
        for p in files_under(repo / ".sluice" / "artifacts")
        if ".tmp-" not in p
    }


# -- one copy, the store's ----------------------------------------------------------------


GATED = """
name: big
defaults: {{image: {image}}}
steps:
  - name: make
    workspace: false
    run: 'head -c {size} /dev/urandom > /sluice/outputs/model.bin'
  - name: use
    workspace: false
    needs: [make]
    run: 'wc -c < /sluice/inputs/make/model.bin > /sluice/outputs/size.txt'
  - name: ship
    type: deployment
    needs: [make, use]
    approval: true
    workspace: false
    run: 'cat /sluice/inputs/use/size.txt; wc -c < /sluice/inputs/make/model.bin'
"""


@pytest.mark.docker
def test_a_run_keeps_only_logs_and_manifest_beyond_the_store(
    tmp_path: Path, busybox_image: str
) -> None:
    size = 4 * MB
    repo = make_repo(
        tmp_path, {"big.yaml": GATED.format(image=busybox_image, size=size)}, origin=True
    )
    paused = run_json(repo, "run", "big")
    assert paused["status"] == "waiting_approval"
    run_id = paused["run_id"]

    local = beyond_store(repo)
    figure = sum(local.values())
    print(f"\n.sluice/ bytes beyond the store, after a run with a {size} byte output: {figure}")
    kept = {p for p in local if p.startswith(f"runs/{run_id}/")}
    assert kept == {
        f"runs/{run_id}/manifest.json",
        f"runs/{run_id}/logs/make.1.log",
        f"runs/{run_id}/logs/use.1.log",
    }, local
    assert figure < 64 * 1024  # logs and manifests only; the output is stored once
    assert sum(files_under(repo / ".sluice" / "artifacts").values()) >= size

    # approve in a new process: the step after the pause reads its inputs from the store
    cli(repo, "approve", run_id, "--by", "alice")
    done = json.loads(cli(repo, "show", run_id, "--json").stdout)
    assert done["status"] == "succeeded"
    assert str(size) in cli(repo, "logs", run_id, "ship").stdout
    assert not any(
        p.startswith(f"runs/{run_id}/") and "/logs/" not in p and not p.endswith("manifest.json")
        for p in beyond_store(repo)
    )


# -- sluice gc --runs ---------------------------------------------------------------------

RELEASE = """
name: release
params: {{n: 0}}
baseline: {{step: deploy}}
defaults: {{image: {image}}}
steps:
  - name: build
    workspace: false
    env: {{N: "${{{{ params.n }}}}"}}
    run: '(echo "model $N"; head -c 1000000 /dev/zero) > /sluice/outputs/model.txt'
  - name: deploy
    type: deployment
    needs: [build]
    workspace: [gate]
    run: '[ ! -f gate/stop ] && head -n 1 /sluice/inputs/build/model.txt'
"""


def release_runs(repo: Path) -> list[dict[str, Any]]:
    """Five runs: 1 fails to deploy, 2 and 3 deploy (production's lineage), 4 and 5 fail."""
    stop = repo / "gate" / "stop"
    stop.parent.mkdir(exist_ok=True)
    (repo / "gate" / "keep").write_text("")
    runs = []
    for n in range(1, 6):
        if n in (1, 4):
            stop.write_text("stop\n")
        elif n == 2:
            stop.unlink()
        failing = n in (1, 4, 5)
        runs.append(run_json(repo, "run", "release", "-p", f"n={n}", check=1 if failing else 0))
    assert [r["steps"]["deploy"]["status"] for r in runs] == [
        "failed",
        "succeeded",
        "succeeded",
        "failed",
        "failed",
    ]
    return runs


def pointers(run: dict[str, Any]) -> set[str]:
    """The objects a run's manifest points to: outputs and checkpoints."""
    found = set()
    for record in run["steps"].values():
        found |= {o["sha256"] for o in record["outputs"].values()}
        if record.get("checkpoints"):
            found.add(record["checkpoints"]["sha256"])
    return found


def output_of(run: dict[str, Any], step: str, name: str) -> str:
    sha: str = run["steps"][step]["outputs"][name]["sha256"]
    return sha


@pytest.mark.docker
def test_gc_runs_keeps_what_rollback_retry_and_the_cache_need(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(tmp_path, {"release.yaml": RELEASE.format(image=busybox_image)}, origin=True)
    r1, r2, r3, r4, r5 = release_runs(repo)
    ids = [r["run_id"] for r in (r1, r2, r3, r4, r5)]
    gone_blob = output_of(r1, "build", "model.txt")
    assert gone_blob in blobs(repo)
    # a run from before this fix: its snapshot and a local copy of an output
    old_copy = repo / ".sluice" / "runs" / ids[1] / "steps" / "build" / "outputs" / "model.txt"
    old_copy.parent.mkdir(parents=True)
    old_copy.write_bytes(b"x" * 5000)

    dry = run_json(repo, "gc", "--runs", "--keep", "2", "--grace", "0", "--dry-run")
    assert dry["dry_run"] is True
    assert [r["run_id"] for r in dry["runs"] if r["whole"]] == [ids[0]]
    assert [r["run_id"] for r in dry["runs"] if not r["whole"]] == [ids[1]]
    kept_objects = set().union(*(pointers(r) for r in (r2, r3, r4, r5)))
    assert {a["sha256"] for a in dry["artifacts"]} == pointers(r1) - kept_objects
    assert gone_blob in pointers(r1) - kept_objects
    assert dry["bytes_freed"] >= 1_000_000 + 5000
    assert (repo / ".sluice" / "runs" / ids[0]).is_dir() and gone_blob in blobs(repo)

    before = files_under(repo / ".sluice")
    done = run_json(repo, "gc", "--runs", "--keep", "2", "--grace", "0")
    assert done["runs"] == dry["runs"] and done["artifacts"] == dry["artifacts"]
    assert sorted(done["kept_runs"]) == sorted(ids[1:])
    freed = sum(before.values()) - sum(files_under(repo / ".sluice").values())
    assert freed == done["bytes_freed"]
    assert not (repo / ".sluice" / "runs" / ids[0]).exists()
    assert not old_copy.exists() and (old_copy.parents[3] / "manifest.json").is_file()
    assert gone_blob not in blobs(repo)
    for run in (r2, r3, r4, r5):  # kept runs' outputs are all still there
        assert output_of(run, "build", "model.txt") in blobs(repo)
    # the results branch keeps every manifest, the removed run's too
    assert json.loads(cli(repo, "show", ids[0], "--json").stdout)["run_id"] == ids[0]
    again = run_json(repo, "gc", "--runs", "--keep", "2", "--grace", "0")
    assert again["runs"] == [] and again["artifacts"] == [] and again["bytes_freed"] == 0

    # rollback: production goes back from run 3 to run 2
    back = json.loads(cli(repo, "rollback", "release", "--json").stdout)
    assert back["production"] == ids[1]

    # retry of a kept run: its build is reused (the store still has it), deploy runs
    (repo / "gate" / "stop").unlink()
    retried = run_json(repo, "retry", ids[4])
    assert retried["steps"]["build"]["status"] == "cached"
    assert retried["steps"]["build"]["cached_from"] == ids[4]
    assert retried["steps"]["deploy"]["status"] == "succeeded"
    assert "model 5" in cli(repo, "logs", retried["run_id"], "deploy").stdout

    # a re-run of the latest run hits the cache; the removed run's does not
    latest = run_json(repo, "run", "release", "-p", "n=5")
    assert latest["steps"]["build"]["status"] == "cached"
    first = run_json(repo, "run", "release", "-p", "n=1")
    assert first["steps"]["build"]["status"] == "succeeded"
    assert output_of(first, "build", "model.txt") == gone_blob


@pytest.mark.docker
def test_gc_runs_keeps_young_artifacts_and_unfinished_runs(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(
        tmp_path, {"big.yaml": GATED.format(image=busybox_image, size=1000)}, origin=True
    )
    paused = run_json(repo, "run", "big")
    assert paused["status"] == "waiting_approval"
    stray = repo / ".sluice" / "artifacts" / "sha256" / "ab" / ("c" * 62)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"no run points here")
    young = run_json(repo, "gc", "--runs", "--keep", "1")  # default grace: a day
    assert young["artifacts"] == [] and young["runs"] == []
    newer = run_json(repo, "run", "big", "--no-cache")
    done = run_json(repo, "gc", "--runs", "--keep", "1", "--grace", "0")
    # the paused run is older than --keep allows, but approve still needs it
    assert sorted(done["kept_runs"]) == sorted([paused["run_id"], newer["run_id"]])
    assert [a["sha256"] for a in done["artifacts"]] == ["ab" + "c" * 62]
    assert not stray.exists()
    cli(repo, "approve", paused["run_id"])
    assert json.loads(cli(repo, "show", paused["run_id"], "--json").stdout)["status"] == (
        "succeeded"
    )


@pytest.mark.docker
def test_gc_runs_refuses_when_the_remote_is_unreachable(tmp_path: Path, busybox_image: str) -> None:
    repo = make_repo(
        tmp_path, {"big.yaml": GATED.format(image=busybox_image, size=1000)}, origin=True
    )
    run_json(repo, "run", "big")
    before = files_under(repo / ".sluice")
    (tmp_path / "origin.git").rename(tmp_path / "gone.git")
    refused = cli(repo, "gc", "--runs", "--keep", "1", "--grace", "0", check=None)
    assert refused.returncode == 3, refused.stderr
    assert files_under(repo / ".sluice") == before


def test_storing_an_object_again_makes_it_young_for_the_grace_period(tmp_path: Path) -> None:
    """A run that stores bytes an old, unreferenced object already holds must not lose them
    to a gc that runs before its manifest names them."""
    store = ArtifactStore("file://store", tmp_path)
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights" * 1000)
    pointer = store.put_file(model)
    (old,) = store.objects()
    assert old.sha256 == pointer.sha256 and old.size == model.stat().st_size
    assert old.mtime is not None
    stored = Path(store.root) / pointer.key
    os.utime(stored, (old.mtime - 7200, old.mtime - 7200))
    assert store.put_file(model) == pointer
    (again,) = store.objects()
    assert again.mtime is not None and again.mtime >= old.mtime
    store.remove(pointer.sha256)
    store.remove(pointer.sha256)  # gone already: nothing to do
    assert store.objects() == [] and not store.has(pointer)


def test_gc_retention_options_go_with_runs_only(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"p.yaml": "name: p\nsteps: [{name: a, image: x, run: 'true'}]\n"})
    for args, said in [
        (("--keep", "3"), "--keep: only with --runs"),
        (("--dry-run", "--grace", "0"), "--grace, --dry-run: only with --runs"),
        (("--runs", "--all"), "--all removes containers"),
    ]:
        done = sluice("gc", *args, repo=repo)
        assert done.returncode == 2 and said in done.stderr, done.stderr
    assert not (repo / ".sluice").exists()  # nothing was done
