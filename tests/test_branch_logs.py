"""Step logs on the results branch: a long log's tail there, the whole log in the artifact
store behind a pointer that `sluice logs --full` checks; old records read as before.

Real git (a bare repository on disk as origin), real Docker, the real CLI as a process.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import ROOT, git, make_repo, poll, sluice, start_s3_server

from engine.core import log_tail

pytestmark = pytest.mark.docker

LINES = 6000  # "line 000001 of the chatty step\n": 31 bytes each, 186,000 bytes in all


def chatty(busybox: str, *names: str) -> str:
    steps = "".join(
        f"""
      - name: {name}
        workspace: false
        run: |
          awk 'BEGIN {{ for (i = 1; i <= {LINES}; i++) printf "line %06d of the chatty step\\n", i }}'
"""
        for name in names
    )
    return f"name: chatty\ndefaults: {{image: {busybox}}}\nsteps:{steps}"


def cli(
    repo: Path, *args: str, check: int | None = 0, **env: str
) -> subprocess.CompletedProcess[str]:
    done = sluice(*args, repo=repo, process=True, env=env or None, timeout=600)
    assert "Traceback" not in done.stderr, done.stderr
    if check is not None:
        assert done.returncode == check, done.stderr
    return done


def run(repo: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(cli(repo, "run", "chatty", "--json").stdout)
    assert manifest["status"] == "succeeded", manifest
    return manifest


def on_branch(repo: Path, manifest: dict[str, Any], name: str) -> str:
    return f"sluice-results:runs/chatty/{manifest['run_id']}/logs/{name}"


def whole(repo: Path, manifest: dict[str, Any], step: str) -> bytes:
    """The local run folder's copy: the whole log, uncompressed, as before."""
    return (repo / ".sluice" / "runs" / manifest["run_id"] / "logs" / f"{step}.1.log").read_bytes()


def test_a_long_log_leaves_its_tail_on_the_branch_and_all_of_it_in_the_store(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(tmp_path, {"p.yaml": chatty(busybox_image, "talk")}, origin=True)
    manifest = run(repo)
    text = whole(repo, manifest, "talk")
    assert len(text) == LINES * 31 and text.endswith(b"line 006000 of the chatty step\n")

    kept = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "blob", on_branch(repo, manifest, "talk.1.log")],
        capture_output=True,
        check=True,
    ).stdout
    assert kept == log_tail.tail(text) and len(kept) < log_tail.TAIL_BYTES + 100
    pointer = manifest["steps"]["talk"]["attempts"][0]["log_full"]
    assert pointer["sha256"] == hashlib.sha256(text).hexdigest() and pointer["size"] == len(text)

    shown = cli(repo, "logs", manifest["run_id"], "talk")
    assert shown.stdout.encode() == kept
    assert shown.stdout.endswith("line 006000 of the chatty step\n")
    assert "line 000001 " not in shown.stdout
    assert "keeps the end of this log (181.6 KB in all)" in shown.stderr
    assert f"sluice logs {manifest['run_id']} talk --attempt 1 --full" in shown.stderr

    full = cli(repo, "logs", manifest["run_id"], "talk", "--full")
    assert full.stdout.encode() == text and full.stderr == ""

    # A clone of the results branch alone reads the tail offline; the whole log is on the
    # machine that ran the run (a file:// store).
    clone = tmp_path / "results-only"
    git(tmp_path, "clone", "-q", "--single-branch", "--branch", "sluice-results",
        str(tmp_path / "origin.git"), str(clone))  # fmt: skip
    assert cli(clone, "logs", manifest["run_id"], "talk").stdout.encode() == kept
    missing = cli(clone, "logs", manifest["run_id"], "talk", "--full", check=2)
    assert "is not in the artifact store file://.sluice/artifacts" in missing.stderr
    assert "a folder on the machine that ran the run" in missing.stderr


def test_identical_logs_are_one_blob_and_one_stored_object(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(tmp_path, {"p.yaml": chatty(busybox_image, "one", "two")})
    manifest = run(repo)
    blobs = {
        git(repo, "rev-parse", on_branch(repo, manifest, f"{step}.1.log"))
        for step in ("one", "two")
    }
    assert len(blobs) == 1
    pointers = {manifest["steps"][s]["attempts"][0]["log_full"]["sha256"] for s in ("one", "two")}
    assert len(pointers) == 1
    stored = list((repo / ".sluice" / "artifacts" / "sha256").rglob("*"))
    assert len([p for p in stored if p.is_file()]) == 1


def _rewrite_manifest(repo: Path, run_id: str, change: Any) -> None:
    """Commit an edited manifest onto the local results branch, as a hostile push would."""
    tree = repo.parent / "results-tree"
    git(repo, "worktree", "add", "-q", str(tree), "sluice-results")
    path = tree / "runs" / "chatty" / run_id / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))
    git(tree, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "-am", "edited")
    git(repo, "worktree", "remove", "--force", str(tree))


def test_a_pointer_or_an_object_that_was_changed_is_refused(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(tmp_path, {"p.yaml": chatty(busybox_image, "talk")})
    manifest = run(repo)
    run_id = manifest["run_id"]
    pointer = manifest["steps"]["talk"]["attempts"][0]["log_full"]
    stored = (
        repo / ".sluice" / "artifacts" / "sha256" / pointer["sha256"][:2] / pointer["sha256"][2:]
    )

    stored.write_bytes(stored.read_bytes().replace(b"line 000001", b"line 999999"))
    changed = cli(repo, "logs", run_id, "talk", "--full", check=1)
    assert changed.stdout == ""
    assert f"refused the whole log of talk attempt 1 of run {run_id}" in changed.stderr
    assert "does not match its sha256" in changed.stderr

    other = hashlib.sha256(b"something else").hexdigest()

    def retarget(data: dict[str, Any]) -> None:
        log = data["steps"]["talk"]["attempts"][0]["log_full"]
        log.update(sha256=other, key=f"sha256/{other[:2]}/{other[2:]}")

    _rewrite_manifest(repo, run_id, retarget)
    tampered = cli(repo, "logs", run_id, "talk", "--full", check=2)
    assert tampered.stdout == ""
    assert (
        f"the whole log of talk attempt 1 of run {run_id} (sha256 {other[:12]}" in tampered.stderr
    )
    assert "is not in the artifact store file://.sluice/artifacts" in tampered.stderr

    def unkeyed(data: dict[str, Any]) -> None:  # a key that is not the sha256's
        data["steps"]["talk"]["attempts"][0]["log_full"]["key"] = "sha256/00/" + "0" * 62

    _rewrite_manifest(repo, run_id, unkeyed)
    refused = cli(repo, "logs", run_id, "talk", "--full", check=2)
    assert "log_full" in refused.stderr and "is not the content key of its sha256" in refused.stderr


def test_an_old_record_with_a_whole_log_reads_as_before(tmp_path: Path, busybox_image: str) -> None:
    """Before logs were cut, the branch held each log whole (up to 1 MiB) and attempts had no
    `log_full`: such a log prints whole, with nothing said on stderr."""
    repo = make_repo(tmp_path, {"p.yaml": chatty(busybox_image, "talk")})
    manifest = run(repo)
    run_id, text = manifest["run_id"], whole(repo, manifest, "talk")
    tree = repo.parent / "old"
    git(repo, "worktree", "add", "-q", str(tree), "sluice-results")
    folder = tree / "runs" / "chatty" / run_id
    (folder / "logs" / "talk.1.log").write_bytes(text)
    data = json.loads((folder / "manifest.json").read_text())
    del data["steps"]["talk"]["attempts"][0]["log_full"]
    (folder / "manifest.json").write_text(json.dumps(data, indent=2))
    git(tree, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "-am", "old")
    git(repo, "worktree", "remove", "--force", str(tree))

    shown = cli(repo, "logs", run_id, "talk")
    assert shown.stdout.encode() == text and shown.stderr == ""
    assert cli(repo, "logs", run_id, "talk", "--full").stdout.encode() == text


def test_on_a_github_runner_the_log_is_fenced_unless_stdout_is_a_file(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
            name: chatty
            steps:
              - name: talk
                image: {busybox_image}
                workspace: false
                run: echo '::add-mask::x'; echo '::warning::from the step'; printf 'no newline'
            """
        },
    )
    manifest = run(repo)
    fenced = cli(repo, "logs", manifest["run_id"], "talk", GITHUB_ACTIONS="true").stdout
    lines = fenced.splitlines()
    token = lines[0].removeprefix("::stop-commands::")
    assert len(token) == 32 and lines[-1] == f"::{token}::", fenced
    assert lines[1:-1] == ["::add-mask::x", "::warning::from the step", "no newline"]

    out = tmp_path / "log.txt"
    with out.open("wb") as handle:
        done = subprocess.run(
            [*_engine(repo), "logs", manifest["run_id"], "talk"],
            stdout=handle,
            env={**_env(), "GITHUB_ACTIONS": "true"},
            check=True,
        )
    assert done.returncode == 0
    assert out.read_bytes() == b"::add-mask::x\n::warning::from the step\nno newline\n"


def _engine(repo: Path) -> list[str]:
    return [sys.executable, "-m", "engine", "--repo", str(repo)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_with_the_store_unreachable_the_tail_prints_and_full_exits_3(
    tmp_path: Path, busybox_image: str
) -> None:
    server = start_s3_server()
    try:
        bucket = server.bucket()
        repo = make_repo(
            tmp_path,
            {"p.yaml": chatty(busybox_image, "talk")},
            files={"sluice.yaml": f"artifacts: s3://{bucket}/runs\n"},
        )
        env = {**server.env, "AWS_MAX_ATTEMPTS": "1"}
        done = cli(repo, "run", "chatty", "--json", **env)
        manifest = json.loads(done.stdout)
        assert (
            manifest["steps"]["talk"]["attempts"][0]["log_full"]["store"] == f"s3://{bucket}/runs"
        )
        full = cli(repo, "logs", manifest["run_id"], "talk", "--full", **env)
        assert full.stdout.encode() == whole(repo, manifest, "talk")
    finally:
        server.stop()
    tail = cli(repo, "logs", manifest["run_id"], "talk", **env)
    assert tail.stdout.endswith("line 006000 of the chatty step\n")
    offline = cli(repo, "logs", manifest["run_id"], "talk", "--full", check=3, **env)
    assert offline.stdout == ""
    assert f"artifact store s3://{bucket}/runs" in offline.stderr
    assert "does not answer" in offline.stderr


def test_a_run_in_progress_shows_the_logs_of_its_finished_steps(
    tmp_path: Path, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    """The branch records a run at its end: until then `sluice logs` reads the run's folder."""
    pipeline = f"""
    name: going
    defaults: {{image: {busybox_image}, workspace: false}}
    steps:
      - name: first
        run: echo first is done
      - name: second
        needs: [first]
        run: sleep 600
    """
    repo = make_repo(tmp_path, {"p.yaml": pipeline})
    engine = subprocess.Popen([*_engine(repo), "run", "going", "-q"], env=_env())
    try:
        second = {"label": ["sluice.pipeline=going", "sluice.step=second"], "status": "running"}
        poll(lambda: docker_client.containers.list(filters=second), 60, "step second to start")
        [run_dir] = (repo / ".sluice" / "runs").iterdir()
        shown = cli(repo, "logs", run_dir.name, "first")
        assert shown.stdout == "first is done\n"
        assert f"run {run_dir.name} is not on the results branch yet" in shown.stderr
        assert f".sluice/runs/{run_dir.name}/logs/first.1.log" in shown.stderr
    finally:
        engine.send_signal(signal.SIGINT)  # cancels the run: its container goes
        engine.wait(timeout=60)


def test_gc_keeps_the_whole_logs_of_kept_runs_only(tmp_path: Path, busybox_image: str) -> None:
    pipeline = f"""
    name: chatty
    params: {{word: a}}
    steps:
      - name: talk
        image: {busybox_image}
        workspace: false
        env: {{WORD: "${{{{ params.word }}}}"}}
        run: |
          awk 'BEGIN {{ for (i = 1; i <= {LINES}; i++) printf "%s %06d\\n", ENVIRON["WORD"], i }}'
    """
    repo = make_repo(tmp_path, {"p.yaml": pipeline}, origin=True)
    old = run(repo)
    new: dict[str, Any] = json.loads(cli(repo, "run", "chatty", "-p", "word=b", "--json").stdout)
    cli(repo, "gc", "--runs", "--keep", "1", "--grace", "0")
    kept = cli(repo, "logs", new["run_id"], "talk", "--full").stdout
    assert kept.startswith("b 000001\n") and kept.endswith(f"b {LINES:06d}\n")
    gone = cli(repo, "logs", old["run_id"], "talk", "--full", check=2)
    assert "is not in the artifact store" in gone.stderr
    assert cli(repo, "logs", old["run_id"], "talk").stdout.endswith(f"a {LINES:06d}\n")
