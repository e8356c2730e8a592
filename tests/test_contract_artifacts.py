"""One contract for the artifact store on a local folder (file://), fsspec's memory:// and a
real S3 server (s3://, moto's standalone server on loopback: the `s3_server` fixture).

Content-addressed by sha256: identical bytes are stored once, reads are checked against the
digest (a corrupt or missing object is an error, never wrong bytes), and writers racing to
store the same bytes all get the same pointer.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.adapters.artifacts import ArtifactStore, CorruptArtifact
from engine.core.manifest import ArtifactPointer
from engine.errors import EngineUnavailable, SluiceError
from engine.ports import ArtifactStore as ArtifactStorePort
from tests.conftest import ROOT, S3Bucket, S3Server, start_s3_server


@pytest.fixture(params=["file", "memory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "file":
        yield ArtifactStore(f"file://{tmp_path / 'store'}", tmp_path)
        return
    if request.param == "s3":
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        yield ArtifactStore(f"{bucket.url}/team/artifacts", tmp_path)
        return
    # memory:// is one file system per process: each test gets its own root
    made = ArtifactStore(f"memory://contract-{secrets.token_hex(6)}", tmp_path)
    yield made
    if made.fs.exists(made.root):
        made.fs.rm(made.root, recursive=True)


def port(store: ArtifactStore) -> ArtifactStorePort:
    return store  # mypy checks the adapter against the port here


def objects(store: ArtifactStore) -> dict[str, bytes]:
    """Every file under the store's root (temporary files too), by path."""
    fs: Any = store.fs
    return {str(path): fs.cat_file(path) for path in fs.find(store.root)}


def a_file(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_identical_bytes_are_stored_once_under_their_sha256(
    store: ArtifactStore, tmp_path: Path
) -> None:
    data = b"model weights\n"
    first = port(store).put_file(a_file(tmp_path, "a.bin", data))
    again = port(store).put_file(a_file(tmp_path, "elsewhere/b.bin", data))
    assert first == again
    assert first.sha256 == hashlib.sha256(data).hexdigest()
    assert first.size == len(data)
    assert first.uri.replace("/", "").endswith(first.sha256)  # the address names the digest
    other = port(store).put_file(a_file(tmp_path, "c.bin", b"other bytes"))
    assert other.sha256 != first.sha256 and other.uri != first.uri
    stored = objects(store)
    assert sorted(stored.values()) == sorted([data, b"other bytes"])  # no copies, no temp files
    assert all(
        path.endswith(first.sha256[2:]) or path.endswith(other.sha256[2:]) for path in stored
    )


def test_read_back_is_checked_and_byte_exact(store: ArtifactStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    pointer = port(store).put_file(a_file(tmp_path, "in.bin", data))
    assert port(store).has(pointer) and port(store).has(pointer, verify=True)
    dest = tmp_path / "out" / "copy.bin"
    port(store).get_file(pointer, dest)
    assert dest.read_bytes() == data
    empty = port(store).put_file(a_file(tmp_path, "empty", b""))
    port(store).get_file(empty, tmp_path / "out" / "empty")
    assert (tmp_path / "out" / "empty").read_bytes() == b""


def test_a_corrupt_object_is_detected_on_read(store: ArtifactStore, tmp_path: Path) -> None:
    pointer = port(store).put_file(a_file(tmp_path, "in.bin", b"the real bytes"))
    ((path, _),) = objects(store).items()
    store.fs.pipe_file(path, b"the fake bytes")  # same size: only the digest can tell
    assert port(store).has(pointer)  # size matches: cheap check passes
    assert not port(store).has(pointer, verify=True)
    dest = tmp_path / "out" / "copy.bin"
    with pytest.raises(CorruptArtifact, match="does not match its sha256"):
        port(store).get_file(pointer, dest)
    assert list((tmp_path / "out").iterdir()) == []  # no partial or temporary file left
    store.fs.pipe_file(path, b"short")
    assert not port(store).has(pointer)  # wrong size


def test_a_missing_object_is_an_error(store: ArtifactStore, tmp_path: Path) -> None:
    data = b"never stored"
    sha = hashlib.sha256(data).hexdigest()
    pointer = ArtifactPointer(uri=store.uri(sha), sha256=sha, size=len(data))
    assert not port(store).has(pointer)
    assert not port(store).has(pointer, verify=True)
    dest = tmp_path / "out" / "x.bin"
    with pytest.raises(CorruptArtifact, match="missing") as raised:
        port(store).get_file(pointer, dest)
    assert isinstance(raised.value, SluiceError)
    assert list((tmp_path / "out").iterdir()) == []


def test_concurrent_writers_of_the_same_bytes_agree(store: ArtifactStore, tmp_path: Path) -> None:
    data = secrets.token_bytes(256 * 1024)
    sources = [a_file(tmp_path, f"w{n}.bin", data) for n in range(8)]
    barrier = threading.Barrier(len(sources))
    pointers: list[ArtifactPointer] = []
    failures: list[BaseException] = []

    def write(source: Path) -> None:
        barrier.wait()
        try:
            pointers.append(store.put_file(source))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(s,)) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert len(pointers) == len(sources) and all(p == pointers[0] for p in pointers)
    assert list(objects(store).values()) == [data]  # one object, whole; no temp files left
    port(store).get_file(pointers[0], tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == data


def test_many_files_at_once_agree_with_one_at_a_time(store: ArtifactStore, tmp_path: Path) -> None:
    """put_files/get_files (batched on S3): the same pointers, the same bytes, still checked."""
    datas = [f"file {n % 40}\n".encode() * (n + 1) for n in range(50)]  # 10 repeated
    sources = [a_file(tmp_path, f"in/{n}.txt", data) for n, data in enumerate(datas)]
    pointers = port(store).put_files(sources)
    assert pointers == [port(store).put_file(path) for path in sources]
    assert len(objects(store)) == len({p.sha256 for p in pointers})
    wanted = [(p, tmp_path / "out" / f"{n}.txt") for n, p in enumerate(pointers)]
    port(store).get_files(wanted)
    assert [dest.read_bytes() for _, dest in wanted] == datas
    path = next(iter(objects(store)))
    store.fs.pipe_file(path, b"x" * len(store.fs.cat_file(path)))  # one corrupt, same size
    again = [(p, tmp_path / "again" / f"{n}.txt") for n, p in enumerate(pointers)]
    with pytest.raises(CorruptArtifact, match="does not match its sha256"):
        port(store).get_files(again)
    names = (
        {p.name for p in (tmp_path / "again").iterdir()} if (tmp_path / "again").exists() else set()
    )
    assert not any(".tmp-" in name for name in names)  # no temporary file left


# --- a remote store that fails: each failure names the store and the fix (exit 3) ----------


def _fails_clearly(store: ArtifactStore, tmp_path: Path, why: str, fix: str) -> None:
    source = a_file(tmp_path, "in.bin", b"bytes to store")
    sha = hashlib.sha256(b"bytes to store").hexdigest()
    pointer = ArtifactPointer(uri=store.uri(sha), sha256=sha, size=14)
    for action in (
        lambda: store.put_file(source),
        lambda: store.has(pointer),
        lambda: store.get_file(pointer, tmp_path / "out" / "x.bin"),
    ):
        with pytest.raises(EngineUnavailable) as raised:
            action()
        text = str(raised.value)
        assert store.url in text and why in text and fix in text, text
        assert raised.value.exit_code == 3
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_missing_bucket_names_the_bucket_and_the_fix(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = ArtifactStore("s3://no-such-bucket-here/artifacts", tmp_path)
    _fails_clearly(store, tmp_path, "the bucket does not exist", "create the bucket")


def test_wrong_credentials_name_the_credentials_to_check(
    s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A second server that checks credentials: no key is known to it, so every key is wrong.
    strict = start_s3_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", strict.endpoint)
        store = ArtifactStore("s3://some-bucket/artifacts", tmp_path)
        _fails_clearly(store, tmp_path, "access denied", "AWS_ACCESS_KEY_ID")
    finally:
        strict.stop()


def test_a_stopped_server_names_the_endpoint_to_check(
    s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short: S3Server = start_s3_server()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", short.endpoint)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries: keep the test short
        store = ArtifactStore(f"s3://{short.bucket()}/artifacts", tmp_path)
        kept = store.put_file(a_file(tmp_path, "kept.bin", b"stored before the stop"))
        short.stop()
        _fails_clearly(store, tmp_path, "does not answer", short.endpoint)
        assert kept.uri.startswith("s3://")
    finally:
        short.stop()


# --- large files are streamed: the engine's memory does not grow with the file -------------

_LAUNCHER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""
_PUT_GET = """
import sys
from pathlib import Path
from engine.adapters.artifacts import ArtifactStore
store = ArtifactStore(sys.argv[1], Path(sys.argv[2]))
pointer = store.put_file(Path(sys.argv[3]))
store.get_file(pointer, Path(sys.argv[2]) / "back.bin")
"""


def _peak_rss(url: str, folder: Path, source: Path, env: dict[str, str]) -> int:
    """Peak RSS in bytes of a fresh process that stores `source` and reads it back (measured
    from a small launcher: a child's peak RSS starts from its parent's, and pytest's is big)."""
    peak = folder / f"peak-{source.name}.txt"
    command = [sys.executable, "-c", _PUT_GET, url, str(folder), str(source)]
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(peak), *command],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (folder / "back.bin").stat().st_size == source.stat().st_size
    (folder / "back.bin").unlink()
    return int(peak.read_text()) * 1024


@pytest.mark.slow
def test_a_large_file_is_streamed_to_and_from_s3(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    """Figure: extra peak RSS to store and read back a 256 MiB output on s3:// (1 GiB in
    benchmarks/bench_store.py). Before: +514 MiB (s3fs's 10 parallel 50 MiB parts).
    Goal: under half the file's size above a 1-byte file's (streamed, not read whole)."""
    size = 256 * 1024 * 1024
    big, tiny = tmp_path / "big.bin", tmp_path / "tiny.bin"
    block = secrets.token_bytes(1024 * 1024)
    with big.open("wb") as out:
        for n in range(size // len(block)):
            out.write(n.to_bytes(8, "big") + block[8:])
    tiny.write_bytes(b"x")
    url = f"{s3_bucket.url}/large"
    baseline = _peak_rss(url, tmp_path, tiny, s3_bucket.env)
    peak = _peak_rss(url, tmp_path, big, s3_bucket.env)
    extra = peak - baseline
    print(f"peak RSS {peak / 2**20:.0f} MiB, {extra / 2**20:.0f} MiB above a 1-byte file's")
    assert extra < size // 2, f"{extra / 2**20:.0f} MiB more for a 256 MiB file: not streamed"
