"""The "did you mean" hint every lookup of a name adds when a close name exists."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def suggest(word: str, options: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close option exists, else ''.

    >>> suggest("trian", ["train", "test"])
    " (did you mean 'train'?)"
    >>> suggest("zzz", ["train"])
    ''
    """
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
