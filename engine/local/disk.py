"""How full a local filesystem is, in words for an error message."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from engine.errors import EngineUnavailable

FULL = (errno.ENOSPC, errno.EDQUOT)  # a disk or a quota that is full


def size_text(size: int) -> str:
    """Bytes in the largest unit that keeps a number >= 1.

    >>> size_text(2 * 1024**2), size_text(1536), size_text(12)
    ('2.0 MB', '1.5 KB', '12 bytes')
    """
    if size < 1024:
        return f"{size} bytes"
    value = float(size)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1024
        if value < 1024 or unit == "TB":
            break
    return f"{value:.1f} {unit}"


def free_text(path: Path) -> str:
    """E.g. '1.2 MB free of 2.0 MB' for the filesystem holding `path` (its nearest existing
    parent); 'free space unknown' when it cannot be read."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                usage = shutil.disk_usage(candidate)
            except OSError:
                break
            return f"{size_text(usage.free)} free of {size_text(usage.total)}"
    return "free space unknown"


def full_disk(exc: OSError, path: Path, what: str) -> EngineUnavailable | None:
    """The engine's own failure when `exc` says the disk holding `path` is full, else None:
    a full disk is never the step's fault (`what`: what could not be written)."""
    if exc.errno not in FULL:
        return None
    return EngineUnavailable(
        f"cannot write {what} to {path}: {exc.strerror} ({free_text(path)})",
        hint="free space on that disk, then `sluice retry`",
    )
