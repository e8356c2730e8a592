"""GitHub's `paths` filters: which repository paths a list of globs selects."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase


def _segments(path: str) -> list[str]:
    return [part for part in path.strip().removeprefix("./").split("/") if part and part != "."]


def normalize(path: str) -> str:
    """A repository path as git spells it: no `./`, no empty or `.` segments.

    >>> normalize("./pipelines//train.yaml")
    'pipelines/train.yaml'
    """
    return "/".join(_segments(path))


def path_matches(pattern: str, path: str) -> bool:
    """Whether a repository path matches a `paths` glob.

    `*`, `?` and `[...]` match within one folder level; `**` as a whole segment matches any
    number of levels, none included (`src/**` is everything under src, `**/*.py` every
    Python file, `a/**/b` both `a/b` and `a/x/y/b`). A pattern ending in `/` means the
    folder's contents. Matching is case-sensitive, like git.
    """
    parts = _segments(pattern)
    if pattern.rstrip().endswith("/"):
        parts.append("**")
    names = _segments(path)
    if not parts:
        return False
    # reachable[j]: the pattern so far can consume exactly the first j path segments.
    # A table instead of backtracking keeps `**/**/**...` patterns linear per segment.
    reachable = [True] + [False] * len(names)
    for part in parts:
        if part == "**":
            for j in range(1, len(names) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
            continue
        shifted = [False] * (len(names) + 1)
        for j in range(1, len(names) + 1):
            shifted[j] = reachable[j - 1] and fnmatchcase(names[j - 1], part)
        reachable = shifted
    return reachable[-1]


def matches_paths(patterns: Sequence[str], path: str) -> bool:
    """GitHub's `paths` semantics: the last pattern that matches decides; `!` excludes.

    >>> matches_paths(["src/**", "!src/docs/**"], "src/docs/readme.md")
    False
    """
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if path_matches(pattern[1:] if negated else pattern, path):
            verdict = not negated
    return verdict
