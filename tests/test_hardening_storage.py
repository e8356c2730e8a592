"""What large files and a full artifact store do to the engine (issue 12, items 10 and 11).

- The workspace snapshot read every file into memory, including files no step sees: an
  untracked 1.5 GB file with `workspace: [pipelines]` put the engine's RSS at 1.59 GB. Now
  only what some step selects is read, a chunk at a time, and cache keys are unchanged.
- A full `file://` store left its `….tmp-XXXX` file behind (keeping the store full).
- Kept under test: a 1 GB output is handled at low RSS.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, make_repo

from engine.adapters.artifacts import ArtifactStore
from engine.errors import EngineUnavailable
from engine.local.workspace import snapshot

MB = 1024 * 1024


# A child's peak RSS starts from its parent's: Linux carries the high-water mark of the
# address space a process had before exec into its rusage. pytest grows to hundreds of MB
# over the suite, so the engine is started from this small launcher, whose own children
# are then measured from its size, not pytest's.
_LAUNCHER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def run_measured(repo: Path, *args: str, timeout: float = 300) -> tuple[int, str, str, int]:
    """`sluice --repo REPO ARGS` in a child process: exit code, stdout, stderr, and the peak
    RSS in bytes of the engine and every process it waited for (RUSAGE_CHILDREN)."""
    out, err = repo.parent / "stdout.txt", repo.parent / "stderr.txt"
    peak = repo.parent / "peak-rss-kib.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "engine", "--repo", str(repo), *args]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        done = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, str(peak), *command],
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
            timeout=timeout,
            check=False,
        )
    return done.returncode, out.read_text(), err.read_text(), int(peak.read_text()) * 1024


@pytest.mark.docker
def test_an_untracked_file_no_step_sees_is_neither_read_nor_copied(
    tmp_path: Path, busybox_image: str
) -> None:
    """Figure: engine RSS with a 1.5 GB untracked file and `workspace: [pipelines]`.

    Before: 1.59 GB (every file read whole). Goal: < 100 MB.
    """
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: big-file
        steps:
          - name: look
            image: {busybox_image}
            workspace: [pipelines]
            run: find /workspace -type f | sort
        """
        },
        commit="pipelines",
    )
    with (repo / "big.bin").open("wb") as big:  # sparse: 1.5 GB that takes no disk
        big.truncate(1536 * MB)
    code, stdout, stderr, rss = run_measured(repo, "run", "big-file", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["steps"]["look"]["status"] == "succeeded"
    assert "[look] /workspace/pipelines/p.yaml" in stderr
    assert "big.bin" not in stderr
    print(f"engine peak RSS with a 1.5 GB untracked file: {rss / MB:.1f} MB")
    assert rss < 100 * MB, f"{rss / MB:.0f} MB"


@pytest.mark.docker
def test_a_large_file_a_step_sees_is_streamed_not_held(tmp_path: Path, busybox_image: str) -> None:
    """With `workspace: true` a 300 MB file is copied in chunks: the step gets all of it and
    the engine's RSS stays flat (before: the file's size and more)."""
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: big-seen
        steps:
          - name: look
            image: {busybox_image}
            run: wc -c < /workspace/big.bin
        """
        },
    )
    with (repo / "big.bin").open("wb") as big:
        big.truncate(300 * MB)
    code, stdout, stderr, rss = run_measured(repo, "run", "big-seen", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["steps"]["look"]["status"] == "succeeded"
    assert f"[look] {300 * MB}" in stderr
    assert rss < 100 * MB, f"{rss / MB:.0f} MB"


@pytest.mark.docker
def test_workspace_true_still_sees_the_whole_repository_and_keys_hold(
    tmp_path: Path, busybox_image: str
) -> None:
    """Files are streamed for `workspace: true`; a key changes only with what a step sees."""
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: whole
        steps:
          - name: all
            image: {busybox_image}
            run: find /workspace -type f | sort; cat /workspace/data/big.txt | md5sum
          - name: some
            image: {busybox_image}
            workspace: [src]
            run: find /workspace -type f | sort
        """
        },
        files={"src/a.py": "print(1)\n", "README.md": "hello\n"},
        commit="start",
    )
    (repo / "data").mkdir()
    payload = os.urandom(3 * MB)  # several chunks
    (repo / "data" / "big.txt").write_bytes(payload)  # untracked, not ignored
    first = run_measured(repo, "run", "whole", "--json")
    assert first[0] == 0, first[2]
    for name in ("src/a.py", "data/big.txt", "pipelines/p.yaml"):
        assert f"[all] /workspace/{name}" in first[2]
    assert "[all] /workspace/README.md" not in first[2]  # *.md: left out by default
    assert f"[all] {hashlib.md5(payload).hexdigest()}" in first[2]
    assert "[some] /workspace/src/a.py" in first[2]
    assert "[some] /workspace/README.md" not in first[2]

    (repo / "README.md").write_text("edited\n")  # no step sees it
    unseen = json.loads(run_measured(repo, "run", "whole", "--json")[1])
    assert {s["status"] for s in unseen["steps"].values()} == {"cached"}
    (repo / "notes.txt").write_text("new\n")  # only `all` sees it
    second = json.loads(run_measured(repo, "run", "whole", "--json")[1])
    assert second["steps"]["all"]["status"] == "succeeded"
    assert second["steps"]["some"]["status"] == "cached"
    third = json.loads(run_measured(repo, "run", "whole", "--json")[1])
    assert {s["status"] for s in third["steps"].values()} == {"cached"}


def test_snapshot_digests_are_the_sha256_of_the_bytes_whatever_is_selected(
    tmp_path: Path,
) -> None:
    """Cache keys are built from these digests: identical content, identical keys."""
    repo = make_repo(
        tmp_path,
        files={"src/a.py": "a\n", "src/b/c.bin": "x" * (3 * MB + 7), "docs/r.md": "r\n"},
    )
    (repo / "run.sh").write_text("#!/bin/sh\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "link").symlink_to("src/a.py")
    whole = snapshot(repo, tmp_path / "whole.tar", ["."])  # everything: docs too
    some = snapshot(repo, tmp_path / "some.tar", ["src"])
    for name in ("src/a.py", "src/b/c.bin", "docs/r.md", "run.sh"):
        assert whole.digests[name] == hashlib.sha256((repo / name).read_bytes()).hexdigest()
    assert whole.digests["link"] == hashlib.sha256(b"link:src/a.py").hexdigest()
    assert some.digests == {k: v for k, v in whole.digests.items() if k.startswith("src/")}
    assert some.files_for(["src/b"]) == whole.files_for(["src/b"])
    with tarfile.open(tmp_path / "some.tar") as tar:
        names = {m.name: m for m in tar.getmembers()}
        assert set(names) == {"workspace", "workspace/src", "workspace/src/b"} | {
            "workspace/src/a.py",
            "workspace/src/b/c.bin",
        }
        extracted = tar.extractfile(names["workspace/src/b/c.bin"])
        assert extracted is not None and extracted.read() == b"x" * (3 * MB + 7)
    with tarfile.open(tmp_path / "whole.tar") as tar:
        assert tar.getmember("workspace/run.sh").mode == 0o755
        assert tar.getmember("workspace/docs/r.md").mode == 0o644


@pytest.mark.docker
def test_a_1gb_output_is_handled_at_low_rss(tmp_path: Path, busybox_image: str) -> None:
    """What held in the probe: a 1 GB output at 54 MB RSS (streamed out and into the store)."""
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: huge-out
        steps:
          - name: write
            image: {busybox_image}
            workspace: false
            run: dd if=/dev/zero of=$SLUICE_OUTPUTS/big.bin bs=1M count=1024 2>/dev/null
        """
        },
    )
    code, stdout, stderr, rss = run_measured(repo, "run", "huge-out", "--json", timeout=600)
    assert code == 0, stderr
    output = json.loads(stdout)["steps"]["write"]["outputs"]["big.bin"]
    assert output["size"] == 1024 * MB
    print(f"engine peak RSS with a 1 GB output: {rss / MB:.1f} MB")
    assert rss < 150 * MB, f"{rss / MB:.0f} MB"


@pytest.fixture
def tiny_store(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs, mounted for the test (as root) and unmounted after it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "store"
    _mount_tiny(mount)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.docker
def test_a_full_artifact_store_is_an_engine_error_and_leaves_no_temp_file(
    tmp_path: Path, busybox_image: str, tiny_store: Path
) -> None:
    """Before: `sha256/…/….tmp-XXXX` (the partial copy) stayed in the store, keeping it full,
    and the message said neither which store nor how full it was."""
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: fill
        steps:
          - name: write
            image: {busybox_image}
            workspace: false
            retries: {{limit: 2, backoff: 0.01s, outcomes: [failed, error]}}
            run: head -c 3000000 /dev/urandom > $SLUICE_OUTPUTS/big.bin
          - name: after
            image: {busybox_image}
            needs: [write]
            run: "true"
        """
        },
        files={"sluice.yaml": f"artifacts: file://{tiny_store}\n"},
    )
    code, stdout, stderr, _ = run_measured(repo, "run", "fill", "--json")
    assert code == 3, stderr  # the engine could not finish its work
    manifest = json.loads(stdout)
    step = manifest["steps"]["write"]
    assert manifest["status"] == "failed" and manifest["engine_error"] is True
    assert [a["outcome"] for a in step["attempts"]] == ["error"]  # not blamed, not retried
    leftovers = [p.name for p in tiny_store.rglob("*") if p.is_file()]
    assert leftovers == []  # no partial object keeps the store full
    assert os.statvfs(tiny_store).f_bfree * os.statvfs(tiny_store).f_frsize > 1.9 * MB
    error = step["attempts"][0]["error"]
    assert f"artifact store file://{tiny_store}" in error
    assert "free" in error and "2.0 MB" in error  # the store's size and what is left
    assert manifest["steps"]["after"]["status"] != "succeeded"


def _mount_tiny(mount: Path) -> None:
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


@pytest.mark.docker
@pytest.mark.parametrize("kb", [3000, 1200])  # too big to copy out; fits, but not twice
def test_a_full_engine_disk_is_an_engine_error_not_the_steps(
    tmp_path: Path, busybox_image: str, kb: int
) -> None:
    """`.sluice/` on a 2 MB disk: copying the outputs out (3 MB) or unpacking them next to
    their archive (1.2 MB twice) fails for want of space, which is the engine's failure."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: fill-engine
        steps:
          - name: write
            image: {busybox_image}
            workspace: false
            retries: {{limit: 2, backoff: 0.01s, outcomes: [failed, error]}}
            run: head -c {kb}000 /dev/urandom > $SLUICE_OUTPUTS/big.bin
        """
        },
        files={"sluice.yaml": f"artifacts: file://{tmp_path / 'store'}\n"},
    )
    engine_dir = repo / ".sluice"
    _mount_tiny(engine_dir)
    try:
        code, stdout, stderr, _ = run_measured(repo, "run", "fill-engine", "--json")
        leftovers = [p for p in engine_dir.rglob("*") if p.is_file() and p.stat().st_size > MB]
    finally:
        subprocess.run(["umount", str(engine_dir)], check=True)
    assert code == 3, stderr
    manifest = json.loads(stdout)
    attempts = manifest["steps"]["write"]["attempts"]
    assert [a["outcome"] for a in attempts] == ["error"], attempts  # not failed, not retried
    assert "No space left on device" in attempts[0]["error"]
    assert f"{engine_dir}" in attempts[0]["error"] and "free of 2.0 MB" in attempts[0]["error"]
    assert leftovers == []  # the partial copies went


def test_a_remote_store_that_fails_midway_keeps_no_temporary_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsspec back ends (s3, gs, az): the upload lands under a temporary name; a failure
    after it removes that name too, and is the engine's failure, naming the store."""
    store = ArtifactStore(f"memory://sluice-hardening-{os.getpid()}", tmp_path)
    source = tmp_path / "out.bin"
    source.write_bytes(b"x" * 1000)

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.fs, "mv", refuse)
    with pytest.raises(EngineUnavailable) as caught:
        store.put_file(source)
    assert f"artifact store {store.url}: No space left on device" in caught.value.message
    assert "free space unknown" in caught.value.message
    assert store.fs.find(store.root) == []  # the uploaded temporary object is gone
    monkeypatch.undo()
    pointer = store.put_file(source)  # and the store works once it has room
    assert store.has(pointer, verify=True)
