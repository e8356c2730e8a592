"""Results branch: commit runs to `sluice-results` without a checkout, push with retry."""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import heapq
import os
import random
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from pydantic import ValidationError

from engine.core.manifest import RunManifest
from engine.errors import EngineUnavailable, SluiceError, UsageError

if TYPE_CHECKING:
    from engine.core.config import RepoConfig

IDENTITY = "sluice", "sluice@localhost"  # who commits results, even where git knows no user
TREE, BLOB = b"40000", b"100644"
# Git's words for a refusal that means "another runner moved the branch first".
_RACE = ("non-fast-forward", "fetch first", "stale info", "cannot lock", "failed to update ref")
_BACKOFF_S, _BACKOFF_CAP_S = 0.1, 5.0
_LOCAL_ATTEMPTS = 100
# Bigger trees are stored uncompressed (as with core.looseCompression=0): deflating the
# 500 kB tree of a 10,000-run folder costs more than the rest of a commit, and `git gc`
# repacks loose objects as deltas anyway.
_BIG_TREE = 1 << 16
_REPO_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_PREFIX")
_EMPTY: Mapping[str, bytes] = MappingProxyType({})

Changes = Mapping[tuple[bytes, ...], str | None]  # path parts -> blob id; None deletes
_Obj = tuple[str, str, bytes]  # id, type, content


class ClaimLost(SluiceError):
    """A path the commit needed to be absent is already on the results branch."""

    def __init__(self, path: str, branch: str) -> None:
        super().__init__(f"{path} already exists on {branch}: another runner claimed it first")
        self.path = path


class ResultsNotPushed(EngineUnavailable):
    """The results are committed on the local branch, but the remote refused them."""

    def __init__(self, branch: str, remote: str, commit: str, reason: str) -> None:
        super().__init__(
            f"could not push results to {remote} ({reason}); "
            f"they are committed locally on branch {branch} at {commit[:12]}",
            hint=f"push them later with `git push {remote} {branch}`",
        )
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
    ) -> None:
        if push not in (True, False, "auto", "always", "never"):
            raise UsageError(f"results push must be auto, always or never, not {push!r}")
        self.repo, self.branch, self.remote = Path(repo), branch, remote
        self._ref, self._tracking = f"refs/heads/{branch}", f"refs/remotes/{remote}/{branch}"
        self._push_mode, self._push_attempts = push, max(1, push_attempts)
        env = {k: v for k, v in os.environ.items() if k not in _REPO_VARS}
        for role in ("AUTHOR", "COMMITTER"):  # for reflog entries
            env[f"GIT_{role}_NAME"], env[f"GIT_{role}_EMAIL"] = IDENTITY
        self._env = env | {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}  # never wait for a password
        where = self._git(
            "rev-parse", "--git-path", "objects", "--git-path", "HEAD", "--show-object-format"
        )
        objects, head, self._algo = where.stdout.decode().splitlines()
        self._objects, self._head = self.repo / objects, self.repo / head
        self._hashlen = hashlib.new(self._algo).digest_size
        self._lock = threading.Lock()  # one cat-file process, shared by threads
        self._catfile: subprocess.Popen[bytes] | None = None
        self._has_remote: bool | None = None
        self._recent: dict[str, bytes] = {}  # big trees written here: the next commit's parents

    @property
    def pushes(self) -> bool:
        """Whether commits are pushed: `auto` pushes when the remote exists."""
        if self._push_mode in (True, "always"):
            return True
        return self._push_mode == "auto" and self._remote_exists()

    def commit(
        self,
        changes: Mapping[str, bytes | None],
        message: str,
        *,
        expect_absent: Sequence[str] = (),
    ) -> str:
        """Commit `path -> content` changes (None deletes); returns the commit id.

        Raises ClaimLost when a path of `expect_absent` exists at the tip, here or on the
        remote, and ResultsNotPushed when the remote will not take the commit.
        """
        with contextlib.suppress(OSError):
            if self._head.read_text().strip() == f"ref: {self._ref}":
                # Moving a checked-out branch under the user would garble their working tree.
                raise UsageError(f"{self.branch} is checked out in {self.repo}: switch away first")
        blobs = {_parts(p): b if b is None else self._write(b"blob", b) for p, b in changes.items()}
        absent = [_clean(p) for p in expect_absent]
        pushing = self.pushes
        if pushing and self._commit_of(self._ref) is None:
            with contextlib.suppress(EngineUnavailable):  # offline: commit, then fail to push
                self.fetch()
        commit, parent = self._commit_locally(blobs, message, absent)
        return self._push(commit, parent, blobs, message, absent) if pushing else commit

    def record_run(
        self,
        manifest: RunManifest,
        logs: Mapping[str, bytes] = _EMPTY,
        extra: Mapping[str, bytes | None] = _EMPTY,
    ) -> str:
        """Commit a run's manifest, its logs (`train.1.log`) and any `extra` paths."""
        base = f"runs/{manifest.pipeline}/{manifest.run_id}"
        if any("/" in name for name in logs):
            raise UsageError(f"log names must not contain '/': {sorted(logs)}")
        changes: dict[str, bytes | None] = {f"{base}/logs/{n}": t for n, t in logs.items()}
        changes[f"{base}/manifest.json"] = manifest.to_json().encode() + b"\n"
        changes.update(extra)
        message = f"sluice: {manifest.pipeline} {manifest.run_id} {manifest.status}"
        return self.commit(changes, message)

    def read(self, path: str) -> bytes | None:
        """The file at `path` on the branch tip, None when absent."""
        found = self._at(path)
        return found[2] if found and found[1] == "blob" else None

    def list_dir(self, path: str) -> list[str]:
        """Names of the entries of folder `path` at the branch tip ([] when absent)."""
        found = self._at(path)
        if not found or found[1] != "tree":
            return []
        return [_str(name) for name, _ in _Tree(found[2], self._hashlen).names()]

    def runs(self, pipeline: str | None = None, limit: int = 20) -> list[RunManifest]:
        """The newest `limit` runs, of one pipeline or of all, newest first.

        Reads the run folders' listings and only the manifests returned, asking for
        objects by id: a `<commit>:<path>` lookup makes git re-read a 10,000-entry folder.
        """
        tip = self._tip()
        if tip is None or limit <= 0:
            return []
        pipelines = [pipeline] if pipeline is not None else self.list_dir("runs")
        found = [
            entry
            for folder in self._cat([f"{tip}:runs/{_clean(p)}" for p in pipelines])
            if folder and folder[1] == "tree"
            for entry in _Tree(folder[2], self._hashlen).newest(limit)
        ]
        newest = heapq.nlargest(limit, found)  # run ids sort by their start time
        folders = [f for f in self._cat([sha for _, sha in newest]) if f and f[1] == "tree"]
        files = [_Tree(f[2], self._hashlen).get(b"manifest.json") for f in folders]
        blobs = self._cat([file[1] for file in files if file and file[0] == BLOB])
        return [m for m in map(_manifest, blobs) if m is not None]

    def manifest(self, run_id: str) -> RunManifest | None:
        """The manifest of run `run_id`, whichever pipeline it belongs to."""
        return _manifest(self._in_run(run_id, "manifest.json"))

    def log(self, run_id: str, step: str, attempt: int) -> bytes | None:
        """The log of one attempt of a step, None when it was not recorded."""
        found = self._in_run(run_id, f"logs/{step}.{attempt}.log")
        return found[2] if found and found[1] == "blob" else None

    def fetch(self) -> None:
        """Fetch the remote's branch; fast-forward the local branch onto it when possible."""
        if not self._remote_exists():
            return
        remote, local = self._fetch_remote(), self._commit_of(self._ref)
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
        with self._lock:
            proc, self._catfile = self._catfile, None
        if proc is not None:
            try:
                proc.communicate(timeout=5)  # closing its input ends cat-file
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- committing ----------------------------------------------------------------------

    def _commit_locally(
        self, blobs: Changes, message: str, absent: Sequence[str]
    ) -> tuple[str, str | None]:
        """Commit onto the local tip (or the remote-tracking one); returns (commit, parent)."""
        for _ in range(_LOCAL_ATTEMPTS):
            local = self._commit_of(self._ref)
            base = local or self._commit_of(self._tracking)
            self._check_absent(base, absent)
            commit = self._commit_onto(base, blobs, message)
            if self._cas(commit, local, message):
                return commit, base
        raise EngineUnavailable(f"{self._ref} kept moving: gave up after {_LOCAL_ATTEMPTS} tries")

    def _push(
        self, commit: str, parent: str | None, blobs: Changes, message: str, absent: Sequence[str]
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
                self._cas(commit, local, message)
                raise ResultsNotPushed(self.branch, self.remote, commit, reason)
            # Jittered exponential backoff, scaled by how slow a round is here and now.
            scale = max(_BACKOFF_S, 4 * (time.monotonic() - started))
            time.sleep(random.uniform(0, min(_BACKOFF_CAP_S, scale * 2**attempt)))
            try:
                remote = self._fetch_remote()
            except EngineUnavailable as exc:
                remote, reason = None, exc.message
            base = self._merge_base(commit, remote) if remote else None
            if base == commit:  # another local writer's push already carried ours
                break
            if remote is None or (base == remote and not any(r in reason for r in _RACE)):
                self._cas(commit, local, message)  # refused, and not for a race: no retry
                raise ResultsNotPushed(self.branch, self.remote, commit, reason)
            if base != parent:
                pending = self._carried(base, commit, remote, ours=blobs)
            try:
                self._check_absent(remote, absent)
            except ClaimLost:
                self._cas(self._without_claim(first_parent, remote), local, "sluice: claim lost")
                raise
            commit, parent = self._commit_onto(remote, pending, message), remote
        if commit != local:
            self._cas(commit, local, message)  # best effort: a later local commit carries ours
        return commit

    def _without_claim(self, before: str | None, remote: str) -> str:
        """The remote tip plus whatever the local branch held unpushed before the claim."""
        base = self._merge_base(before, remote) if before else None
        if before is None or base == before:
            return remote
        return self._commit_onto(remote, self._diff(base, before), "sluice: keep unpushed")

    def _commit_onto(self, parent: str | None, changes: Changes, message: str) -> str:
        tree = self._apply(self._tree_of(parent) if parent else None, changes)
        stamp = "{} <{}> {} +0000".format(*IDENTITY, int(time.time()))
        lines = [f"tree {tree or self._write(b'tree', b'')}"] + [f"parent {parent}"] * bool(parent)
        lines += [f"author {stamp}", f"committer {stamp}", "", message.rstrip("\n"), ""]
        return self._write(b"commit", "\n".join(lines).encode())

    def _apply(self, tree: str | None, changes: Changes) -> str | None:
        """The tree id after `changes`; None when it ends up empty.

        Only the trees on changed paths are read and rewritten, each by splicing entries
        into its raw bytes, so a 10,000-run folder costs a memcpy, not 10,000 entries.
        """
        node = _Tree(self._read(tree) if tree else b"", self._hashlen)
        edits: dict[bytes, tuple[bytes, str] | None] = {}
        nested: dict[bytes, dict[tuple[bytes, ...], str | None]] = {}
        for parts, blob in changes.items():
            if len(parts) == 1:
                edits[parts[0]] = None if blob is None else (BLOB, blob)
            else:
                nested.setdefault(parts[0], {})[parts[1:]] = blob
        for name, inner in nested.items():
            if name in edits:
                raise UsageError(f"{_str(name)} is both a file and a folder in one commit")
            mode, sha = node.get(name) or (b"", None)
            child = sha if mode == TREE else None
            new = self._apply(child, inner)
            if new != child:
                edits[name] = None if new is None else (TREE, new)
        if not edits:
            return tree
        raw = node.edited(edits)
        return self._write(b"tree", raw) if raw else None

    def _write(self, kind: bytes, body: bytes) -> str:
        """Store a loose object as git does (temporary file, then rename); returns its id."""
        data = b"%s %d\0%s" % (kind, len(body), body)
        sha = hashlib.new(self._algo, data).hexdigest()
        path = self._objects / sha[:2] / sha[2:]
        big = kind == b"tree" and len(body) > _BIG_TREE
        if big:
            with self._lock:
                self._recent = {**dict(list(self._recent.items())[-3:]), sha: body}
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="tmp_obj_")
            with os.fdopen(fd, "wb") as out:
                out.write(_stored(data) if big else zlib.compress(data, 1))
            os.chmod(tmp, 0o444)
            os.replace(tmp, path)
        return sha

    def _cas(self, new: str, old: str | None, message: str) -> bool:
        """Move the local branch from `old` to `new`; False when someone moved it first."""
        why, expected = (message.splitlines() or ["sluice"])[0], old or "0" * 2 * self._hashlen
        done = self._git("update-ref", "-m", why, self._ref, new, expected, check=False)
        # "cannot lock ref": the ref is no longer at `old`, or another writer holds it now.
        if done.returncode and b"cannot lock ref" not in done.stderr:
            raise EngineUnavailable(f"cannot update {self._ref}: {_text(done)}")
        return done.returncode == 0

    def _check_absent(self, commit: str | None, paths: Sequence[str]) -> None:
        found = self._cat([f"{commit}:{p}" for p in paths]) if commit else []
        for path, there in zip(paths, found, strict=False):
            if there is not None:
                raise ClaimLost(path, self.branch)

    # -- git ------------------------------------------------------------------------------

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        try:
            done = subprocess.run(["git", *args], cwd=self.repo, env=self._env, capture_output=True)
        except OSError as exc:
            raise EngineUnavailable(f"cannot run git: {exc}") from exc
        if check and done.returncode:
            raise EngineUnavailable(f"git {args[0]} failed in {self.repo}: {_text(done)}")
        return done

    def _cat(self, names: Sequence[str]) -> list[_Obj | None]:
        """(id, type, content) of each object name (`<commit>:<path>` too), None if missing."""
        found: list[_Obj | None] = []
        with self._lock:
            if self._catfile is None or self._catfile.poll() is not None:
                self._catfile = subprocess.Popen(
                    ["git", "cat-file", "--batch"], cwd=self.repo, env=self._env,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            proc = self._catfile
            assert proc.stdin is not None and proc.stdout is not None
            try:
                # Small batches, so that neither side's pipe can fill up and block the other.
                for start in range(0, len(names), 64):
                    # A newline would split a request in two: ask for a name that cannot exist.
                    chunk = [n if "\n" not in n else ":" for n in names[start : start + 64]]
                    proc.stdin.write("".join(f"{n}\n" for n in chunk).encode())
                    proc.stdin.flush()
                    for _ in chunk:
                        head = proc.stdout.readline().rsplit(b" ", 2)
                        if head == [b""]:
                            raise OSError("git cat-file exited")
                        if not head[-1].strip().isdigit():  # `<name> missing`
                            found.append(None)
                            continue
                        sha, kind, size = (part.decode() for part in head)
                        found.append((sha, kind, proc.stdout.read(int(size) + 1)[: int(size)]))
            except (OSError, ValueError) as exc:
                self._catfile = None
                proc.kill()
                proc.wait()
                raise EngineUnavailable(f"git cat-file failed in {self.repo}: {exc}") from exc
        return found

    def _commit_of(self, ref: str) -> str | None:
        found = self._cat([ref])[0]
        return found[0] if found and found[1] == "commit" else None

    def _tip(self) -> str | None:
        """The commit to read from: the local branch, else the remote-tracking one."""
        return self._commit_of(self._ref) or self._commit_of(self._tracking)

    def _at(self, path: str) -> _Obj | None:
        tip = self._tip()
        return self._cat([f"{tip}:{_clean(path)}"])[0] if tip else None

    def _tree_of(self, commit: str) -> str:
        return self._read(commit, "commit")[5 : 5 + 2 * self._hashlen].decode()  # tree <id>

    def _read(self, sha: str, kind: str = "tree") -> bytes:
        if kind == "tree" and (recent := self._recent.get(sha)) is not None:
            return recent
        found = self._cat([sha])[0]
        if not found or found[1] != kind:
            raise EngineUnavailable(f"{kind} {sha} is missing from {self.repo}")
        return found[2]

    def _in_run(self, run_id: str, rest: str) -> _Obj | None:
        """`runs/<pipeline>/<run_id>/<rest>`, looked for in every pipeline folder at once."""
        tip = self._tip()
        if tip is None or "/" in run_id:
            return None
        found = self._cat([f"{tip}:runs/{p}/{run_id}/{rest}" for p in self.list_dir("runs")])
        return next((f for f in found if f is not None), None)

    def _remote_exists(self) -> bool:
        if self._has_remote is None:
            found = self._git("remote", "get-url", self.remote, check=False)
            self._has_remote = found.returncode == 0
        return self._has_remote

    def _fetch_remote(self) -> str | None:
        """Fetch the branch into its remote-tracking ref; its tip, None if the remote lacks it."""
        done = self._git(
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules",
            self.remote, f"+{self._ref}:{self._tracking}", check=False,
        )  # fmt: skip
        if done.returncode == 0:
            return self._commit_of(self._tracking)
        if b"couldn't find remote ref" in done.stderr:
            return None
        raise EngineUnavailable(f"cannot fetch {self.branch} from {self.remote}: {_text(done)}")

    def _merge_base(self, a: str, b: str) -> str | None:
        done = self._git("merge-base", a, b, check=False)
        if done.returncode > 1:
            raise EngineUnavailable(f"git merge-base failed: {_text(done)}")
        return done.stdout.decode().strip() or None

    def _diff(
        self, old: str | None, new: str, added: set[tuple[bytes, ...]] | None = None
    ) -> dict[tuple[bytes, ...], str | None]:
        """The file changes from commit `old` (None: from nothing) to commit `new`;
        `added` collects the paths that `new` creates."""
        old = old or self._write(b"tree", b"")
        fields = self._git("diff-tree", "-r", "-z", "--no-renames", old, new).stdout.split(b"\0")
        changes: dict[tuple[bytes, ...], str | None] = {}
        for meta, path in zip(fields[0:-1:2], fields[1::2], strict=False):
            _, _, _, blob, status = meta.split(b" ")
            parts = tuple(path.split(b"/"))
            changes[parts] = None if status == b"D" else blob.decode()
            if added is not None and status == b"A":
                added.add(parts)
        return changes

    def _carried(
        self, base: str | None, commit: str, remote: str, *, ours: Changes
    ) -> dict[tuple[bytes, ...], str | None]:
        """What to re-apply onto `remote`: everything since `base`, ours and what other
        writers of this clone left unpushed, except files they created that the remote
        now has. Such a file is a claim another runner won (the writer that made it got
        ClaimLost): carrying it along would overwrite the winner's."""
        added: set[tuple[bytes, ...]] = set()
        pending = self._diff(base, commit, added)
        carried = sorted(p for p in added if p not in ours)
        found = self._cat([f"{remote}:{'/'.join(map(_str, p))}" for p in carried])
        for parts, there in zip(carried, found, strict=True):
            if there is not None:
                del pending[parts]
        return pending


class _Tree:
    """A raw git tree: entries `<mode> <name>\\0<binary id>`, in git's order."""

    def __init__(self, raw: bytes, hashlen: int) -> None:
        self.raw, self.hashlen = raw, hashlen
        self.offsets = _offsets(raw, hashlen)

    def parse(self, at: int) -> tuple[bytes, bytes, str]:
        """(mode, name, id) of the entry starting at `at`."""
        space = self.raw.index(b" ", at)
        nul = self.raw.index(b"\0", space)
        sha = self.raw[nul + 1 : nul + 1 + self.hashlen].hex()
        return self.raw[at:space], self.raw[space + 1 : nul], sha

    def key(self, at: int) -> bytes:
        """Git sorts entries by name, a folder's name as if it ended in '/'."""
        mode, name, _ = self.parse(at)
        return name + b"/" if mode == TREE else name

    def index(self, name: bytes) -> int | None:
        for key in (name, name + b"/"):
            i = bisect.bisect_left(self.offsets, key, key=self.key)
            if i < len(self.offsets) and self.key(self.offsets[i]) == key:
                return i
        return None

    def get(self, name: bytes) -> tuple[bytes, str] | None:
        """(mode, id) of entry `name`."""
        i = self.index(name)
        return None if i is None else self.parse(self.offsets[i])[::2]

    def names(self) -> list[tuple[bytes, bool]]:
        """(name, is a folder) of every entry."""
        return [(name, mode == TREE) for mode, name, _ in map(self.parse, self.offsets)]

    def newest(self, limit: int) -> list[tuple[bytes, str]]:
        """(name, id) of the `limit` folders with the greatest names (of runs: the newest)."""
        if isinstance(self.offsets, range) and self.raw.startswith(TREE + b" "):
            # Folders whose names all have one length: git's order is the names' order.
            picked: Sequence[int] = self.offsets[::-1][:limit]
        else:
            folders = (at for at in self.offsets if self.key(at).endswith(b"/"))
            picked = heapq.nlargest(limit, folders, key=self.key)
        return [self.parse(at)[1:] for at in picked]

    def edited(self, edits: Mapping[bytes, tuple[bytes, str] | None]) -> bytes:
        """The raw tree with entries replaced, added or (None) removed, in order."""
        cuts: list[tuple[int, int, bytes, bytes]] = []  # (start, end, sort key, new bytes)
        for name, new in edits.items():
            i = self.index(name)
            if i is not None:
                at = self.offsets[i]
                cuts.append((at, self.raw.index(b"\0", at) + 1 + self.hashlen, b"", b""))
            if new is not None:
                key = name + b"/" if new[0] == TREE else name
                j = bisect.bisect_left(self.offsets, key, key=self.key)
                at = self.offsets[j] if j < len(self.offsets) else len(self.raw)
                cuts.append((at, at, key, b"%s %s\0%s" % (new[0], name, bytes.fromhex(new[1]))))
        parts: list[bytes] = []
        done = 0
        for start, end, _, data in sorted(cuts):  # an insertion sorts before a removal at start
            parts += (self.raw[done:start], data)
            done = end
        return b"".join([*parts, self.raw[done:]])


def _offsets(raw: bytes, hashlen: int) -> Sequence[int]:
    """Where each entry of a raw tree starts.

    Run ids all have one length, so a big folder's entries usually share one width; that
    is proved column by column (slices run in C) instead of walking 10,000 entries.
    """
    if not raw:
        return []
    space = raw.index(b" ")
    nul = raw.index(b"\0", space)
    width = nul + 1 + hashlen
    count, rest = divmod(len(raw), width)
    if count > 8 and not rest:
        same_mode = all(raw[c::width] == raw[c : c + 1] * count for c in range(space + 1))
        names_end = raw[nul::width] == bytes(count)
        if same_mode and names_end and not any(0 in raw[c::width] for c in range(space + 1, nul)):
            return range(0, len(raw), width)
    offsets, at = [], 0
    while at < len(raw):
        offsets.append(at)
        at = raw.index(b"\0", at) + 1 + hashlen
    return offsets


def _stored(data: bytes) -> bytes:
    """`data` as a zlib stream of stored (uncompressed) blocks, a third the cost of level 0."""
    size, step = len(data), 0xFFFF
    blocks = [b"\x78\x01"]  # RFC 1950 header: deflate, no dictionary
    for at in range(0, max(size, 1), step):  # RFC 1951 stored blocks: final flag, LEN, NLEN, bytes
        n = min(step, size - at)
        blocks += (struct.pack("<BHH", at + n == size, n, n ^ 0xFFFF), data[at : at + n])
    return b"".join([*blocks, struct.pack(">I", zlib.adler32(data))])


def _clean(path: str) -> str:
    return path.strip("/")


def _parts(path: str) -> tuple[bytes, ...]:
    parts = tuple(_clean(path).encode().split(b"/"))
    if any(
        p in (b"", b".", b"..") or p.lower() == b".git" or b"\0" in p or b"\n" in p for p in parts
    ):
        raise UsageError(f"not a valid path on the results branch: {path!r}")
    return parts


def _str(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


def _text(done: subprocess.CompletedProcess[bytes]) -> str:
    lines = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
    last = lines[-1] if lines else f"exit {done.returncode}"
    return last.removeprefix("fatal: ").removeprefix("error: ")


def _push_reason(done: subprocess.CompletedProcess[bytes]) -> str:
    """Git's reason for a refused ref (`[rejected] (fetch first)`), else its last error."""
    for line in done.stdout.decode(errors="replace").splitlines():
        if line.startswith("!\t"):
            return line.split("\t")[-1]
    return _text(done)


def _manifest(found: _Obj | None) -> RunManifest | None:
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
    return ResultsStore(repo, branch=settings.branch, remote=settings.remote, push=mode)
