"""Content-addressed artifact store (sha256) over fsspec: file:// by default, s3/gs/az via extras."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, NamedTuple

from engine.core import layout
from engine.core.manifest import ArtifactPointer
from engine.errors import EngineUnavailable, SluiceError, UsageError
from engine.local import disk
from engine.local.disk import free_text, size_text

CHUNK = 1024 * 1024
DEFAULT_URL = layout.DEFAULT_ARTIFACTS


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


class ArtifactStore:
    """Objects at `<root>/sha256/<ab>/<rest of digest>`; identical bytes are stored once."""

    def __init__(self, url: str, repo: Path) -> None:
        import fsspec

        self.url = _resolve_url(url, repo)
        try:
            fs, root = fsspec.core.url_to_fs(self.url)
        except ImportError as exc:
            scheme = self.url.split("://", 1)[0]
            extra = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}.get(
                scheme, scheme
            )
            raise UsageError(
                f"artifact store {url!r} needs an extra package: {exc}",
                hint=f"pip install 'sluice[{extra}]'",
            ) from None
        except ValueError as exc:
            raise UsageError(f"artifact store {url!r}: {exc}") from None
        self.fs: Any = fs
        self.root = root.rstrip("/")
        self.local = self.url.startswith("file://")
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def _path(self, sha256: str) -> str:
        return f"{self.root}/sha256/{sha256[:2]}/{sha256[2:]}"

    def uri(self, sha256: str) -> str:
        path = self._path(sha256)
        return f"file://{path}" if self.local else self.fs.unstrip_protocol(path)

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
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise EngineUnavailable(
                f"cannot write {size_text(size)} to artifact store {self.url}: {why} "
                f"({self._free()})",
                hint="free space in the artifact store (or point `artifacts:` in sluice.yaml "
                "at a larger one), then `sluice retry`",
            ) from None
        return ArtifactPointer(uri=self.uri(sha256), sha256=sha256, size=size)

    def _free(self) -> str:
        return free_text(Path(self.root)) if self.local else "free space unknown"

    def _present(self, target: str, size: int) -> bool:
        try:
            return bool(self.fs.exists(target)) and int(self.fs.size(target)) == size
        except (OSError, ValueError):
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
        if not self._present(target, pointer.size):
            return False
        if not verify:
            return True
        digest = hashlib.sha256()
        try:
            with self.fs.open(target, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
        except OSError:
            return False
        return digest.hexdigest() == pointer.sha256

    def get_file(self, pointer: ArtifactPointer, dest: Path) -> None:
        """Copy an object to `dest`, checking its sha256; raises CorruptArtifact on a mismatch."""
        target = self._path(pointer.sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{secrets.token_hex(4)}")
        digest = hashlib.sha256()
        try:
            with self.fs.open(target, "rb") as src, tmp.open("wb") as out:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except (OSError, FileNotFoundError) as exc:
            tmp.unlink(missing_ok=True)
            full = disk.full_disk(exc, dest.parent, f"artifact {pointer.sha256[:12]}")
            if full is not None:  # the engine's disk, not a missing object
                raise full from None
            raise CorruptArtifact(
                f"artifact {pointer.sha256[:12]} is missing from {self.url}: {exc}"
            ) from None
        if digest.hexdigest() != pointer.sha256:
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
