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


@dataclass(frozen=True)
class WorkspaceSnapshot:
    """Files frozen into a tar at run start; digests feed cache keys."""

    root: Path
    tar: Path | None  # members under `workspace/`
    digests: dict[str, str] = field(
        default_factory=dict
    )  # path -> sha256 (links: of the target text)
    commit: str | None = None
    dirty: bool = False

    def subset_tar(self, include: list[str], out: Path) -> Path:
        """A tar holding only the snapshot's files at or under the given paths."""
        prefixes = [p.strip("/") for p in include]

        def wanted(name: str) -> bool:
            rel = name.removeprefix("workspace/")
            return any(rel == p or rel.startswith(p + "/") for p in prefixes)

        with tarfile.open(self.tar or "", "r") as src, tarfile.open(out, "w") as dst:
            dst.addfile(_dir_info("workspace"))
            for member in src:
                if member.isdir():
                    continue
                if wanted(member.name):
                    dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        return out

    def files_for(self, include: bool | list[str]) -> dict[str, str]:
        """The digests a step can see, given its `workspace` field."""
        if include is False:
            return {}
        if include is True:
            return dict(self.digests)
        prefixes = [p.strip("/") for p in include]
        return {
            k: v
            for k, v in self.digests.items()
            if any(k == p or k.startswith(p + "/") for p in prefixes)
        }


def _dir_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o777
    return info


def selection(selects: Iterable[bool | list[str] | str]) -> bool | list[str]:
    """What a run's snapshot must hold, from each step's `workspace` (and each build context,
    as a path): True for everything, else the paths at or under which a step looks.

    >>> selection([False, ["src/", "pipelines"], "docker"])
    ['docker', 'pipelines', 'src']
    >>> selection([["src"], True]), selection([["src"], "."])
    (True, True)
    """
    paths: set[str] = set()
    for select in selects:
        if select is True:
            return True
        for path in [select] if isinstance(select, str) else select or []:
            clean = posixpath.normpath(path.strip("/"))
            if clean in ("", "."):
                return True
            paths.add(clean)
    return sorted(paths)


def _selected(name: str, include: bool | list[str]) -> bool:
    if include is True or include is False:
        return include
    return any(name == p or name.startswith(p + "/") for p in include)


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


def snapshot(repo: Path, out: Path, include: bool | list[str] = True) -> WorkspaceSnapshot:
    """Freeze the repo's files into `out` (a tar with members under `workspace/`).

    Only the files `include` selects (see `selection`) are read, a chunk at a time: a large
    file no step sees costs nothing, and one a step sees costs its copy, never its size in
    memory. A file's digest is the sha256 of its bytes, whatever else is selected.
    """
    files = [n for n in _list_files(repo) if _selected(n, include)]
    digests: dict[str, str] = {}
    dirs: set[str] = set()
    with tarfile.open(out, "w") as tar:
        tar.addfile(_dir_info("workspace"))
        for name in files:
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
    return WorkspaceSnapshot(root=repo, tar=out, digests=digests, commit=commit, dirty=bool(dirty))
