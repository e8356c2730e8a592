"""The GitHub Actions run a Sluice run belongs to: the manifest's `ci`, links back to it, and
the warning about an artifact store that ends with the job."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from engine.core import layout
from engine.core.printable import printable

_TEXT_MAX = 200
# manifest key -> (runner variable, the shape a value must have; None: any text, bounded).
# The runner's variables are trusted less than they look (a self-hosted runner, a step that
# exported them): every value ends up in the manifest and in markdown, so each is checked.
_FIELDS: dict[str, tuple[str, re.Pattern[str] | None]] = {
    "server_url": ("GITHUB_SERVER_URL", re.compile(r"https?://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?")),
    "repository": ("GITHUB_REPOSITORY", re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")),
    "run_id": ("GITHUB_RUN_ID", re.compile(r"[0-9]{1,20}")),
    "run_attempt": ("GITHUB_RUN_ATTEMPT", re.compile(r"[0-9]{1,6}")),
    "workflow": ("GITHUB_WORKFLOW", None),
    "job": ("GITHUB_JOB", None),
    "actor": ("GITHUB_ACTOR", None),
    "sha": ("GITHUB_SHA", re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")),
    "ref": ("GITHUB_REF", None),
    "event_name": ("GITHUB_EVENT_NAME", re.compile(r"[a-z_]{1,64}")),
}


def _valid(key: str, value: object) -> str | None:
    """`value` if it has the shape `key` needs (free text: one printable line, bounded)."""
    if not isinstance(value, str) or not value:
        return None
    pattern = _FIELDS[key][1]
    if pattern is None:
        return printable(value)[:_TEXT_MAX]
    return value if pattern.fullmatch(value) else None


def ci_context(env: Mapping[str, str]) -> dict[str, Any] | None:
    """The manifest's `ci` from a GitHub runner's environment; None outside one.

    >>> ci = ci_context({"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com",
    ...     "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "2"})
    >>> ci["run_url"]
    'https://github.com/o/r/actions/runs/42/attempts/2'
    >>> ci_context({}) is None
    True
    """
    if env.get("GITHUB_ACTIONS") != "true":
        return None
    ci: dict[str, Any] = {"provider": "github"}
    for key, (variable, _) in _FIELDS.items():
        ci[key] = _valid(key, env.get(variable))
    ci["run_url"] = run_url(ci)
    return ci


def run_url(ci: Mapping[str, Any] | None) -> str | None:
    """The Actions run (its attempt, when known) of a manifest's `ci`, checked again: the
    manifest may come from the untrusted results branch."""
    if not ci:
        return None
    server, repo = (
        _valid("server_url", ci.get("server_url")),
        _valid("repository", ci.get("repository")),
    )
    run_id, attempt = (
        _valid("run_id", ci.get("run_id")),
        _valid("run_attempt", ci.get("run_attempt")),
    )
    if not (server and repo and run_id):
        return None
    url = f"{server}/{repo}/actions/runs/{run_id}"
    return f"{url}/attempts/{attempt}" if attempt else url


def manifest_url(
    ci: Mapping[str, Any] | None, branch: str, pipeline: str, run_id: str
) -> str | None:
    """The run's manifest on the results branch, on the server of its CI run."""
    if not ci:
        return None
    server, repo = (
        _valid("server_url", ci.get("server_url")),
        _valid("repository", ci.get("repository")),
    )
    if not (server and repo):
        return None
    path = quote(layout.manifest(pipeline, run_id), safe="/")
    return f"{server}/{repo}/blob/{quote(branch, safe='/')}/{path}"


def ephemeral_store(url: str, repo: Path, env: Mapping[str, str]) -> str | None:
    """On a GitHub runner, why a `file://` store inside the workspace will not last, and the
    fix; None elsewhere, or for a lasting store."""
    if env.get("GITHUB_ACTIONS") != "true":
        return None
    if "://" in url and not url.startswith("file://"):
        return None
    path = Path(url.removeprefix("file://"))
    path = (repo / path).resolve() if not path.is_absolute() else path.resolve()
    workspace = Path(env.get("GITHUB_WORKSPACE") or repo).resolve()
    if not (path.is_relative_to(workspace) or path.is_relative_to(repo.resolve())):
        return None
    return (
        f"the artifact store {printable(url)} is inside the workspace and ends with this job: "
        "cache hits, approvals decided in another job and `sluice retry` will not find this "
        "run's outputs. Configure a lasting store in sluice.yaml, e.g. "
        "`artifacts: s3://bucket/prefix` (docs/github-action.md)"
    )
