"""Git's object database at byte level: raw trees, loose objects, one `git cat-file --batch`."""

from __future__ import annotations

import bisect
import hashlib
import heapq
import os
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from engine.core import layout
from engine.errors import EngineUnavailable, UsageError
from engine.local.gitcli import IDENTITY

TREE, BLOB = b"40000", b"100644"
# Bigger trees are stored uncompressed (as with core.looseCompression=0): deflating the
# 500 kB tree of a 10,000-run folder costs more than the rest of a commit, and `git gc`
# repacks loose objects as deltas anyway.
_BIG_TREE = 1 << 16

TreeChanges = Mapping[tuple[bytes, ...], str | None]  # path parts -> blob id; None deletes
Obj = tuple[str, str, bytes]  # id, type, content


class ObjectDB:
    """Reads objects through one long-lived `git cat-file --batch` (shared by threads) and
    writes loose objects straight into `objects`, as git does, with no git process."""

    def __init__(self, repo: Path, env: Mapping[str, str], objects: Path, algo: str) -> None:
        self.repo, self._env, self._objects, self._algo = repo, env, objects, algo
        self.hashlen = hashlib.new(algo).digest_size
        self._lock = threading.Lock()
        self._catfile: subprocess.Popen[bytes] | None = None
        self._recent: dict[str, bytes] = {}  # big trees written here: the next commit's parents

    def cat(self, names: Sequence[str]) -> list[Obj | None]:
        """(id, type, content) of each object name (`<commit>:<path>` too), None if missing."""
        found: list[Obj | None] = []
        with self._lock:
            if self._catfile is None or self._catfile.poll() is not None:
                self._catfile = subprocess.Popen(
                    ["git", "cat-file", "--batch"], cwd=self.repo, env=dict(self._env),
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

    def read(self, sha: str, kind: str = "tree") -> bytes:
        """The content of object `sha`, which must be a `kind`."""
        if kind == "tree" and (recent := self._recent.get(sha)) is not None:
            return recent
        found = self.cat([sha])[0]
        if not found or found[1] != kind:
            raise EngineUnavailable(f"{kind} {sha} is missing from {self.repo}")
        return found[2]

    def commit_of(self, ref: str) -> str | None:
        """The commit `ref` names, None when it names none."""
        found = self.cat([ref])[0]
        return found[0] if found and found[1] == "commit" else None

    def tree_of(self, commit: str) -> str:
        return self.read(commit, "commit")[5 : 5 + 2 * self.hashlen].decode()  # tree <id>

    def write(self, kind: bytes, body: bytes) -> str:
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
                out.write(stored(data) if big else zlib.compress(data, 1))
            os.chmod(tmp, 0o444)
            os.replace(tmp, path)
        return sha

    def empty_tree(self) -> str:
        return self.write(b"tree", b"")

    def commit_onto(self, parent: str | None, changes: TreeChanges, message: str) -> str:
        """A new commit: `parent`'s tree with `changes`, by Sluice, now."""
        tree = self.apply(self.tree_of(parent) if parent else None, changes)
        stamp = "{} <{}> {} +0000".format(*IDENTITY, int(time.time()))
        lines = [f"tree {tree or self.empty_tree()}"] + [f"parent {parent}"] * bool(parent)
        lines += [f"author {stamp}", f"committer {stamp}", "", message.rstrip("\n"), ""]
        return self.write(b"commit", "\n".join(lines).encode())

    def apply(self, tree: str | None, changes: TreeChanges) -> str | None:
        """The tree id after `changes`; None when it ends up empty.

        Only the trees on changed paths are read and rewritten, each by splicing entries
        into its raw bytes, so a 10,000-run folder costs a memcpy, not 10,000 entries.
        """
        node = Tree(self.read(tree) if tree else b"", self.hashlen)
        edits: dict[bytes, tuple[bytes, str] | None] = {}
        nested: dict[bytes, dict[tuple[bytes, ...], str | None]] = {}
        for parts, blob in changes.items():
            if len(parts) == 1:
                edits[parts[0]] = None if blob is None else (BLOB, blob)
            else:
                nested.setdefault(parts[0], {})[parts[1:]] = blob
        for name, inner in nested.items():
            if name in edits:
                raise UsageError(f"{text(name)} is both a file and a folder in one commit")
            mode, sha = node.get(name) or (b"", None)
            child = sha if mode == TREE else None
            new = self.apply(child, inner)
            if new != child:
                edits[name] = None if new is None else (TREE, new)
        if not edits:
            return tree
        raw = node.edited(edits)
        return self.write(b"tree", raw) if raw else None

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


class Tree:
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

    def entries(self) -> list[tuple[bytes, str]]:
        """(name, id) of every entry."""
        return [(name, sha) for _, name, sha in map(self.parse, self.offsets)]

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


def stored(data: bytes) -> bytes:
    """`data` as a zlib stream of stored (uncompressed) blocks, a third the cost of level 0."""
    size, step = len(data), 0xFFFF
    blocks = [b"\x78\x01"]  # RFC 1950 header: deflate, no dictionary
    for at in range(0, max(size, 1), step):  # RFC 1951 stored blocks: final flag, LEN, NLEN, bytes
        n = min(step, size - at)
        blocks += (struct.pack("<BHH", at + n == size, n, n ^ 0xFFFF), data[at : at + n])
    return b"".join([*blocks, struct.pack(">I", zlib.adler32(data))])


def clean(path: str) -> str:
    return path.strip("/")


def parts(path: str) -> tuple[bytes, ...]:
    """A branch path as tree names; raises UsageError for a path git must not hold."""
    return tuple(name.encode() for name in layout.parts(path))


def text(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")
