"""The words messages share: a "did you mean" hint, counted nouns, values as YAML writes them."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from typing import Any


def suggest(word: str, options: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close option exists, else ''.

    >>> suggest("trian", ["train", "test"])
    " (did you mean 'train'?)"
    >>> suggest("zzz", ["train"])
    ''
    """
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`1 step`, `2 steps`, `0 steps`: a count with its noun in the right number.

    >>> counted(1, "step"), counted(3, "problem"), counted(2, "entry", "entries")
    ('1 step', '3 problems', '2 entries')
    """
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def literal(value: Any) -> str:
    """A value as a pipeline file or JSON writes it: `true`, `null`, `0.9`, `text`, `[1, 2]`.

    >>> literal(True), literal(None), literal(0.9), literal("churn"), literal([1, "a"])
    ('true', 'null', '0.9', 'churn', '[1, "a"]')
    """
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
