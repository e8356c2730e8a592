"""The repository snapshot a run starts from: files (tracked and untracked, not ignored), commit, dirty."""

from __future__ import annotations

import hashlib
import os
import posixpath
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from engine.core.layout import ENGINE_DIR
from engine.errors import EngineUnavailable
from engine.local import gitcli


def is_git_repo(path: Path) -> bool:
    return (path / ".git").exists()


def find_repo_root(start: Path) -> Path:
    """The git top level containing `start`, else `start` itself."""
    current = start.resolve()
    for candidate in (current, *current.parents):
        if (candidate / ".git").exists():
            return candidate
    return current


def ensure_engine_dir(repo: Path) -> Path:
    """`.sluice/` under the repo, git-ignored by a `.gitignore` inside it (the user's is untouched)."""
    folder = repo / ENGINE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# Sluice's local runs and artifacts; never committed.\n*\n")
    return folder


def _list_files(repo: Path) -> list[str]:
    if is_git_repo(repo):
        out = gitcli.output(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
        if out is None:
            raise EngineUnavailable(f"git ls-files failed in {repo}", hint="is git installed?")
        names = sorted({n for n in out.split("\0") if n})
    else:
        names = []
        for base, dirs, files in os.walk(repo):
            dirs[:] = [d for d in dirs if d != ".git"]
            names.extend(
                os.path.relpath(os.path.join(base, f), repo).replace(os.sep, "/") for f in files
            )
        names.sort()
    return [n for n in names if n != ENGINE_DIR and not n.startswith(ENGINE_DIR + "/")]


# What `workspace: true` leaves out: files no step plausibly reads, whose edits must not make
# every step run again. A step that reads one names it (`workspace: [docs, README.md]`), or
# takes everything with `workspace: [.]`. Lower-cased names are compared.
NOT_READ_BY_DEFAULT = ("*.md", "docs/", ".github/")


def read_by_default(name: str) -> bool:
    """Whether `workspace: true` holds the file: all but Markdown files anywhere and the
    top-level `docs/` and `.github/` folders.

    >>> [read_by_default(n) for n in ("src/a.py", "README.md", "docs/x.png", ".github/ci.yml")]
    [True, False, False, False]
    >>> read_by_default("src/docs/x.py"), read_by_default("notes.MD")
    (True, False)
    """
    lower = name.lower()
    return not (lower.endswith(".md") or lower.startswith(("docs/", ".github/")))


def _clean(paths: Iterable[str]) -> list[str]:
    """Workspace paths as the snapshot names files: no leading or trailing `/`; `.` stays."""
    return [posixpath.normpath(p.strip("/") or ".") for p in paths]


def _under(name: str, paths: Iterable[str]) -> bool:
    """Whether `name` is one of the (clean) paths or lies under one; `.` is everything."""
    return any(p == "." or name == p or name.startswith(p + "/") for p in paths)


@dataclass(frozen=True)
class Selection:
    """What a run's snapshot reads: the files `workspace: true` holds (`default`), the
    files at or under the paths steps name (`paths`; `.` is every file), and the build
    contexts (`builds`), read for their digests only (docker reads those from the repo)."""

    default: bool = False
    paths: tuple[str, ...] = ()
    builds: tuple[str, ...] = ()

    def copies(self, name: str) -> bool:
        """Whether the file goes into the snapshot's tar (some step sees it)."""
        return (self.default and read_by_default(name)) or _under(name, self.paths)

    def reads(self, name: str) -> bool:
        """Whether the file is read and digested."""
        return self.copies(name) or _under(name, self.builds)


@dataclass(frozen=True)
class WorkspaceSnapshot:
    """Files frozen into a tar at run start; digests feed cache keys."""

    root: Path
    tar: Path | None  # members under `workspace/`
    digests: dict[str, str] = field(
        default_factory=dict
    )  # path -> sha256 (links: of the target text); also of build-context files
    commit: str | None = None
    dirty: bool = False
    copied: frozenset[str] | None = None  # the files in the tar; None: every digested file

    def subset_tar(self, include: list[str], out: Path) -> Path:
        """A tar holding only the snapshot's files at or under the given paths."""
        prefixes = _clean(include)
        with tarfile.open(self.tar or "", "r") as src, tarfile.open(out, "w") as dst:
            dst.addfile(_dir_info("workspace"))
            for member in src:
                if member.isdir():
                    continue
                if _under(member.name.removeprefix("workspace/"), prefixes):
                    dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        return out

    def files_for(self, include: bool | list[str]) -> dict[str, str]:
        """The digests of the files a step sees, given its `workspace` field: what its
        cache key covers. `true`: what the tar holds (see `read_by_default`)."""
        if include is False:
            return {}
        if include is True:
            if self.copied is None:
                return dict(self.digests)
            return {k: v for k, v in self.digests.items() if k in self.copied}
        prefixes = _clean(include)
        return {k: v for k, v in self.digests.items() if _under(k, prefixes)}


def _dir_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o777
    return info


def selection(selects: Iterable[bool | list[str] | str]) -> Selection:
    """What a run's snapshot must read, from each step's `workspace` (True, False or a list
    of paths) and each build context (a path as text).

    >>> selection([False, ["src/", "pipelines"], "docker"])
    Selection(default=False, paths=('pipelines', 'src'), builds=('docker',))
    >>> selection([["src"], True, ""])
    Selection(default=True, paths=('src',), builds=('.',))
    """
    default, paths, builds = False, set[str](), set[str]()
    for select in selects:
        if select is True:
            default = True
        elif isinstance(select, str):
            builds.update(_clean([select]))
        elif isinstance(select, list):
            paths.update(_clean(select))
    return Selection(default, tuple(sorted(paths)), tuple(sorted(builds)))


def _as_selection(include: bool | list[str] | Selection) -> Selection:
    if isinstance(include, Selection):
        return include
    return selection([include])


class _Hashing:
    """A file read once: the bytes go into the tar and into the sha256 on their way."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.sha256 = handle, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.sha256.update(data)
        return data


def _add_file(tar: tarfile.TarFile, path: Path, name: str) -> str:
    """Stream one regular file into the tar (a chunk at a time); its sha256."""
    with path.open("rb") as handle:
        stat = os.fstat(handle.fileno())
        info = tarfile.TarInfo(f"workspace/{name}")
        info.size = stat.st_size
        info.mode = 0o755 if stat.st_mode & 0o111 else 0o644
        reader = _Hashing(handle)
        try:
            tar.addfile(info, reader)  # tarfile reads it in chunks
        except OSError as exc:  # it shrank while being read
            raise EngineUnavailable(f"{name} changed while the workspace was read: {exc}") from None
        return reader.sha256.hexdigest()


def snapshot(
    repo: Path, out: Path, include: bool | list[str] | Selection = True
) -> WorkspaceSnapshot:
    """Freeze the repo's files into `out` (a tar with members under `workspace/`).

    Only the files `include` selects (see `selection`) are read, a chunk at a time: a large
    file no step sees costs nothing, and one a step sees costs its copy, never its size in
    memory. A file's digest is the sha256 of its bytes, whatever else is selected. Files of
    build contexts only are digested, not copied.
    """
    chosen = _as_selection(include)
    files = [n for n in _list_files(repo) if chosen.reads(n)]
    copied = frozenset(n for n in files if chosen.copies(n))
    digests: dict[str, str] = {}
    dirs: set[str] = set()
    with tarfile.open(out, "w") as tar:
        tar.addfile(_dir_info("workspace"))
        for name in files:
            if name not in copied:
                if (repo / name).is_symlink() or (repo / name).is_file():
                    digests[name] = _digest(repo / name)
                continue
            path = repo / name
            parent = os.path.dirname(name)
            missing = []
            while parent and parent not in dirs:
                missing.append(parent)
                dirs.add(parent)
                parent = os.path.dirname(parent)
            for folder in reversed(missing):
                tar.addfile(_dir_info(f"workspace/{folder}"))
            if path.is_symlink():
                info = tarfile.TarInfo(f"workspace/{name}")
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                tar.addfile(info)
                digests[name] = hashlib.sha256(b"link:" + info.linkname.encode()).hexdigest()
            elif path.is_file():
                digests[name] = _add_file(tar, path, name)
    commit = dirty = None
    if is_git_repo(repo):
        head = gitcli.output(repo, "rev-parse", "--verify", "-q", "HEAD")
        commit = head.strip() if head else None
        status = gitcli.output(repo, "status", "--porcelain", "--untracked-files=normal")
        dirty = bool(status and status.strip())
    return WorkspaceSnapshot(
        root=repo,
        tar=out,
        digests=digests,
        commit=commit,
        dirty=bool(dirty),
        copied=frozenset(n for n in copied if n in digests),
    )


def _digest(path: Path) -> str:
    """The sha256 a file not copied gets: as if copied (links: of the target text)."""
    if path.is_symlink():
        return hashlib.sha256(b"link:" + os.readlink(path).encode()).hexdigest()
    sha256 = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            sha256.update(chunk)
    return sha256.hexdigest()
