"""The results branch's traffic with its remote: push with retry and re-application, fetch
(shallow, partial, deepened past a graft), one commit or a batch of blobs on demand.

ResultsStore (git_results.py) is a BranchSync: this base holds what talks to the remote and
moves refs; the store reads, lists and commits.
"""

from __future__ import annotations

import contextlib
import random
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from engine.adapters.git_objects import ObjectDB, TreeChanges, clean, text
from engine.core import layout
from engine.errors import ClaimLost, EngineUnavailable
from engine.local import gitcli

# Git's words for a refusal that means "another runner moved the branch first".
_RACE = ("non-fast-forward", "fetch first", "stale info", "cannot lock", "failed to update ref")
_BACKOFF_S, _BACKOFF_CAP_S = 0.1, 5.0
_UNDONE = (layout.CRON_CLAIMS + "/", layout.DRIFT + "/")  # claims of work still to do
SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
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


class BranchSync:
    """Pushing, fetching and moving the branch's refs; ResultsStore sets these fields."""

    repo: Path
    branch: str
    remote: str
    objects: ObjectDB
    _ref: str
    _tracking: str
    _env: dict[str, str]
    _hashlen: int
    _push_attempts: int
    _shallow: Path
    _asked: set[str]
    _partial_first: bool
    _partial: bool | None
    _has_remote: bool | None

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

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        done = gitcli.run(self.repo, *args, env=self._env)
        if check and done.returncode:
            raise EngineUnavailable(
                f"git {args[0]} failed in {self.repo}: {gitcli.last_error(done)}"
            )
        return done

    def _fetch_commit(self, commit: str) -> bool:
        """Fetch one commit the object store lacks (a shallow clone reading an archived run):
        `git fetch --depth=1 <remote> <id>`; False when it was there, or cannot be had."""
        if commit in self._asked or not SHA.match(commit) or not self._remote_exists():
            return False
        self._asked.add(commit)
        if self.objects.cat([commit])[0] is not None:
            return False
        done = self._git(
            "fetch", "--quiet", "--depth=1", "--no-tags", "--no-write-fetch-head",
            "--no-recurse-submodules", "--no-auto-gc", self.remote, commit, check=False,
        )  # fmt: skip
        return done.returncode == 0

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
        if len(blobs) > 1 and self.partial() and all(SHA.match(b) for b in blobs):
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
