"""Secret masking and per-attempt log files capped to head + tail."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
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
        self.longest = len(ordered[0]) if ordered else 0

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern is not None else text

    def __bool__(self) -> bool:
        return self._pattern is not None

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        """Where secrets are in `text`, leftmost first."""
        return self._pattern.finditer(text) if self._pattern is not None else iter(())


class MaskedLines:
    """Masks a stream of lines and pieces of lines on their way to `sink`.

    A line longer than the watcher's limit arrives in pieces (no newline at the end of all
    but the last), and a secret can straddle two of them: masked apart, neither piece holds
    it whole. So a piece keeps back its last characters (one fewer than the longest secret),
    and they are masked with what comes next. `close` passes on what is kept back.

    >>> out = []
    >>> lines = MaskedLines(Masker(["hunter2"]), out.append)
    >>> lines("pass: hun"); lines("ter2\\n"); lines.close()
    >>> out
    ['pas', 's: ***\\n']
    """

    def __init__(self, mask: Masker, sink: Callable[[str], None]) -> None:
        self._mask, self._sink = mask, sink
        self._kept = ""

    def __call__(self, text: str) -> None:
        text = self._kept + text
        self._kept = ""
        if not text.endswith("\n") and self._mask and self._mask.longest > 1:
            cut = max(len(text) - (self._mask.longest - 1), 0)
            # A secret that starts before the cut ends inside `text`: keep it whole.
            for found in self._mask.finditer(text):
                if found.start() >= cut:
                    break
                cut = max(cut, found.end())
            text, self._kept = text[:cut], text[cut:]
        if text:
            self._sink(self._mask(text))

    def close(self) -> None:
        kept, self._kept = self._kept, ""
        if kept:
            self._sink(self._mask(kept))


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
