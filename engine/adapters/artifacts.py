"""Content-addressed artifact store (sha256) over fsspec: file:// by default, s3/gs/az via extras."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from engine.core import layout
from engine.core.manifest import ArtifactPointer, content_key
from engine.errors import EngineUnavailable, SluiceError, UsageError
from engine.local import disk
from engine.local.disk import free_text, size_text

CHUNK = 1024 * 1024
DEFAULT_URL = layout.DEFAULT_ARTIFACTS


_REMOTE = ("s3", "s3a", "gs", "gcs")  # fsspec back ends with a listings cache to turn off
_OBJECT = re.compile(r"(?:^|/)sha256/([0-9a-f]{2})/([0-9a-f]{62})$")


class StoredObject(NamedTuple):
    """One object in the store, as `sluice gc --runs` sees it (`mtime`: None when unknown)."""

    sha256: str
    size: int
    mtime: float | None


class CorruptArtifact(SluiceError):
    """A stored object is missing, or its bytes do not match its sha256."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _resolve_url(url: str, repo: Path) -> str:
    """`file://relative/path` is relative to the repository root; other URLs pass through."""
    if url.startswith("file://"):
        path = url.removeprefix("file://")
        return "file://" + str((repo / path).resolve() if not path.startswith("/") else Path(path))
    if "://" not in url:
        return "file://" + str((repo / url).resolve())
    return url


def store_name(url: str, repo: Path) -> str:
    """The store as a manifest names it: as configured, a `file://` store inside the
    repository relative to its root, so that another machine's clone resolves it.

    >>> store_name("s3://bucket/prefix/", Path("/r"))
    's3://bucket/prefix'
    >>> store_name("file:///r/.sluice/artifacts", Path("/r")), store_name("store", Path("/r"))
    ('file://.sluice/artifacts', 'file://store')
    """
    resolved = _resolve_url(url, repo).rstrip("/")
    if not resolved.startswith("file://"):
        return resolved
    path, root = Path(resolved.removeprefix("file://")), repo.resolve()
    return f"file://{path.relative_to(root).as_posix()}" if path.is_relative_to(root) else resolved


class ArtifactStore:
    """Objects at `<root>/sha256/<ab>/<rest of digest>`; identical bytes are stored once."""

    def __init__(self, url: str, repo: Path) -> None:
        self.url = _resolve_url(url, repo)
        self.name = store_name(url, repo)  # what pointers name: the same on every machine
        scheme = self.url.split("://", 1)[0]
        self.local = scheme == "file"
        # s3fs moves up to 10 parts of 50 MiB at once, each held in memory (584 MiB peak for a
        # 256 MiB file): 4 parts of 8 MiB keep a 1 GiB transfer streamed (bench_store.py).
        self._upload = {"chunksize": 8 * CHUNK, "max_concurrency": 4} if scheme == "s3" else {}
        self._fs: Any = None
        if self.local:  # fsspec loads when first needed: `has` of a cached run never does
            self.root = self.url.removeprefix("file://").rstrip("/") or "/"
            Path(self.root).mkdir(parents=True, exist_ok=True)
        else:
            self.root = self._connect(url, scheme).rstrip("/")

    def _connect(self, url: str, scheme: str) -> str:
        """Make the fsspec file system of the store; its root path."""
        import fsspec  # lazy: ~12 ms, which a cached run on a file:// store never needs

        # A fresh client per store, no cached listings: another machine writes the same
        # store, and a changed AWS_ENDPOINT_URL or credential must be seen.
        fresh = {"skip_instance_cache": True, "use_listings_cache": False}
        try:
            fs, root = fsspec.core.url_to_fs(self.url, **(fresh if scheme in _REMOTE else {}))
        except ImportError as exc:
            extra = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}.get(
                scheme, scheme
            )
            raise UsageError(
                f"artifact store {url!r} needs an extra package: {exc}",
                hint=f"pip install 'sluice[{extra}]'",
            ) from None
        except ValueError as exc:
            raise UsageError(f"artifact store {url!r}: {exc}") from None
        self._fs = fs
        return str(root)

    @property
    def fs(self) -> Any:
        """The store's fsspec file system (made on first use for a file:// store)."""
        if self._fs is None:
            self._connect(self.url, "file")
        return self._fs

    def _path(self, sha256: str) -> str:
        return f"{self.root}/sha256/{sha256[:2]}/{sha256[2:]}"

    def uri(self, sha256: str) -> str:
        """`<store as configured>/sha256/<ab>/<rest>`: never a path of this machine."""
        return f"{self.name}/{content_key(sha256)}"

    def put_file(self, path: Path) -> ArtifactPointer:
        """Store a file (if its content is new) and return its pointer."""
        sha256 = sha256_file(path)
        size = path.stat().st_size
        target = self._path(sha256)
        try:
            if not self._present(target, size):
                self._write(path, target)
            elif self.local:  # stored again: young for `sluice gc --runs`'s grace period
                with contextlib.suppress(OSError):
                    os.utime(target)
        except Exception as exc:  # the store's failure, never the step's: the run stops
            if self._store_failure(exc):
                raise self.unavailable(exc, f"cannot write {size_text(size)} to") from None
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise EngineUnavailable(
                f"cannot write {size_text(size)} to artifact store {self.url}: {why} "
                f"({self._free()})",
                hint="free space in the artifact store (or point `artifacts:` in sluice.yaml "
                "at a larger one), then `sluice retry`",
            ) from None
        return self._pointer(sha256, size)

    def _pointer(self, sha256: str, size: int) -> ArtifactPointer:
        return ArtifactPointer(
            uri=self.uri(sha256), store=self.name, key=content_key(sha256), sha256=sha256, size=size
        )

    def unavailable(self, exc: BaseException, doing: str) -> EngineUnavailable:
        """A remote store's failure, named with the store and the likely fix (exit 3)."""
        text = str(exc) or type(exc).__name__
        retry = "then `sluice retry` (or run again)"
        if isinstance(exc, PermissionError):
            why, hint = (
                "access denied",
                "check the credentials the store gets (AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the runner's role) and that they may "
                f"read and write {self.url}; {retry}",
            )
        elif isinstance(exc, FileNotFoundError) and "bucket" in text.lower():
            bucket = self.root.split("/", 1)[0]
            why, hint = (
                "the bucket does not exist",
                f"create the bucket {bucket!r} or point `artifacts:` in sluice.yaml at an "
                f"existing one; {retry}",
            )
        else:
            endpoint = os.environ.get("AWS_ENDPOINT_URL")
            why, hint = (
                "the store does not answer",
                "check that the store is up and reachable"
                + (f" at AWS_ENDPOINT_URL={endpoint}" if endpoint else "")
                + f"; {retry}",
            )
        # The fix in the message itself: a run records the message in the step's attempt.
        return EngineUnavailable(f"{doing} artifact store {self.url}: {why} ({text}); {hint}")

    def put_files(self, paths: Sequence[Path]) -> list[ArtifactPointer]:
        """`put_file` for many files, in order. On S3, files under one upload part go in one
        batch of parallel PUTs (s3fs's own `put`), without a look first: the same bytes
        written again under their digest change nothing (bench_store.py: 1,000 files)."""
        small = [p for p in paths if p.stat().st_size < self._upload.get("chunksize", 0)]
        if len(small) < 2:
            return [self.put_file(path) for path in paths]
        known = {path: (sha256_file(path), path.stat().st_size) for path in small}
        try:
            self.fs.put([str(p) for p in known], [self._path(sha) for sha, _ in known.values()])
        except Exception as exc:
            size = size_text(sum(size for _, size in known.values()))
            raise self.unavailable(exc, f"cannot write {size} to") from None
        return [self._pointer(*known[p]) if p in known else self.put_file(p) for p in paths]

    def get_files(self, wanted: Sequence[tuple[ArtifactPointer, Path]]) -> None:
        """`get_file` for many objects; on S3 the small ones in one batch of parallel GETs,
        each checked against its sha256 before it takes its name."""
        small = [(p, d) for p, d in wanted if p.size < self._upload.get("chunksize", 0)]
        if len(small) < 2:
            small = []
        tmps = [d.with_name(f".{d.name}.tmp-{secrets.token_hex(4)}") for _, d in small]
        try:
            for tmp in tmps:
                tmp.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get([self._path(p.sha256) for p, _ in small], [str(t) for t in tmps])
            if any(sha256_file(t) != p.sha256 for (p, _), t in zip(small, tmps, strict=True)):
                raise CorruptArtifact("a batch read back wrong bytes")
            for (_, dest), tmp in zip(small, tmps, strict=True):
                os.replace(tmp, dest)
        except Exception:
            small = []  # one at a time instead: each failure named as get_file names it
        finally:
            for tmp in tmps:
                tmp.unlink(missing_ok=True)
        done = {id(dest) for _, dest in small}
        for pointer, dest in wanted:
            if id(dest) not in done:
                self.get_file(pointer, dest)

    def _free(self) -> str:
        return free_text(Path(self.root)) if self.local else "free space unknown"

    def _present(self, target: str, size: int) -> bool:
        try:
            if self.local:
                return os.stat(target).st_size == size
            return int(self.fs.size(target)) == size
        except Exception as exc:
            if self._store_failure(exc):
                raise  # the store's failure, not a missing object
            return False

    def _write(self, source: Path, target: str) -> None:
        # A temporary name, then a rename: a reader never sees half an object. On any
        # failure the temporary file goes too: a partial copy must not keep a store full.
        tmp = f"{target}.tmp-{secrets.token_hex(4)}"
        try:
            if self.local:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, tmp)
                os.replace(tmp, target)
                return
            if self._upload:  # S3's PUT is atomic (a multipart upload appears when complete):
                # written in place, streamed from disk, never a copy-and-delete of 1 GiB
                self.fs.put_file(str(source), target, **self._upload)
                return
            self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(str(source), tmp)
            self.fs.mv(tmp, target)
        except BaseException:
            self._discard(tmp)
            raise

    def _discard(self, tmp: str) -> None:
        try:
            if self.local:
                Path(tmp).unlink(missing_ok=True)
            elif self.fs.exists(tmp):
                self.fs.rm_file(tmp)
        except Exception:  # the original failure is the one to report
            pass

    def has(self, pointer: ArtifactPointer, *, verify: bool = False) -> bool:
        """Whether the object is there with the right size (and, with `verify`, the right bytes)."""
        target = self._path(pointer.sha256)
        try:
            if not self._present(target, pointer.size):
                return False
            if not verify:
                return True
            digest = hashlib.sha256()
            with self.fs.open(target, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
        except Exception as exc:
            if self._store_failure(exc):
                raise self.unavailable(exc, "cannot read from") from None
            if isinstance(exc, OSError):
                return False
            raise
        return digest.hexdigest() == pointer.sha256

    def _store_failure(self, exc: BaseException) -> bool:
        """A remote store that refuses, lacks its bucket or does not answer (not an object's
        absence, nor a disk's failure): the cases `unavailable` names the fix of."""
        if self.local:
            return False
        if isinstance(exc, FileNotFoundError):
            return "bucket" in str(exc).lower()
        return isinstance(exc, PermissionError) or not isinstance(exc, OSError)

    def get_file(self, pointer: ArtifactPointer, dest: Path) -> None:
        """Copy an object to `dest`, checking its sha256; raises CorruptArtifact on a mismatch."""
        target = self._path(pointer.sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{secrets.token_hex(4)}")
        digest = hashlib.sha256()
        try:
            if self._upload:  # one GET streamed to disk (s3fs's parallel ranges: 50 MiB each)
                self.fs.get_file(target, str(tmp), max_concurrency=1)
                actual = sha256_file(tmp)
            else:
                with self.fs.open(target, "rb") as src, tmp.open("wb") as out:
                    while chunk := src.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                actual = digest.hexdigest()
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            full = (
                disk.full_disk(exc, dest.parent, f"artifact {pointer.sha256[:12]}")
                if isinstance(exc, OSError)
                else None
            )
            if full is not None:  # the engine's disk, not a missing object
                raise full from None
            if self._store_failure(exc):
                raise self.unavailable(exc, "cannot read from") from None
            if not isinstance(exc, OSError):
                raise
            raise CorruptArtifact(
                f"artifact {pointer.sha256[:12]} is missing from {self.url}: {exc}"
            ) from None
        if actual != pointer.sha256:
            tmp.unlink(missing_ok=True)
            raise CorruptArtifact(
                f"artifact {pointer.sha256[:12]} in {self.url} does not match its sha256"
            )
        os.replace(tmp, dest)

    # -- for `sluice gc --runs` ------------------------------------------------------------

    def objects(self) -> list[StoredObject]:
        """Every whole object in the store (temporary files and other names left out)."""
        top = f"{self.root}/sha256"
        try:
            found = self.fs.find(top, detail=True) if self.fs.exists(top) else {}
        except OSError as exc:
            raise EngineUnavailable(f"cannot list artifact store {self.url}: {exc}") from None
        listed = []
        for path, info in found.items():
            match = _OBJECT.search(str(path))
            if match is not None:
                sha = match.group(1) + match.group(2)
                listed.append(StoredObject(sha, int(info.get("size") or 0), _mtime(info)))
        return listed

    def remove(self, sha256: str) -> None:
        """Delete one object (gone already: nothing to do)."""
        target = self._path(sha256)
        try:
            if self.fs.exists(target):
                self.fs.rm_file(target)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise EngineUnavailable(
                f"cannot remove from artifact store {self.url}: {exc}"
            ) from None


def _mtime(info: dict[str, Any]) -> float | None:
    """When an object was written, from whatever its fsspec back end reports."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, int | float):
            return float(value)
        timestamp = getattr(value, "timestamp", None)
        if callable(timestamp):
            return float(timestamp())
    return None
