"""Results branch: commit runs to `sluice-results` without a checkout, push with retry."""

from __future__ import annotations

import contextlib
import heapq
import os
import random
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from pydantic import ValidationError

from engine.adapters import results_archive
from engine.adapters.git_objects import BLOB, Obj, ObjectDB, Tree, TreeChanges, clean, parts, text
from engine.core import layout
from engine.core.manifest import RunManifest, with_step_records
from engine.errors import ClaimLost, EngineUnavailable, UsageError
from engine.local import gitcli

if TYPE_CHECKING:  # for annotations only: recording and listing never load these modules
    from engine.core.config import RepoConfig
    from engine.ports import Changes

# Git's words for a refusal that means "another runner moved the branch first".
_RACE = ("non-fast-forward", "fetch first", "stale info", "cannot lock", "failed to update ref")
_BACKOFF_S, _BACKOFF_CAP_S = 0.1, 5.0
_LOCAL_ATTEMPTS = 100
_UNDONE = (layout.CRON_CLAIMS + "/", layout.DRIFT + "/")  # claims of work still to do
_EMPTY: Mapping[str, bytes] = MappingProxyType({})
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_DEEPEN = (100, 1000, 10_000, 100_000)  # commits a shallow history is deepened by, in turn


class ResultsNotPushed(EngineUnavailable):
    """The results are committed on the local branch, but the remote refused them."""

    def __init__(
        self, branch: str, remote: str, commit: str, reason: str, *, kept: bool = True
    ) -> None:
        if kept:
            super().__init__(
                f"could not push results to {remote}: git said: {reason}; "
                f"they are committed locally on branch {branch} at {commit[:12]}",
                hint=f"the next run here pushes them, or `git push {remote} {branch}`",
            )
        else:  # a claim only counts once pushed: it was taken back
            super().__init__(f"could not push a claim to {remote}: git said: {reason}")
        self.branch, self.remote, self.commit = branch, remote, commit


class ResultsStore:
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

    def _push(
        self,
        commit: str,
        parent: str | None,
        blobs: TreeChanges,
        message: str,
        absent: Sequence[str],
    ) -> str:
        """Push without force; when another runner got there first, re-apply and retry.

        What is re-applied is a set of path changes (`commit` is always `parent` plus
        `pending`) onto the remote's new tip: ours, or, when the local branch also held
        unpushed commits, everything since the common base. The local branch moves only
        after the last push, so a round (fetch, re-apply, push) stays short.
        """
        local, first_parent, pending, reason = commit, parent, blobs, ""
        for attempt in range(self._push_attempts):
            started = time.monotonic()
            # --no-verify: the user's pre-push hooks guard their code, not machine results.
            refspec = f"{commit}:{self._ref}"
            pushed = self._git(
                "push", "--porcelain", "--no-verify", self.remote, refspec, check=False
            )
            if pushed.returncode == 0:
                break
            reason = _push_reason(pushed)
            if attempt + 1 == self._push_attempts:
                kept = self._unpushed(commit, local, first_parent, message, absent)
                raise ResultsNotPushed(self.branch, self.remote, commit, reason, kept=kept)
            # Jittered exponential backoff, scaled by how slow a round is here and now.
            scale = max(_BACKOFF_S, 4 * (time.monotonic() - started))
            time.sleep(random.uniform(0, min(_BACKOFF_CAP_S, scale * 2**attempt)))
            try:
                remote = self._fetch_remote()
            except EngineUnavailable:
                remote = None  # unreachable: the push's own reason says why
            base = self._merge_base(commit, remote) if remote else None
            if base == commit:  # another local writer's push already carried ours
                break
            if remote is None or (base == remote and not any(r in reason for r in _RACE)):
                # refused, and not for a race: no retry
                kept = self._unpushed(commit, local, first_parent, message, absent)
                raise ResultsNotPushed(self.branch, self.remote, commit, reason, kept=kept)
            if base != parent:
                pending = self._carried(base, commit, remote, ours=blobs)
            try:
                self._check_absent(remote, absent)
            except ClaimLost:
                self._cas(self._without_claim(first_parent, remote), local, "sluice: claim lost")
                raise
            commit, parent = self.objects.commit_onto(remote, pending, message), remote
        if commit != local:
            self._cas(commit, local, message)  # best effort: a later local commit carries ours
        return commit

    def _unpushed(
        self, commit: str, local: str, before: str | None, message: str, absent: Sequence[str]
    ) -> bool:
        """The local branch after a push that failed: our commit stays, to go out with the
        next one (True), except a claim of work not yet done (a cron slot, a drift firing),
        which counts only once pushed: taken back (False), so that the slot is still due
        here next time. A production change happened: it stays, like a run's record."""
        if not any(clean(p).startswith(_UNDONE) for p in absent):
            self._cas(commit, local, message)
            return True
        if before is None:
            self._git("update-ref", "-d", self._ref, local, check=False)
        else:
            self._cas(before, local, "sluice: claim not pushed")
        return False

    def _without_claim(self, before: str | None, remote: str) -> str:
        """The remote tip plus whatever the local branch held unpushed before the claim."""
        base = self._merge_base(before, remote) if before else None
        if before is None or base == before:
            return remote
        return self.objects.commit_onto(remote, self._diff(base, before), "sluice: keep unpushed")

    def _cas(self, new: str, old: str | None, message: str) -> bool:
        """Move the local branch from `old` to `new`; False when someone moved it first."""
        why, expected = (message.splitlines() or ["sluice"])[0], old or "0" * 2 * self._hashlen
        done = self._git("update-ref", "-m", why, self._ref, new, expected, check=False)
        # "cannot lock ref": the ref is no longer at `old`, or another writer holds it now.
        if done.returncode and b"cannot lock ref" not in done.stderr:
            raise EngineUnavailable(f"cannot update {self._ref}: {gitcli.last_error(done)}")
        return done.returncode == 0

    def _check_absent(self, commit: str | None, paths: Sequence[str]) -> None:
        found = self.objects.cat([f"{commit}:{p}" for p in paths]) if commit else []
        for path, there in zip(paths, found, strict=False):
            if there is not None:
                raise ClaimLost(path, self.branch)

    # -- git ------------------------------------------------------------------------------

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        done = gitcli.run(self.repo, *args, env=self._env)
        if check and done.returncode:
            raise EngineUnavailable(
                f"git {args[0]} failed in {self.repo}: {gitcli.last_error(done)}"
            )
        return done

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

    def _fetch_commit(self, commit: str) -> bool:
        """Fetch one commit the object store lacks (a shallow clone reading an archived run):
        `git fetch --depth=1 <remote> <id>`; False when it was there, or cannot be had."""
        if commit in self._asked or not _SHA.match(commit) or not self._remote_exists():
            return False
        self._asked.add(commit)
        if self.objects.cat([commit])[0] is not None:
            return False
        done = self._git(
            "fetch", "--quiet", "--depth=1", "--no-tags", "--no-write-fetch-head",
            "--no-recurse-submodules", "--no-auto-gc", self.remote, commit, check=False,
        )  # fmt: skip
        return done.returncode == 0

    def _in_run(self, run_id: str, path: Callable[[str, str], str]) -> Obj | None:
        """`path(pipeline, run_id)`, looked for in every pipeline folder at once."""
        tip = self.tip()
        if tip is None or "/" in run_id:
            return None
        pipelines = self.list_dir(layout.RUNS)
        found = self.objects.cat([f"{tip}:{path(p, run_id)}" for p in pipelines])
        return next((f for f in found if f is not None), None)

    def _remote_exists(self) -> bool:
        if self._has_remote is None:
            found = self._git("remote", "get-url", self.remote, check=False)
            self._has_remote = found.returncode == 0
        return self._has_remote

    def _fetch_remote(self, *extra: str) -> str | None:
        """Fetch the branch into its remote-tracking ref; its tip, None if the remote lacks it.

        The first fetch (no local or remote-tracking branch yet) takes the tip only
        (`--depth=1`): readers need the tip, and archived runs come one commit at a time.
        Later fetches take the commits since what is here, as any fetch does.
        """
        first = self.objects.commit_of(self._ref) is None
        if first and self.objects.commit_of(self._tracking) is None and not extra:
            extra = ("--depth=1",)
            if self._partial_first or self.partial():
                # Trees only: blobs come when read, a batch at a time (_prefetch). Git then
                # records the remote as a promisor in .git/config: asked for only under
                # GitHub Actions (a throwaway clone) or in a clone that is partial already.
                extra += ("--filter=blob:none",)
                self._partial = True
        done = self._git(
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules",
            *extra, self.remote, f"+{self._ref}:{self._tracking}", check=False,
        )  # fmt: skip
        if done.returncode == 0:
            if "--filter=blob:none" in extra:
                self.objects.close()  # a new cat-file reads the promisor from .git/config
            return self.objects.commit_of(self._tracking)
        if b"couldn't find remote ref" in done.stderr:
            return None
        reason = gitcli.whole_error(done)
        raise EngineUnavailable(f"cannot fetch {self.branch} from {self.remote}: {reason}")

    def _merge_base(self, a: str, b: str) -> str | None:
        """The common base of two commits. In a shallow clone, "none" may only mean that
        history stops at a graft: the remote branch's history is deepened, in growing
        steps, until a base shows or deepening adds nothing (unrelated after all)."""
        for deepen in (0, *_DEEPEN):
            if deepen:
                roots = self._shallow_roots()
                with contextlib.suppress(EngineUnavailable):
                    self._fetch_remote(f"--deepen={deepen}")
                if self._shallow_roots() == roots:
                    return None
            done = self._git("merge-base", a, b, check=False)
            if done.returncode > 1:
                raise EngineUnavailable(f"git merge-base failed: {gitcli.last_error(done)}")
            base = done.stdout.decode().strip() or None
            if base is not None or not self._shallow_roots() or not self._remote_exists():
                return base
        return None

    def partial(self) -> bool:
        """Whether this clone fetches from the remote without file contents (a promisor)."""
        if self._partial is None:
            done = self._git("config", "--bool", f"remote.{self.remote}.promisor", check=False)
            self._partial = done.stdout.strip() == b"true"
        return self._partial

    def _prefetch(self, blobs: Sequence[str]) -> None:
        """In a partial clone, fetch the blobs about to be read in one request (git would
        fetch each alone when read); blobs already here cost no transfer."""
        if len(blobs) > 1 and self.partial() and all(_SHA.match(b) for b in blobs):
            self._git(
                "-c", "fetch.negotiationAlgorithm=noop", "fetch", "--quiet", "--no-tags",
                "--no-write-fetch-head", "--no-recurse-submodules", "--no-auto-gc",
                "--filter=blob:none",
                self.remote, *blobs, check=False,
            )  # fmt: skip

    def _shallow_roots(self) -> bytes:
        """The commits where this clone's history stops (`.git/shallow`); empty when whole."""
        try:
            return self._shallow.read_bytes()
        except OSError:
            return b""

    def _diff(
        self, old: str | None, new: str, added: set[tuple[bytes, ...]] | None = None
    ) -> dict[tuple[bytes, ...], str | None]:
        """The file changes from commit `old` (None: from nothing) to commit `new`;
        `added` collects the paths that `new` creates."""
        old = old or self.objects.empty_tree()
        fields = self._git("diff-tree", "-r", "-z", "--no-renames", old, new).stdout.split(b"\0")
        changes: dict[tuple[bytes, ...], str | None] = {}
        for meta, path in zip(fields[0:-1:2], fields[1::2], strict=False):
            _, _, _, blob, status = meta.split(b" ")
            names = tuple(path.split(b"/"))
            changes[names] = None if status == b"D" else blob.decode()
            if added is not None and status == b"A":
                added.add(names)
        return changes

    def _carried(
        self, base: str | None, commit: str, remote: str, *, ours: TreeChanges
    ) -> dict[tuple[bytes, ...], str | None]:
        """What to re-apply onto `remote`: everything since `base`, ours and what other
        writers of this clone left unpushed, except files they created that the remote
        now has. Such a file is a claim another runner won (the writer that made it got
        ClaimLost): carrying it along would overwrite the winner's."""
        added: set[tuple[bytes, ...]] = set()
        pending = self._diff(base, commit, added)
        carried = sorted(p for p in added if p not in ours)
        found = self.objects.cat([f"{remote}:{'/'.join(map(text, p))}" for p in carried])
        for names, there in zip(carried, found, strict=True):
            if there is not None:
                del pending[names]
        return pending


def _push_reason(done: subprocess.CompletedProcess[bytes]) -> str:
    """Git's reason for a refused ref (`[rejected] (fetch first)`, with what the remote
    said), else its whole error."""
    for line in done.stdout.decode(errors="replace").splitlines():
        if line.startswith("!\t"):
            stderr = done.stderr.decode(errors="replace").splitlines()
            said = [r[8:].strip() for r in stderr if r.startswith("remote: ") and r[8:].strip()]
            return "; ".join([line.split("\t")[-1], *said])
    return gitcli.whole_error(done)


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
