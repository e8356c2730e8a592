"""Validated pipeline files, cached under `.sluice/cache/pipelines/` by content digest.

A 5,000-step file takes about a second to parse and check; a hit takes a fraction of it: the
entry holds the validated pipeline as JSON (no defaults, the file's own keys), which is
validated by the same pydantic model again, then resolved as a fresh load resolves it. Lines
for messages are read from the file's text again only when a message needs one.

An entry is keyed by the file's sha256, the engine's version and a fingerprint of its code,
the Python and pydantic versions, and which PyYAML installation loads (found, not imported):
an edited file, another engine or library just misses. Only a file that validated is ever cached, so `sluice validate` reports every problem
of a broken file from the file itself.

Trust. `.sluice/` is the user's, but what lies in it need not be the user's own doing: it
can be restored from a CI cache, unpacked from an archive, copied into an image with the
repository, or written by a step that mounts the workspace. An entry decides what the
engine runs, so a digest of the entry kept next to it proves nothing (whoever writes one
writes both). Each entry therefore carries an HMAC-SHA256 made with a per-user key kept
outside the repository (`$XDG_CACHE_HOME/sluice/pipeline-cache.key`, else
`~/.cache/sluice/...`, mode 0600): an entry this user's engine did not write never verifies,
and is ignored like a missing one. Nothing is unpickled; the JSON is parsed only after the
HMAC holds, is validated again by the pipeline model, and must name the key it was stored
under (a genuine entry renamed to another file's key is not taken). Entries are read without
following symlinks, only as regular files under a size cap (a FIFO there cannot block the
engine). Any failure, reading or writing, just means "load the file": the cache is never
needed.

Under GitHub Actions (GITHUB_ACTIONS=true) the cache is off unless SLUICE_PIPELINE_CACHE=on:
every job starts from a fresh checkout, so nothing would hit, and the engine's container
runs as root, where a key made in the runner's home would be a file later steps cannot
change. For the same reason no key is made in a folder another user owns (`sudo sluice`).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import os
import stat
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pydantic

import engine
from engine.core import layout
from engine.core.graph import Dag
from engine.core.lines import LineMap, Path_
from engine.core.parse import MAX_FILE_BYTES, LoadedPipeline
from engine.core.spec import Pipeline, StepWithoutImage, resolve_steps

FORMAT = 1
MAX_ENTRY_BYTES = 4 * MAX_FILE_BYTES
MAX_ENTRIES = 2000  # then the oldest are removed, down to KEEP_ENTRIES
KEEP_ENTRIES = 1500
KEY_FILE = "pipeline-cache.key"
DISABLE_ENV = "SLUICE_PIPELINE_CACHE"  # "off": never read or write entries; "on": even in CI


class _LazyLines(LineMap):
    """The LineMap of a cached file, composed from its text the first time a line is asked
    for (only messages ask: most commands never do)."""

    def __init__(self, text: str, file: str) -> None:  # fields are computed: no super()
        self._text = text
        self._file = file
        self._map: LineMap | None = None

    def _loaded(self) -> LineMap:
        if self._map is None:
            from engine.core.yaml_lines import compose  # lazy: YAML only when a message asks

            self._map = compose(self._text, self._file)[1]
        return self._map

    def __eq__(self, other: object) -> bool:  # equal to the LineMap a fresh load makes
        if not isinstance(other, LineMap):
            return NotImplemented
        return (self.keys, self.values) == (other.keys, other.values)

    __hash__ = None  # type: ignore[assignment]  # mutable, as LineMap

    @property
    def keys(self) -> dict[Path_, int]:
        return self._loaded().keys

    @keys.setter
    def keys(self, value: dict[Path_, int]) -> None:
        self._loaded().keys = value

    @property
    def values(self) -> dict[Path_, int]:
        return self._loaded().values

    @values.setter
    def values(self, value: dict[Path_, int]) -> None:
        self._loaded().values = value


def user_key_path() -> Path | None:
    """Where the per-user HMAC key lives: outside any repository."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        home = os.environ.get("HOME")
        if not home:
            return None
        base = os.path.join(home, ".cache")
    return Path(base) / "sluice" / KEY_FILE


def _user_key(path: Path) -> bytes | None:
    """The key at `path`, made on first use (32 random bytes, 0600); None when unusable."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    except OSError:
        return None
    if not _owned(path.parent):
        return None  # `sudo sluice`: files of root's in the user's home would stay behind
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:  # another process made it first
        try:
            return _read_key(path)
        except OSError:
            return None
    except OSError:
        return None
    key = os.urandom(32)
    try:
        os.write(fd, key)
    except OSError:
        return None
    finally:
        os.close(fd)
    return key


def _owned(folder: Path) -> bool:
    """Whether the nearest existing folder at or above `folder` is this user's own."""
    for candidate in (folder, *folder.parents):
        try:
            return candidate.stat().st_uid == os.geteuid()
        except FileNotFoundError:
            continue
        except OSError:
            return False
    return False


def _read_key(path: Path) -> bytes | None:
    data = _read_regular(path, 64)
    return data if data is not None and len(data) == 32 else None


def _read_regular(path: Path, limit: int) -> bytes | None:
    """A regular file's bytes, not through a symlink, none larger than `limit`; None else.
    Raises FileNotFoundError when absent (other OSErrors too)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
        return data if len(data) <= limit else None
    finally:
        os.close(fd)


@cache
def code_fingerprint() -> str:
    """What the engine's loader is made of: the name, size and mtime of each source file
    that shapes a loaded pipeline (an edited checkout is another engine)."""
    root = Path(engine.__file__).parent
    files = [root / "__init__.py", root / "errors.py", Path(__file__)]
    try:
        files += sorted((root / "core").rglob("*.py"))
        parts = [
            f"{f.relative_to(root).as_posix()}:{s.st_size}:{s.st_mtime_ns}"
            for f in files
            for s in (f.stat(),)
        ]
    except OSError:
        parts = ["unreadable"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@cache
def _library(name: str) -> str:
    """Which installation of library `name` loads here, without importing it (PyYAML costs
    ~10 ms, and a hit never parses YAML): where its package lies, and the size and mtime of
    its `__init__`, which another version or build rewrites."""
    try:
        found = importlib.util.find_spec(name)
        origin = found.origin if found is not None else None
        if origin is None:
            return "absent"
        info = os.stat(origin)
    except (ImportError, ValueError, OSError):
        return "unknown"
    return f"{origin}:{info.st_size}:{info.st_mtime_ns}"


def entry_key(digest: str) -> str:
    """The entry name for a file whose text has sha256 `digest`, under this engine."""
    parts = [
        FORMAT,
        digest,
        engine.__version__,
        code_fingerprint(),
        f"{sys.version_info.major}.{sys.version_info.minor}",
        pydantic.VERSION,
        _library("yaml"),
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


class PipelineCache:
    """The cache of one repository; `get` and `put` never raise."""

    def __init__(self, repo: Path, secret: bytes) -> None:
        self.repo = repo
        self.folder = repo / layout.PIPELINE_CACHE
        self._secret = secret

    def path(self, key: str) -> Path:
        return self.repo / layout.pipeline_cache_entry(key)

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).hexdigest().encode()

    def get(self, text: str, digest: str, file: str) -> LoadedPipeline | None:
        """The validated pipeline of `text` (sha256 `digest`), shown as `file`; None on a
        miss, and for an entry that is damaged, foreign or from another engine."""
        key = entry_key(digest)
        try:
            raw = _read_regular(self.path(key), MAX_ENTRY_BYTES)
        except OSError:
            return None
        if raw is None:
            return None
        mac, _, body = raw.partition(b"\n")
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            entry = json.loads(body)
            if not isinstance(entry, dict) or entry.get("key") != key:
                return None
            pipeline = Pipeline.model_validate(entry["pipeline"])
            steps = tuple(resolve_steps(pipeline))
            dag = _dag(entry["dag"], {s.name for s in steps})
        except (ValueError, TypeError, KeyError, RecursionError, StepWithoutImage):
            return None  # ValidationError and JSONDecodeError are ValueErrors
        if dag is None:
            return None
        lines = _LazyLines(text, file)
        return LoadedPipeline(pipeline, file, digest, steps, dag, lines)

    def put(self, loaded: LoadedPipeline) -> bool:
        """Store `loaded` under its digest; False when it was not stored (a pipeline whose
        JSON form does not validate back to the same model is never cached)."""
        key = entry_key(loaded.sha256)
        dag = loaded.dag
        try:
            form = loaded.pipeline.model_dump(mode="json", by_alias=True, exclude_unset=True)
            if Pipeline.model_validate(form) != loaded.pipeline:
                return False  # e.g. a NaN parameter, which equals nothing
            entry = {
                "format": FORMAT,
                "key": key,
                "pipeline": form,
                "dag": {
                    "needs": {name: list(deps) for name, deps in dag.needs.items()},
                    "order": list(dag.order),
                    "levels": [list(level) for level in dag.levels],
                    "finally_steps": list(dag.finally_steps),
                },
            }
            body = json.dumps(entry, separators=(",", ":"), allow_nan=False).encode()
        except (ValueError, TypeError, RecursionError):  # no faithful JSON form: not cached
            return False
        return self._write(self.path(key), self._mac(body) + b"\n" + body)

    def _write(self, target: Path, data: bytes) -> bool:
        try:
            if not self.folder.is_dir():
                # lazy: the workspace module (tar, git) is needed only on the first write
                from engine.local.workspace import ensure_engine_dir

                ensure_engine_dir(self.repo)
                self.folder.mkdir(parents=True, exist_ok=True)
            temp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temp, target)
        except OSError:  # read-only, full, not ours: the next load reads the file again
            return False
        self._prune()
        return True

    def _prune(self) -> None:
        """Keep the folder bounded: past MAX_ENTRIES, remove the oldest written."""
        try:
            found = [e for e in os.scandir(self.folder) if e.name.endswith(".json")]
            if len(found) <= MAX_ENTRIES:
                return
            found.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime_ns)
            for item in found[: len(found) - KEEP_ENTRIES]:
                os.unlink(item.path)
        except OSError:
            pass


def _dag(form: Any, names: set[str]) -> Dag | None:
    """The stored DAG, when it is well-formed and lays out exactly `names`."""
    if not isinstance(form, Mapping):
        return None
    needs_form = form.get("needs")
    if not isinstance(needs_form, Mapping):
        return None
    checked = {name: _names(deps) for name, deps in needs_form.items()}
    order, finally_steps = _names(form.get("order")), _names(form.get("finally_steps"))
    levels_form = form.get("levels")
    levels = [_names(level) for level in levels_form] if isinstance(levels_form, list) else []
    if order is None or finally_steps is None:
        return None
    needs: dict[str, tuple[str, ...]] = {}
    for name, deps in checked.items():
        if deps is None or not names.issuperset(deps):
            return None
        needs[name] = deps
    laid_out: list[tuple[str, ...]] = []
    for level in levels:
        if level is None:
            return None
        laid_out.append(level)
    every = [*order, *finally_steps]
    if set(needs) != names or set(every) != names or len(every) != len(names):
        return None
    if tuple(name for level in laid_out for name in level) != order:
        return None
    return Dag(needs=needs, order=order, levels=tuple(laid_out), finally_steps=finally_steps)


def _names(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


@cache
def _cache_for(repo: Path, key_path: Path) -> PipelineCache | None:
    secret = _user_key(key_path)
    return PipelineCache(repo, secret) if secret is not None else None


def for_repo(repo: Path) -> PipelineCache | None:
    """The cache of `repo`, or None: turned off (SLUICE_PIPELINE_CACHE=off), under GitHub
    Actions unless turned on (=on), or no user key can be read or made."""
    setting = os.environ.get(DISABLE_ENV, "").lower()
    if setting in ("off", "0", "false", "no"):
        return None
    if os.environ.get("GITHUB_ACTIONS") == "true" and setting not in ("on", "1", "true", "yes"):
        return None  # each job starts from a fresh checkout: nothing to hit, files to leave
    key_path = user_key_path()
    return _cache_for(repo.resolve(), key_path) if key_path is not None else None
