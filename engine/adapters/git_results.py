"""Results branch: commit runs to `sluice-results` without a checkout, push with retry
(the remote side: git_sync.py)."""

from __future__ import annotations

import contextlib
import heapq
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from pydantic import ValidationError

from engine.adapters import results_archive
from engine.adapters.git_objects import BLOB, Obj, ObjectDB, Tree, TreeChanges, clean, parts, text
from engine.adapters.git_sync import BranchSync
from engine.adapters.git_sync import ResultsNotPushed as ResultsNotPushed  # its home for callers
from engine.core import layout
from engine.core.manifest import RunManifest, with_step_records
from engine.errors import EngineUnavailable, UsageError
from engine.local import gitcli

if TYPE_CHECKING:  # for annotations only: recording and listing never load these modules
    from engine.core.config import RepoConfig
    from engine.ports import Changes

_LOCAL_ATTEMPTS = 100
_EMPTY: Mapping[str, bytes] = MappingProxyType({})


class ResultsStore(BranchSync):
    """Reads and writes the results branch with git plumbing; never checks it out.

    Objects go straight into the object database and the branch moves only by
    compare-and-swap, so the user's HEAD, index, working tree and stash are never touched
    and concurrent writers (threads, processes, runners) never lose each other's commits.

        with ResultsStore(Path(".")) as store:
            store.record_run(manifest, {"train.1.log": log})
            latest = store.runs("churn", limit=5)
    """

    def __init__(
        self,
        repo: Path,
        *,
        branch: str = "sluice-results",
        remote: str = "origin",
        push: bool | str = "auto",
        push_attempts: int = 8,
        keep_runs: int | None = None,
        archive_batch: int = results_archive.BATCH,
        partial: bool = False,
    ) -> None:
        if push not in (True, False, "auto", "always", "never"):
            raise UsageError(f"results push must be auto, always or never, not {push!r}")
        self.repo, self.branch, self.remote = Path(repo), branch, remote
        self._ref, self._tracking = f"refs/heads/{branch}", f"refs/remotes/{remote}/{branch}"
        self._push_mode, self._push_attempts = push, max(1, push_attempts)
        # None: every run stays at the tip; else the newest `keep_runs` per pipeline do
        self.keep_runs, self.archive_batch = keep_runs, max(1, archive_batch)
        self._env = gitcli.plumbing_env()
        where = self._git(
            "rev-parse", "--git-path", "objects", "--git-path", "HEAD", "--git-path", "shallow",
            "--show-object-format",
        )  # fmt: skip
        objects, head, shallow, algo = where.stdout.decode().splitlines()
        self._head, self._shallow = self.repo / head, self.repo / shallow
        self._asked: set[str] = set()  # commits fetched on demand (or found missing remotely)
        # A first fetch without file contents (`--filter=blob:none`): see _fetch_remote.
        self._partial_first, self._partial = partial, None if not partial else True
        self.objects = ObjectDB(self.repo, self._env, self.repo / objects, algo)
        self._hashlen = self.objects.hashlen
        self._has_remote: bool | None = None

    @property
    def pushes(self) -> bool:
        """Whether commits are pushed: `auto` pushes when the remote exists."""
        if self._push_mode in (True, "always"):
            return True
        return self._push_mode == "auto" and self._remote_exists()

    def commit(self, changes: Changes, message: str, *, expect_absent: Sequence[str] = ()) -> str:
        """Commit `path -> content` changes (None deletes); returns the commit id.

        Raises ClaimLost when a path of `expect_absent` exists at the tip, here or on the
        remote, and ResultsNotPushed when the remote will not take the commit.
        """
        with contextlib.suppress(OSError):
            if self._head.read_text().strip() == f"ref: {self._ref}":
                # Moving a checked-out branch under the user would garble their working tree.
                raise UsageError(f"{self.branch} is checked out in {self.repo}: switch away first")
        write = self.objects.write
        blobs = {parts(p): b if b is None else write(b"blob", b) for p, b in changes.items()}
        absent = [clean(p) for p in expect_absent]
        pushing = self.pushes
        if pushing and self.objects.commit_of(self._ref) is None:
            with contextlib.suppress(EngineUnavailable):  # offline: commit, then fail to push
                self.fetch()
        commit, parent = self._commit_locally(blobs, message, absent)
        if pushing:
            commit = self._push(commit, parent, blobs, message, absent)
        if pushing or not self._remote_exists():
            # Never name an unpushed commit in the archive while a remote exists: a later
            # push that re-applies onto the remote's tip would leave it behind.
            self._maintain(changes, commit)
        return commit

    def _maintain(self, changes: Changes, holder: str) -> None:
        """After a record (pushed, when pushing): move the oldest runs of its pipeline off
        the tip once there are enough (see adapters/results_archive.py)."""
        if self.keep_runs is not None:
            results_archive.maintain(self, changes, holder, self.keep_runs, self.archive_batch)

    def record_run(
        self,
        manifest: RunManifest,
        logs: Mapping[str, bytes] = _EMPTY,
        extra: Mapping[str, bytes | None] = _EMPTY,
    ) -> str:
        """Commit a run's manifest, its logs (`train.1.log`) and any `extra` paths."""
        return self.commit(*layout.run_record(manifest, logs, extra))

    def tip(self) -> str | None:
        """The commit to read from: the local branch, else the remote-tracking one."""
        return self.objects.commit_of(self._ref) or self.objects.commit_of(self._tracking)

    def read(self, path: str, *, at: str | None = None) -> bytes | None:
        """The file at `path` on the branch tip (or at commit `at`), None when absent."""
        found = self._at(path, at) or self._archived_at(path, at)
        return found[2] if found and found[1] == "blob" else None

    def list_dir(self, path: str, *, at: str | None = None) -> list[str]:
        """Names of the entries of folder `path` at the branch tip ([] when absent)."""
        found = self._at(path, at) or self._archived_at(path, at)
        if not found or found[1] != "tree":
            return []
        return [text(name) for name, _ in Tree(found[2], self._hashlen).names()]

    def runs(self, pipeline: str | None = None, limit: int = 20) -> list[RunManifest]:
        """The newest `limit` runs, of one pipeline or of all, newest first.

        Reads the run folders' listings and only the manifests returned, asking for
        objects by id: a `<commit>:<path>` lookup makes git re-read a 10,000-entry folder.
        """
        tip = self.tip()
        if tip is None or limit <= 0:
            return []
        pipelines = [pipeline] if pipeline is not None else self.list_dir(layout.RUNS)
        cat = self.objects.cat
        found: list[tuple[bytes, str]] = []
        short = []  # pipelines with fewer than `limit` runs at the tip: the archive may add
        folders = cat([f"{tip}:{layout.pipeline_runs(clean(p))}" for p in pipelines])
        for name, folder in zip(pipelines, folders, strict=True):
            entries = (
                Tree(folder[2], self._hashlen).newest(limit)
                if folder and folder[1] == "tree"
                else []
            )
            found += entries
            short += [name] * (len(entries) < limit)
        newest = heapq.nlargest(limit, found)  # run ids sort by their start time
        at_tip = self._tip_runs(newest)
        older = [
            (run_id, holder, name)
            for name in short
            for run_id, holder in results_archive.newest(self, name, limit)
        ]
        if not older:
            return at_tip
        ids = heapq.nlargest(limit, [m.run_id for m in at_tip] + [r for r, _, _ in older])
        wanted = set(ids)
        archived = [
            self._with_steps(m, None)
            for run_id, holder, name in older
            if run_id in wanted
            and (m := _manifest(self._at(layout.manifest(name, run_id), holder))) is not None
        ]
        return sorted([*at_tip, *archived], key=lambda m: m.run_id, reverse=True)[:limit]

    def _tip_runs(self, newest: list[tuple[bytes, str]]) -> list[RunManifest]:
        """The manifests of run folders (name, tree id), with their step records."""
        cat = self.objects.cat
        folders = [f for f in cat([sha for _, sha in newest]) if f and f[1] == "tree"]
        trees = [Tree(f[2], self._hashlen) for f in folders]
        files = [(tree, tree.get(layout.MANIFEST.encode())) for tree in trees]
        with_file = [(tree, file[1]) for tree, file in files if file and file[0] == BLOB]
        self._prefetch([blob for _, blob in with_file])
        blobs = cat([blob for _, blob in with_file])
        runs = []
        for (tree, _), blob in zip(with_file, blobs, strict=True):
            manifest = _manifest(blob)
            if manifest is not None:
                steps = tree.get(layout.STEP_RECORDS.encode())
                runs.append(self._with_steps(manifest, steps[1] if steps else None))
        return runs

    def manifest(self, run_id: str) -> RunManifest | None:
        """The manifest of run `run_id`, whichever pipeline it belongs to (in jobs mode, with
        the records its step jobs wrote laid over it)."""
        found, at = self._in_run(run_id, layout.manifest), None
        if found is None and (where := results_archive.find(self, run_id)) is not None:
            found, at = self._at(layout.manifest(where[0], run_id), where[1]), where[1]
        manifest = _manifest(found)
        if manifest is None:
            return None
        folder = self._at(layout.step_records(manifest.pipeline, manifest.run_id), at)
        return self._with_steps(manifest, folder[0] if folder and folder[1] == "tree" else None)

    def _with_steps(self, manifest: RunManifest, tree: str | None) -> RunManifest:
        """`manifest` with the step records of folder object `tree` (None: none) over it."""
        if tree is None:
            return manifest
        found = self.objects.cat([tree])[0]
        if not found or found[1] != "tree":
            return manifest
        entries = Tree(found[2], self._hashlen).entries()
        self._prefetch([sha for _, sha in entries])
        blobs = self.objects.cat([sha for _, sha in entries])
        records = {
            text(name): blob[2]
            for (name, _), blob in zip(entries, blobs, strict=True)
            if blob and blob[1] == "blob"
        }
        return with_step_records(manifest, records)

    def log(self, run_id: str, step: str, attempt: int) -> bytes | None:
        """The log of one attempt of a step, None when it was not recorded."""
        name = layout.log_name(step, attempt)
        found = self._in_run(run_id, lambda p, r: layout.log(p, r, name))
        if found is None and (where := results_archive.find(self, run_id)) is not None:
            found = self._at(layout.log(where[0], run_id, name), where[1])
        return found[2] if found and found[1] == "blob" else None

    def fetch(self) -> None:
        """Fetch the remote's branch; fast-forward the local branch onto it when possible."""
        if not self._remote_exists():
            return
        remote, local = self._fetch_remote(), self.objects.commit_of(self._ref)
        behind = local is None or (remote and self._merge_base(local, remote) == local)
        if remote and remote != local and behind:
            self._cas(remote, local, "sluice: fast-forward to the remote")

    def catch_up(self) -> None:
        """Fetch first when results are pushed, to decide on the newest record; offline,
        go on with the local branch (claims still catch a stale view)."""
        if self.pushes:
            with contextlib.suppress(EngineUnavailable):
                self.fetch()

    def close(self) -> None:
        """End the long-lived git process."""
        self.objects.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- committing ----------------------------------------------------------------------

    def _commit_locally(
        self, blobs: TreeChanges, message: str, absent: Sequence[str]
    ) -> tuple[str, str | None]:
        """Commit onto the local tip (or the remote-tracking one); returns (commit, parent)."""
        for _ in range(_LOCAL_ATTEMPTS):
            local = self.objects.commit_of(self._ref)
            base = local or self.objects.commit_of(self._tracking)
            self._check_absent(base, absent)
            commit = self.objects.commit_onto(base, blobs, message)
            if self._cas(commit, local, message):
                return commit, base
        raise EngineUnavailable(f"{self._ref} kept moving: gave up after {_LOCAL_ATTEMPTS} tries")

    # -- git ------------------------------------------------------------------------------

    def _at(self, path: str, at: str | None) -> Obj | None:
        tip = at or self.tip()
        if not tip:
            return None
        found = self.objects.cat([f"{tip}:{clean(path)}"])[0]
        if found is None and at is not None and self._fetch_commit(at):
            found = self.objects.cat([f"{tip}:{clean(path)}"])[0]
        return found

    def _archived_at(self, path: str, at: str | None) -> Obj | None:
        """A path inside the folder of a run no longer at the tip, read at the commit the
        archive names (None for any other path, or a run the archive does not know)."""
        inside = results_archive.split_run_path(path) if at is None else None
        if inside is None or self._at(layout.run(inside[0], inside[1]), None) is not None:
            return None
        where = results_archive.find(self, inside[1])
        return self._at(path, where[1]) if where and where[0] == inside[0] else None

    def _in_run(self, run_id: str, path: Callable[[str, str], str]) -> Obj | None:
        """`path(pipeline, run_id)`, looked for in every pipeline folder at once."""
        tip = self.tip()
        if tip is None or "/" in run_id:
            return None
        pipelines = self.list_dir(layout.RUNS)
        found = self.objects.cat([f"{tip}:{path(p, run_id)}" for p in pipelines])
        return next((f for f in found if f is not None), None)


def _manifest(found: Obj | None) -> RunManifest | None:
    if not found or found[1] != "blob":
        return None
    try:
        return RunManifest.from_json(found[2])
    except ValidationError:
        return None  # a damaged manifest hides one run, not the whole listing


def store_for(
    repo: Path, config: RepoConfig, push: bool | str | None = None
) -> ResultsStore | None:
    """The repository's results branch as `sluice.yaml` sets it; None outside a git repository."""
    if not (repo / ".git").exists():
        return None
    settings = config.results
    mode: bool | str = settings.push if push is None else push
    return ResultsStore(
        repo, branch=settings.branch, remote=settings.remote, push=mode,
        keep_runs=settings.keep_runs, archive_batch=settings.archive_batch,
        partial=os.environ.get("GITHUB_ACTIONS") == "true",
    )  # fmt: skip
