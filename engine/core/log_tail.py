"""What of a step's log the results branch keeps: its last lines, up to TAIL_BYTES.

The whole log stays in the run's local folder and goes to the artifact store (the attempt
records its pointer, `Attempt.log_full`); the branch keeps a tail, plain text, so that
`sluice logs` works offline and git's own compression (and its deltas between runs' similar
logs) does the rest. benchmarks/bench_logs.py measured gzip on the branch: no smaller for
logs of varying numbers, up to 2.7 times larger for logs alike from run to run (a gzip blob
defeats git's deltas).

>>> tail(b"one\\ntwo\\nthree\\n", limit=10)
b'[sluice: the first 4 bytes of this 14-byte log are left out here]\\ntwo\\nthree\\n'
>>> tail("é".encode() * 8, limit=5)[-4:]
b'\\xc3\\xa9\\xc3\\xa9'
>>> tail(b"short\\n") == b"short\\n"
True
"""

from __future__ import annotations

TAIL_BYTES = 32 * 1024
_MARKER = "[sluice: the first {cut} bytes of this {size}-byte log are left out here]\n"
_MARKER_START, _MARKER_SIZE = b"[sluice: the first ", b" bytes of this "


def tail(text: bytes, limit: int = TAIL_BYTES) -> bytes:
    """`text` when it fits in `limit` bytes; else a marker line and its last lines that fit
    (a line longer than the limit: its last bytes, from a UTF-8 character's start)."""
    if len(text) <= limit:
        return text
    window = text[-limit - 1 :]  # with the byte before: a line may start right at the limit
    newline = window.find(b"\n")
    if 0 <= newline < len(window) - 1:
        kept = window[newline + 1 :]
    else:  # one long line: start at a character, not inside one
        kept, start = window[1:], 0
        while start < len(kept) and kept[start] & 0xC0 == 0x80:
            start += 1
        kept = kept[start:]
    marker = _MARKER.format(cut=len(text) - len(kept), size=len(text))
    return marker.encode() + kept


def is_cut(text: bytes, limit: int = TAIL_BYTES) -> bool:
    """Whether the branch keeps only a tail of `text`."""
    return len(text) > limit


def cut_size(kept: bytes) -> int | None:
    """The whole log's bytes, read from the marker of a tail (None: `kept` is whole).

    >>> cut_size(tail(b"x\\n" * 100, limit=10)), cut_size(b"x\\n")
    (200, None)
    """
    if not kept.startswith(_MARKER_START):
        return None
    first = kept.split(b"\n", 1)[0]
    _, _, rest = first.partition(_MARKER_SIZE)
    size = rest.split(b"-byte log", 1)[0]
    return int(size) if size.isdigit() and len(size) < 20 else None
