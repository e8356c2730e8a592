"""Untrusted text made safe to print: in a terminal, and in a GitHub runner's log.

Names and values a step, a pipeline file or the results branch supplies reach stderr and
stdout inside the engine's own lines. `printable` keeps such text on one line and inert in
a terminal; `inert` keeps a line from being read as a GitHub workflow command.

>>> printable("model\\n::warning::x")
'model\\\\n::warning::x'
>>> inert("::warning::x")
'\\\\::warning::x'
"""

from __future__ import annotations

import re

# C0 and C1 controls (line breaks, escape sequences, bells), DEL, the soft hyphen,
# zero-width and bidirectional controls (text that reads other than it is), line and
# paragraph separators, the BOM, Unicode tags, and lone surrogates (text that was not
# UTF-8, or invalid JSON escapes): none of them prints as itself.
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufeff\ufff9-\ufffb\ud800-\udfff\U000e0000-\U000e007f]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_LEGACY_COMMAND = "##["  # the runner's old command form, read anywhere in a line


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape): that byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, tabs: bool = False) -> str:
    """`text` on one line, with nothing a terminal acts on: each unprintable character as
    an escape (`\\n`, `\\x1b`, `\\u202e`); a byte that was not UTF-8 as `\\xNN`, exact.
    `tabs` keeps tab characters as they are.

    >>> printable("a\\tb\\x1b[2J") == "a\\\\tb\\\\x1b[2J"
    True
    >>> printable(b"n\\xff".decode("utf-8", "surrogateescape")) == "n\\\\xff"
    True
    """
    if tabs:
        return _UNPRINTABLE.sub(lambda m: "\t" if m.group() == "\t" else _escape(m), text)
    return _UNPRINTABLE.sub(_escape, text)


def inert(line: str) -> str:
    """One line as GitHub's runner reads plain text, never as a workflow command.

    The runner acts on a line that starts with `::` after leading white space, and on the
    legacy `##[command]` anywhere in a line: a backslash breaks both. Give it one line
    (`printable` text, or a piece of a line split at line breaks).

    >>> inert("  ::error::x") == "  \\\\::error::x"
    True
    >>> inert("a ##[warning]b") == "a ##\\\\[warning]b"
    True
    """
    rest = line.lstrip()
    if rest.startswith("::"):
        line = line[: len(line) - len(rest)] + "\\" + rest
    return line.replace(_LEGACY_COMMAND, "##\\[")


def is_utf8(text: str) -> bool:
    """Whether `text` can be written as UTF-8 (a manifest, a summary): False when it holds a
    lone surrogate, from a file name that was not UTF-8 or a JSON escape such as `\\ud800`.

    >>> is_utf8("été"), is_utf8(b"n\\xff".decode("utf-8", "surrogateescape"))
    (True, False)
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
