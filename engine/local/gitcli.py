"""Running the `git` command: one helper for every module that shells out to git."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from engine.errors import EngineUnavailable

IDENTITY = "sluice", "sluice@localhost"  # who commits results, even where git knows no user
# Variables that would point git at another repository than the one asked for.
_REPO_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_PREFIX")


def plumbing_env() -> dict[str, str]:
    """The environment for plumbing commands: this repository only, Sluice's identity (for
    reflog entries), never a password prompt, messages in English (they are parsed)."""
    env = {k: v for k, v in os.environ.items() if k not in _REPO_VARS}
    for role in ("AUTHOR", "COMMITTER"):
        env[f"GIT_{role}_NAME"], env[f"GIT_{role}_EMAIL"] = IDENTITY
    return env | {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}


def run(
    repo: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """`git -C <repo> <args>`, output captured; a failing command is returned, not raised.

    Raises EngineUnavailable when git cannot be started or runs past `timeout`.
    """
    try:
        return subprocess.run(
            ["git", "-C", str(repo), *args],
            env=env,
            capture_output=True,
            check=False,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineUnavailable(f"cannot run git: {exc}") from exc


def output(repo: Path, *args: str, timeout: float = 120) -> str | None:
    """The standard output of a git command that succeeded; None otherwise."""
    try:
        done = run(repo, *args, timeout=timeout)
    except EngineUnavailable:
        return None
    return done.stdout.decode("utf-8", "surrogateescape") if done.returncode == 0 else None


def last_error(done: subprocess.CompletedProcess[bytes]) -> str:
    """Git's last line of complaint, without its `fatal: ` or `error: ` prefix."""
    lines = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
    last = lines[-1] if lines else f"exit {done.returncode}"
    return last.removeprefix("fatal: ").removeprefix("error: ")


_PREFIXES = ("fatal: ", "error: ", "remote: ", "warning: ", "hint: ")


def whole_error(done: subprocess.CompletedProcess[bytes]) -> str:
    """Git's whole complaint on one line: a message per `fatal:`/`error:` line, the lines
    that continue one joined to it (its last line alone says "and the repository exists.").

    >>> lines = [b"fatal: Could not read from remote repository.", b"", b"Please make sure",
    ...          b"and the repository exists."]
    >>> whole_error(subprocess.CompletedProcess([], 128, b"", b"\\n".join(lines)))
    'Could not read from remote repository.; Please make sure and the repository exists.'
    """
    messages: list[str] = []
    joined = False  # the next line continues the last message
    for raw in (done.stderr or done.stdout).decode(errors="replace").splitlines():
        line = raw.strip()
        prefixed = line.startswith(_PREFIXES)
        for prefix in _PREFIXES:
            line = line.removeprefix(prefix)
        if not line:
            joined = False
        elif joined and not prefixed:
            messages[-1] += " " + line
        else:
            messages.append(line)
            joined = True
    return "; ".join(messages) or f"exit {done.returncode}"
