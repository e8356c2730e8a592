"""The results branch in memory: git's compare-and-swap and claim semantics, without git.

A `MemoryRepository` holds commits and refs; writers that share one act like threads of one
clone. Give each writer its own repository and one shared `remote` to act like runners
that push to one origin:

    origin = MemoryRepository()
    a, b = MemoryResultsBranch(remote=origin), MemoryResultsBranch(remote=origin)
    a.commit({"claims/x": b"a"}, "claim", expect_absent=["claims/x"])
    b.commit({"claims/x": b"b"}, "claim", expect_absent=["claims/x"])  # raises ClaimLost
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from pydantic import ValidationError

from engine.adapters import results_archive
from engine.core import layout
from engine.core.manifest import RunManifest, with_step_records
from engine.errors import ClaimLost, EngineUnavailable, UsageError
from engine.ports import Changes

Files = Mapping[str, bytes]  # path -> content: a commit's whole tree
_EMPTY: Mapping[str, bytes] = MappingProxyType({})
_ATTEMPTS = 100


@dataclass(frozen=True)
class _Commit:
    parent: str | None
    files: Files


class MemoryRepository:
    """Commits (immutable, by id) and refs (moved only by compare-and-swap)."""

    def __init__(self) -> None:
        self._commits: dict[str, _Commit] = {}
        self._refs: dict[str, str] = {}
        self._lock = threading.Lock()

    def ref(self, name: str) -> str | None:
        with self._lock:
            return self._refs.get(name)

    def cas(self, name: str, new: str, old: str | None) -> bool:
        """Move `name` from `old` (None: absent) to `new`; False when it was elsewhere."""
        with self._lock:
            if self._refs.get(name) != old:
                return False
            self._refs[name] = new
            return True

    def set_ref(self, name: str, commit: str) -> None:
        with self._lock:
            self._refs[name] = commit

    def store(self, parent: str | None, files: Files, message: str) -> str:
        digest = hashlib.sha1(repr((parent, sorted(files.items()), message)).encode())
        sha = digest.hexdigest()
        with self._lock:
            self._commits.setdefault(sha, _Commit(parent, MappingProxyType(dict(files))))
        return sha

    def files(self, commit: str | None) -> Files:
        if commit is None:
            return _EMPTY
        with self._lock:
            return self._commits[commit].files

    def ancestors(self, commit: str | None) -> list[str]:
        """`commit` and its parents, newest first."""
        found = []
        with self._lock:
            while commit is not None:
                found.append(commit)
                commit = self._commits[commit].parent
        return found

    def copy_from(self, other: MemoryRepository, commit: str) -> None:
        """Bring `commit` and its ancestors over from `other` (a push or a fetch)."""
        for sha in other.ancestors(commit):
            with other._lock:
                found = other._commits[sha]
            with self._lock:
                if self._commits.setdefault(sha, found) is not found:
                    break  # already here, and so are its parents


class MemoryResultsBranch:
    """A ResultsBranch over a MemoryRepository, pushing to `remote` when there is one."""

    def __init__(
        self,
        repository: MemoryRepository | None = None,
        *,
        remote: MemoryRepository | None = None,
        branch: str = "sluice-results",
        push: bool | str = "auto",
        keep_runs: int | None = None,
        archive_batch: int = results_archive.BATCH,
    ) -> None:
        if push not in (True, False, "auto", "always", "never"):
            raise UsageError(f"results push must be auto, always or never, not {push!r}")
        self.repo, self.remote, self.branch = repository or MemoryRepository(), remote, branch
        self._ref, self._tracking = f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"
        self._push_mode = push
        self.keep_runs, self.archive_batch = keep_runs, max(1, archive_batch)

    @property
    def pushes(self) -> bool:
        if self._push_mode in (True, "always"):
            return True
        return self._push_mode == "auto" and self.remote is not None

    def tip(self) -> str | None:
        return self.repo.ref(self._ref) or self.repo.ref(self._tracking)

    def read(self, path: str, *, at: str | None = None) -> bytes | None:
        found = self.repo.files(at or self.tip()).get(path.strip("/"))
        if found is None and (holder := self._holder(path, at)) is not None:
            return self.read(path, at=holder)
        return found

    def list_dir(self, path: str, *, at: str | None = None) -> list[str]:
        found = list(_entries(self.repo.files(at or self.tip()), path.strip("/")))
        if not found and (holder := self._holder(path, at)) is not None:
            return self.list_dir(path, at=holder)
        return found

    def _holder(self, path: str, at: str | None) -> str | None:
        """For a path in the folder of a run no longer at the tip: the commit the archive
        names as holding it."""
        inside = results_archive.split_run_path(path) if at is None else None
        if inside is None or _entries(self.repo.files(self.tip()), layout.run(*inside[:2])):
            return None
        where = results_archive.find(self, inside[1])
        return where[1] if where and where[0] == inside[0] else None

    def commit(self, changes: Changes, message: str, *, expect_absent: Sequence[str] = ()) -> str:
        wanted = {"/".join(layout.parts(p)): data for p, data in changes.items()}
        for path in wanted:
            if any(other.startswith(path + "/") for other in wanted):
                raise UsageError(f"{path} is both a file and a folder in one commit")
        absent = [p.strip("/") for p in expect_absent]
        pushing = self.pushes
        if pushing and self.repo.ref(self._ref) is None:
            with contextlib.suppress(EngineUnavailable):
                self.fetch()
        for _ in range(_ATTEMPTS):
            local = self.repo.ref(self._ref)
            base = local or self.repo.ref(self._tracking)
            self._check_absent(base, absent)
            commit = self._commit_onto(base, wanted, message)
            if self.repo.cas(self._ref, commit, local):
                if pushing:
                    commit = self._push(commit, base, wanted, message, absent)
                if pushing or self.remote is None:  # the archive names pushed commits only
                    self._maintain(wanted, commit)
                return commit
        raise EngineUnavailable(f"{self._ref} kept moving: gave up after {_ATTEMPTS} tries")

    def _maintain(self, changes: Changes, holder: str) -> None:
        """As the git branch: move the oldest runs off the tip once there are enough."""
        if self.keep_runs is not None:
            results_archive.maintain(self, changes, holder, self.keep_runs, self.archive_batch)

    def runs(self, pipeline: str | None = None, limit: int = 20) -> list[RunManifest]:
        tip = self.tip()
        if tip is None or limit <= 0:
            return []
        files = self.repo.files(tip)
        pipelines = [pipeline] if pipeline is not None else list(_entries(files, layout.RUNS))
        found = [
            (run_id, name)
            for name in pipelines
            for run_id, folder in _entries(files, layout.pipeline_runs(name)).items()
            if folder
        ]
        counts = {name: sum(1 for _, p in found if p == name) for name in pipelines}
        older = [
            (run_id, name, holder)
            for name in pipelines
            if counts[name] < limit
            for run_id, holder in results_archive.newest(self, name, limit)
        ]
        candidates = [(r, p, None) for r, p in found] + older
        newest = heapq.nlargest(limit, candidates, key=lambda c: c[:2])
        read = (
            _manifest(self.repo.files(at or tip).get(layout.manifest(p, r))) for r, p, at in newest
        )
        return [self._with_steps(m) for m in read if m is not None]

    def manifest(self, run_id: str) -> RunManifest | None:
        found, at = self._in_run(run_id, layout.MANIFEST), None
        if found is None and (where := results_archive.find(self, run_id)) is not None:
            at = where[1]
            found = self.repo.files(at).get(layout.manifest(where[0], run_id))
        manifest = _manifest(found)
        return None if manifest is None else self._with_steps(manifest, at)

    def _with_steps(self, manifest: RunManifest, at: str | None = None) -> RunManifest:
        files = self.repo.files(at or self.tip())
        folder = layout.step_records(manifest.pipeline, manifest.run_id)
        records = {name: files[f"{folder}/{name}"] for name in _entries(files, folder)}
        return with_step_records(manifest, records)

    def log(self, run_id: str, step: str, attempt: int) -> bytes | None:
        rest = f"{layout.LOGS}/{layout.log_name(step, attempt)}"
        found = self._in_run(run_id, rest)
        if found is None and (where := results_archive.find(self, run_id)) is not None:
            found = self.repo.files(where[1]).get(f"{layout.run(where[0], run_id)}/{rest}")
        return found

    def fetch(self) -> None:
        if self.remote is None:
            return
        remote, local = self._fetch_remote(), self.repo.ref(self._ref)
        behind = local is None or (remote is not None and local in self.repo.ancestors(remote))
        if remote and remote != local and behind:
            self.repo.cas(self._ref, remote, local)

    def catch_up(self) -> None:
        if self.pushes:
            with contextlib.suppress(EngineUnavailable):
                self.fetch()

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> MemoryResultsBranch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- committing ----------------------------------------------------------------------

    def _commit_onto(
        self, parent: str | None, changes: Mapping[str, bytes | None], message: str
    ) -> str:
        files = dict(self.repo.files(parent))
        for path, data in changes.items():
            for existing in [f for f in files if f == path or f.startswith(path + "/")]:
                del files[existing]  # a file replaces a folder, and a deletion takes either
            names = path.split("/")
            for end in range(1, len(names)):
                files.pop("/".join(names[:end]), None)  # a folder replaces a file
            if data is not None:
                files[path] = data
        return self.repo.store(parent, files, message)

    def _push(
        self,
        commit: str,
        parent: str | None,
        changes: Mapping[str, bytes | None],
        message: str,
        absent: Sequence[str],
    ) -> str:
        """Fast-forward the remote; when another writer got there first, re-apply onto its
        tip (everything since the common base, less claims the remote now holds)."""
        assert self.remote is not None
        local, first_parent, pending = commit, parent, changes
        for _ in range(_ATTEMPTS):
            remote_tip = self.remote.ref(self._ref)
            if remote_tip is None or remote_tip in self.repo.ancestors(commit):
                self.remote.copy_from(self.repo, commit)
                if self.remote.cas(self._ref, commit, remote_tip):
                    break
            remote = self._fetch_remote()
            assert remote is not None
            base = self._merge_base(commit, remote)
            if base == commit:  # another local writer's push already carried ours
                break
            if base != parent:
                pending = self._carried(base, commit, remote, ours=changes)
            try:
                self._check_absent(remote, absent)
            except ClaimLost:
                self.repo.cas(self._ref, self._without_claim(first_parent, remote), local)
                raise
            commit, parent = self._commit_onto(remote, pending, message), remote
        else:
            raise EngineUnavailable(f"{self.branch} kept moving: gave up after {_ATTEMPTS} tries")
        if commit != local:
            self.repo.cas(self._ref, commit, local)
        return commit

    def _without_claim(self, before: str | None, remote: str) -> str:
        base = self._merge_base(before, remote) if before else None
        if before is None or base == before:
            return remote
        return self._commit_onto(remote, self._diff(base, before), "sluice: keep unpushed")

    def _carried(
        self, base: str | None, commit: str, remote: str, *, ours: Mapping[str, bytes | None]
    ) -> dict[str, bytes | None]:
        added: set[str] = set()
        pending = self._diff(base, commit, added)
        there = self.repo.files(remote)
        for path in added - set(ours):
            if path in there:  # a claim another runner won
                del pending[path]
        return pending

    def _diff(
        self, old: str | None, new: str, added: set[str] | None = None
    ) -> dict[str, bytes | None]:
        before, after = self.repo.files(old), self.repo.files(new)
        changes: dict[str, bytes | None] = {p: None for p in before if p not in after}
        for path, data in after.items():
            if before.get(path) != data:
                changes[path] = data
                if added is not None and path not in before:
                    added.add(path)
        return changes

    def _merge_base(self, a: str, b: str) -> str | None:
        seen = set(self.repo.ancestors(a))
        return next((c for c in self.repo.ancestors(b) if c in seen), None)

    def _check_absent(self, commit: str | None, paths: Sequence[str]) -> None:
        files = self.repo.files(commit)
        for path in paths:
            if path in files or any(f.startswith(path + "/") for f in files):
                raise ClaimLost(path, self.branch)

    def _fetch_remote(self) -> str | None:
        assert self.remote is not None
        tip = self.remote.ref(self._ref)
        if tip is not None:
            self.repo.copy_from(self.remote, tip)
            self.repo.set_ref(self._tracking, tip)  # it follows the remote, no questions
        return tip

    def _in_run(self, run_id: str, rest: str) -> bytes | None:
        files = self.repo.files(self.tip())
        if "/" in run_id:
            return None
        for pipeline in _entries(files, layout.RUNS):
            found = files.get(f"{layout.run(pipeline, run_id)}/{rest}")
            if found is not None:
                return found
        return None


def _entries(files: Files, folder: str) -> dict[str, bool]:
    """Name -> is a folder, of the entries of `folder`, in git's order."""
    prefix = f"{folder}/" if folder else ""
    found: dict[str, bool] = {}
    for path in files:
        if path.startswith(prefix):
            name, _, rest = path[len(prefix) :].partition("/")
            found[name] = found.get(name, False) or bool(rest)
    order = sorted(found, key=lambda n: n + "/" if found[n] else n)
    return {name: found[name] for name in order}


def _manifest(data: bytes | None) -> RunManifest | None:
    if data is None:
        return None
    try:
        return RunManifest.from_json(data)
    except ValidationError:
        return None  # a damaged manifest hides one run, as on the git branch
