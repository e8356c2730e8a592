"""The one check for a name the engine turns into a path: run ids, pipeline and step names,
output names, log paths. Whatever the results branch holds is untrusted (a pull request or a
compromised runner can push to it), so every such name read from it passes here before any
file is opened, and `layout.parts` builds on it for paths on the branch itself.

>>> problem("model/weights.bin", nested=True) is None
True
>>> problem("../../etc/passwd", nested=True)
"has a '..' component"
>>> checked("train", "step")
'train'
"""

from __future__ import annotations

from engine.errors import UsageError

MAX_NAME_BYTES = 255  # one file name, as Linux filesystems allow
MAX_PATH_BYTES = 4096  # a whole relative path (an output name in folders), as PATH_MAX


def problem(value: object, *, nested: bool = False) -> str | None:
    """Why `value` cannot name an entry inside a folder the engine owns; None when it can.

    One name (`nested=False`: a run id, a pipeline or step name) or, with `nested`, a
    relative path of names joined by `/` (an output name, a log path). Never empty, `.` or
    `..`, absolute, with a NUL or a backslash, or longer than a filesystem allows.

    >>> problem("a\\\\b")
    'contains a backslash'
    >>> problem("out/model.pkl")
    "contains '/'"
    """
    if not isinstance(value, str):
        return "is not text"
    if not value:
        return "is empty"
    if "\0" in value:
        return "contains a NUL byte"
    if "\\" in value:
        return "contains a backslash"
    if value.startswith("/"):
        return "is an absolute path"
    try:
        size = len(value.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return "is not valid text"
    if size > MAX_PATH_BYTES:
        return f"is longer than {MAX_PATH_BYTES} bytes"
    names = value.split("/")
    if len(names) > 1 and not nested:
        return "contains '/'"
    for name in names:
        if name == "..":
            return "has a '..' component"
        if name in ("", "."):
            return "has an empty or '.' component"
        if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            return f"has a name longer than {MAX_NAME_BYTES} bytes"
    return None


def checked(value: str, what: str, *, nested: bool = False) -> str:
    """`value` when `problem` finds none; else UsageError naming `what` (exit 2)."""
    found = problem(value, nested=nested)
    if found is not None:
        raise UsageError(f"{what} {shown(value)} {found}")
    return value


def shown(value: object, limit: int = 80) -> str:
    """`value` quoted for a message, cut to `limit` characters.

    >>> shown("a" * 100, limit=10)
    "'aaaaaaaaaa'... (100 characters)"
    """
    if not isinstance(value, str):
        return type(value).__name__
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def safe_name(value: str) -> str:
    """`value` when it is one safe name, else ValueError (for pydantic's AfterValidator)."""
    return _safe(value, nested=False)


def safe_path(value: str) -> str:
    """`value` when it is a safe relative path, else ValueError (for AfterValidator)."""
    return _safe(value, nested=True)


def _safe(value: str, *, nested: bool) -> str:
    found = problem(value, nested=nested)
    if found is not None:
        raise ValueError(f"{shown(value)} {found}")
    return value
