"""Which engine process runs a run, and whether it is provably gone.

A run's manifest records its engine's identity (`engine` in the manifest): the host, the
pid, the boot id (`/proc/sys/kernel/random/boot_id`) and the process's start time (clock
ticks after boot, `/proc/<pid>/stat` field 22). On the same host that is proof either way:
a pid that is gone, or now names a process started at another time, or a boot id that
changed, means the engine is gone. From another host nothing can be proved, so such a run
counts as gone only when its last sign of life is older than `STALE_AFTER`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

# Longer than any CI job may run (GitHub: 6 h hosted, 5 days self-hosted), so a run from
# another host that has said nothing for this long has no engine left.
STALE_AFTER = timedelta(days=7)
_PROC = Path("/proc")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def boot_id() -> str | None:
    """This machine's boot id (Linux), None where there is none."""
    return _read(_PROC / "sys" / "kernel" / "random" / "boot_id")


def started(pid: int) -> int | None:
    """When process `pid` started, in clock ticks after boot; None when there is no such
    process (or no /proc)."""
    stat = _read(_PROC / str(pid) / "stat")
    if stat is None:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and ')'
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def identity() -> dict[str, Any]:
    """This engine process: host, pid, boot id and start time, for the run's manifest."""
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "boot_id": boot_id(),
        "pid_started": started(pid),
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user
        return True
    return True


def gone(engine: Mapping[str, Any], last_seen: datetime, now: datetime) -> str | None:
    """Why the engine `engine` names is provably gone, or None when it may be running.

    `last_seen`: the newest time its run's manifest records (its last sign of life).
    """
    host, pid = engine.get("host"), engine.get("pid")
    if host != socket.gethostname() or not isinstance(pid, int):
        silent = now - last_seen
        if silent > STALE_AFTER:
            days = silent.total_seconds() / 86400
            where = f"on {host}" if host else "of an unknown host"
            return f"its engine {where} has recorded nothing for {days:.1f} days"
        return None
    recorded_boot, this_boot = engine.get("boot_id"), boot_id()
    if recorded_boot and this_boot and recorded_boot != this_boot:
        return f"its engine (pid {pid} on {host}) did not survive a reboot"
    if not _alive(pid):
        return f"its engine (pid {pid} on {host}) is gone"
    recorded_start, now_start = engine.get("pid_started"), started(pid)
    if recorded_start is not None and now_start is not None and recorded_start != now_start:
        return f"its engine (pid {pid} on {host}) is gone; the pid now names another process"
    return None
