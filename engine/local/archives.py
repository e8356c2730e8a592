"""Tar archives on local disk: building what goes into a step, safely unpacking what comes out."""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import time
from collections.abc import Iterable, Iterator
from io import BytesIO
from pathlib import Path, PurePosixPath
from types import TracebackType

from engine.errors import SluiceError
from engine.local import disk

_MAX_LINK_HOPS = 40  # what Linux allows before ELOOP


class UnsafeArchive(SluiceError):
    """An archive coming out of a container tries to write somewhere it must not."""

    def __init__(self, archive: Path, member: str, reason: str, *, partial: bool = False) -> None:
        done = "extraction stopped there" if partial else "nothing was extracted"
        super().__init__(
            f"refused archive {archive.name}: member {member!r} {reason}; {done}",
            hint="a step may only write plain files, folders and links that stay inside "
            "its output folder",
        )
        self.member = member
        self.reason = reason


def extract_tar(
    archive: Path,
    dest: Path,
    *,
    strip: str | None = None,
    max_bytes: int = 2 * 1024**3,
    max_members: int = 100_000,
) -> list[Path]:
    """Extract an untrusted tar into `dest`; return the regular files written (relative).

    The whole member list is checked before anything is written, so a refused archive
    leaves no trace; tarfile's "data" filter then guards the extraction itself.
    `strip` names a first path component every member must start with, removed on the
    way (docker's archive of `/sluice/outputs` holds `outputs/...`).
    """
    try:
        with tarfile.open(archive, mode="r:") as tar:
            plan = _validate(tar, archive, strip, max_bytes, max_members)
            dest.mkdir(parents=True, exist_ok=True)
            renamed = {id(member): name for member, name in plan}

            def place(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
                name = renamed[id(member)]
                linkname = member.linkname
                if member.islnk():
                    linkname = _strip(PurePosixPath(linkname), strip).as_posix()
                return tarfile.data_filter(member.replace(name=name, linkname=linkname), path)

            if _HAS_DATA_FILTER:
                tar.extractall(dest, members=[member for member, _ in plan], filter=place)
            else:
                _extract_checked(tar, dest, plan, strip)
    except (_FilterError, _LinkInTheWay) as exc:
        # Only reachable when `dest` already held links; the checks above refuse the rest.
        member = getattr(getattr(exc, "tarinfo", None), "name", "")
        raise UnsafeArchive(archive, member, str(exc), partial=True) from exc
    except (tarfile.ReadError, EOFError) as exc:
        raise UnsafeArchive(archive, "", f"is unreadable: not a valid tar ({exc})") from exc
    except OSError as exc:
        full = disk.full_disk(exc, dest, f"the contents of {archive.name}")
        if full is None:
            raise
        raise full from None
    return sorted(Path(name) for member, name in plan if member.isreg() or member.islnk())


# tarfile's extraction filters arrived in Python 3.11.4; Debian 12's python3 is 3.11.2.
_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


class _LinkInTheWay(Exception):
    """Stands in for tarfile.FilterError where filters do not exist."""

    def __init__(self, member: str, link: str) -> None:
        super().__init__(f"{link!r} is a link already in the destination")
        self.tarinfo = tarfile.TarInfo(member)


_FilterError: type[Exception] = getattr(tarfile, "FilterError", _LinkInTheWay)


def _extract_checked(
    tar: tarfile.TarFile, dest: Path, plan: list[tuple[tarfile.TarInfo, str]], strip: str | None
) -> None:
    """Extraction for Pythons without filters: the plan is already validated member by member.

    Like the "data" filter: plain permission bits only (no set-id, sticky or write for
    others), no owners, and links that `_validate` has shown to stay inside `dest`.
    """
    for member, name in plan:
        target = dest / name
        # Never write through a link that was already there (the data filter refuses it too).
        for path in [target, *target.parents]:
            if path == dest:
                break
            if path.is_symlink():
                raise _LinkInTheWay(name, path.relative_to(dest).as_posix())
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if member.issym():
            target.symlink_to(member.linkname)
        elif member.islnk():
            source = dest / _strip(PurePosixPath(member.linkname), strip).as_posix()
            shutil.copyfile(source, target, follow_symlinks=False)
        else:
            handle = tar.extractfile(member)
            assert handle is not None
            with handle, target.open("wb") as out:
                shutil.copyfileobj(handle, out)
            target.chmod(member.mode & 0o755 | 0o600)


def _validate(
    tar: tarfile.TarFile, archive: Path, strip: str | None, max_bytes: int, max_members: int
) -> list[tuple[tarfile.TarInfo, str]]:
    """Check every member; return (member, destination name) for those to extract."""
    plan: list[tuple[tarfile.TarInfo, str]] = []
    kinds: dict[str, tarfile.TarInfo] = {}
    total = 0
    for count, member in enumerate(tar, start=1):  # iterating keeps memory bounded
        if count > max_members:
            raise UnsafeArchive(archive, member.name, f"exceeds the limit of {max_members} members")
        raw = PurePosixPath(member.name)
        if raw.is_absolute():
            raise UnsafeArchive(archive, member.name, "has an absolute path")
        if ".." in raw.parts:
            raise UnsafeArchive(archive, member.name, "has a '..' component")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise UnsafeArchive(archive, member.name, f"is {_kind(member)}")
        if strip is not None and raw.parts[:1] != (strip,):
            raise UnsafeArchive(archive, member.name, f"is not inside {strip}/")
        rel = _strip(raw, strip)
        if not rel.parts:  # the stripped folder itself
            if not member.isdir():
                raise UnsafeArchive(archive, member.name, "is not a folder")
            continue
        name = rel.as_posix()
        if name in kinds and not (member.isdir() and kinds[name].isdir()):
            raise UnsafeArchive(archive, member.name, "appears twice")
        if member.isreg():
            total += member.size
            if total > max_bytes:
                raise UnsafeArchive(archive, member.name, f"takes the total over {max_bytes} bytes")
        if member.islnk():
            _check_hard_link(archive, member, kinds, strip)
        kinds[name] = member
        plan.append((member, name))
    for member, name in plan:
        _check_links(archive, member, name, kinds)
    return plan


def _check_hard_link(
    archive: Path, member: tarfile.TarInfo, earlier: dict[str, tarfile.TarInfo], strip: str | None
) -> None:
    """A hard link may only point at a regular file that came before it in the archive."""
    raw = PurePosixPath(member.linkname)
    inside = not raw.is_absolute() and ".." not in raw.parts
    inside = inside and (strip is None or raw.parts[:1] == (strip,))
    target = earlier.get(_strip(raw, strip).as_posix()) if inside else None
    if target is None or not target.isreg():
        raise UnsafeArchive(
            archive, member.name, f"hard-links to {member.linkname!r}, not a file in the archive"
        )


def _check_links(
    archive: Path,
    member: tarfile.TarInfo,
    name: str,
    kinds: dict[str, tarfile.TarInfo],
) -> None:
    """Refuse paths through links, and links that lead outside the destination."""
    parts = PurePosixPath(name).parts
    for depth in range(1, len(parts)):
        parent = kinds.get("/".join(parts[:depth]))
        if parent is not None and not parent.isdir():
            raise UnsafeArchive(archive, member.name, "lies under a link or a file")
    if member.issym():
        if PurePosixPath(member.linkname).is_absolute():
            raise UnsafeArchive(archive, member.name, f"links to absolute {member.linkname!r}")
        resolved = _resolve(list(parts[:-1]), member.linkname, kinds, 0)
        if resolved is None:
            raise UnsafeArchive(
                archive,
                member.name,
                f"links to {member.linkname!r}, which leads outside the destination",
            )


def _resolve(
    base: list[str], target: str, kinds: dict[str, tarfile.TarInfo], hops: int
) -> list[str] | None:
    """Follow `target` from folder `base` through the archive's own links; None if it escapes."""
    if hops > _MAX_LINK_HOPS:
        return None
    path = list(base)
    for part in PurePosixPath(target).parts:
        if part == "..":
            if not path:
                return None
            path.pop()
            continue
        path.append(part)
        link = kinds.get("/".join(path))
        if link is not None and link.issym():
            if PurePosixPath(link.linkname).is_absolute():
                return None
            resolved = _resolve(path[:-1], link.linkname, kinds, hops + 1)
            if resolved is None:
                return None
            path = resolved
    return path


def _kind(member: tarfile.TarInfo) -> str:
    if member.ischr():
        return "a character device"
    if member.isblk():
        return "a block device"
    if member.isfifo():
        return "a FIFO"
    return f"of unsupported type {member.type!r}"


def _strip(path: PurePosixPath, strip: str | None) -> PurePosixPath:
    parts = [part for part in path.parts if part != "."]
    if strip is not None and parts[:1] == [strip]:
        parts = parts[1:]
    return PurePosixPath(*parts)


class TarBuilder:
    """Streams a tar to a file on disk: the archive put at `/` in a step's container.

    Entries are owned by root; folders are world-writable by default so that steps
    running as another user can write in them.

        with TarBuilder(tmp / "in.tar") as tar:
            tar.add_dir("sluice/outputs")
            tar.add_bytes("sluice/config.json", b"{}")
            tar.add_tree(repo, "workspace")
    """

    def __init__(self, out: Path) -> None:
        self.path = out
        # Held open across calls and closed by close()/__exit__, like any writer object.
        self._tar = tarfile.open(out, mode="w:", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self._dirs: dict[str, int] = {}  # folder entries written, and their modes

    def __enter__(self) -> TarBuilder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._tar.close()

    def add_dir(self, arcname: str, *, mode: int = 0o777) -> None:
        """A folder entry (parents are added too, with mode 0o755 unless added before)."""
        name = _arcname(arcname)
        self._parents(name)
        if self._dirs.get(name, mode) != mode:  # asked for again with another mode:
            del self._dirs[name]  # a second entry, which wins when extracted
        self._mkdirs(name, mode)

    def add_bytes(self, arcname: str, data: bytes, *, mode: int = 0o644) -> None:
        """A file with the given content."""
        name = _arcname(arcname)
        self._parents(name)
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self._tar.addfile(info, BytesIO(data))

    def add_file(self, arcname: str, path: Path, *, mode: int | None = None) -> None:
        """A local file (or symbolic link, kept as a link), streamed from disk."""
        name = _arcname(arcname)
        self._parents(name)
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            info = self._info(name, tarfile.SYMTYPE, 0o777, st.st_mtime)
            info.linkname = os.readlink(path)
            self._tar.addfile(info)
            return
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path} is not a regular file")
        executable = st.st_mode & 0o100
        info = self._info(name, tarfile.REGTYPE, mode if mode is not None else 0o666, st.st_mtime)
        if mode is None and executable:
            info.mode = 0o777
        info.size = st.st_size
        with path.open("rb") as handle:
            self._tar.addfile(info, handle)

    def add_tree(
        self,
        src: Path,
        arcname: str,
        *,
        dir_mode: int = 0o777,
        paths: Iterable[str] | None = None,
    ) -> None:
        """The folder `src` as `arcname/...`; only `paths` (relative to `src`) when given.

        Folders get `dir_mode`; files stay writable by all; special files are left out.
        """
        self.add_dir(arcname, mode=dir_mode)
        if paths is None:
            paths = _walk(src)
        for rel in sorted(set(paths)):
            local = src / rel
            name = f"{_arcname(arcname)}/{_arcname(rel)}"
            self._mkdirs(PurePosixPath(name).parent.as_posix(), dir_mode)
            st = local.lstat()
            if stat.S_ISDIR(st.st_mode):
                self._mkdirs(name, dir_mode)
            elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                self.add_file(name, local)

    def _parents(self, name: str) -> None:
        parent = PurePosixPath(name).parent
        if parent.parts:
            self._mkdirs(parent.as_posix(), 0o755)

    def _mkdirs(self, name: str, mode: int) -> None:
        """Entries for `name` and its ancestors not added yet, top down, all with `mode`."""
        path = PurePosixPath(name)
        for folder in [*(p for p in reversed(path.parents) if p.parts), path]:
            key = folder.as_posix()
            if key not in self._dirs:
                self._dirs[key] = mode
                self._tar.addfile(self._info(key, tarfile.DIRTYPE, mode))

    @staticmethod
    def _info(name: str, kind: bytes, mode: int, mtime: float | None = None) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = int(mtime if mtime is not None else time.time())
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info


def pack_dir(src: Path, out: Path, *, arcname: str, mode: int = 0o777) -> None:
    """Write the folder `src` as a tar at `out`, entries under `arcname/`, folders `mode`."""
    with TarBuilder(out) as tar:
        tar.add_tree(src, arcname, dir_mode=mode)


def _walk(src: Path) -> list[str]:
    """Every entry under `src` (relative, POSIX), not following links to folders."""
    found: list[str] = []
    for root, dirs, files in os.walk(src):
        rel_root = Path(root).relative_to(src)
        found.extend((rel_root / name).as_posix() for name in dirs + files)
    return found


def _arcname(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"bad archive name {name!r}: must be relative, without '..'")
    return path.as_posix()


_ENDS: dict[tuple[str, int, int], int] = {}


def members_end(path: Path) -> int:
    """Where a tar's last member ends (before its end-of-archive blocks), cached per file."""
    info = path.stat()
    key = (str(path), info.st_size, info.st_mtime_ns)
    if key not in _ENDS:
        end = 0
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                blocks = -(-member.size // tarfile.BLOCKSIZE) if member.isreg() else 0
                end = max(end, member.offset_data + blocks * tarfile.BLOCKSIZE)
        _ENDS[key] = end
    return _ENDS[key]


def concatenated(paths: list[Path], chunk: int = 1024 * 1024) -> Iterator[bytes]:
    """Several tar files streamed as one archive: all but the last lose their end blocks."""
    for index, path in enumerate(paths):
        remaining = members_end(path) if index < len(paths) - 1 else path.stat().st_size
        with path.open("rb") as handle:
            while remaining > 0 and (data := handle.read(min(chunk, remaining))):
                remaining -= len(data)
                yield data
