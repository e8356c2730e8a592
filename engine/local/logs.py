"""Secret masking and per-attempt log files capped to head + tail."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from pathlib import Path

MASK = "***"
DEFAULT_LOG_CAP = 1024**2
MIN_SECRET_LEN = 3  # shorter values would mask ordinary text everywhere


class Masker:
    """Replaces every secret value (and each line of a multi-line one) with `***`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values: set[str] = set()
        for secret in secrets:
            values.update(
                p for p in [secret, *secret.splitlines()] if len(p.strip()) >= MIN_SECRET_LEN
            )
        ordered = sorted(values, key=len, reverse=True)  # longest first: no partial leftovers
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern is not None else text

    def __bool__(self) -> bool:
        return self._pattern is not None


class CappedLog:
    """Writes lines to a file, keeping at most `cap` bytes: the head, a cut marker, the tail."""

    def __init__(self, path: Path, cap: int = DEFAULT_LOG_CAP) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._half = max(cap // 2, 1)
        self._file = path.open("wb")
        self._head_bytes = 0
        self._tail: deque[bytes] = deque()
        self._tail_bytes = 0
        self._cut_bytes = 0
        self._cut_lines = 0

    def write(self, line: str) -> None:
        data = (line if line.endswith("\n") else line + "\n").encode("utf-8", "replace")
        if self._head_bytes + len(data) <= self._half and not self._tail:
            self._file.write(data)
            self._head_bytes += len(data)
            return
        self._tail.append(data)
        self._tail_bytes += len(data)
        while self._tail_bytes > self._half and len(self._tail) > 1:
            dropped = self._tail.popleft()
            self._tail_bytes -= len(dropped)
            self._cut_bytes += len(dropped)
            self._cut_lines += 1

    def close(self) -> None:
        if self._file.closed:
            return
        if self._cut_bytes:
            marker = f"[sluice: {self._cut_bytes} bytes ({self._cut_lines} lines) cut here; head and tail kept]\n"
            self._file.write(marker.encode())
        for data in self._tail:
            self._file.write(data)
        self._file.close()
