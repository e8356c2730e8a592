"""A `pull_request` event -> the preview runs it calls for (pure).

Only `opened`, `synchronize` and `reopened` change a pull request's code; every other
action (labeled, edited, closed, ...) starts nothing. A pipeline is previewed when its own
file changed between the base and the head, or a path its `push` triggers watch did.

The payload is untrusted (a fork's author chooses the branch name and title): only
checked shas, numbers and bounded text reach the record, and nothing reaches a shell.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from engine.core.manifest import Trigger
from engine.core.parse import LoadedPipeline
from engine.core.payloads import dig
from engine.core.preview import PREVIEW_KIND
from engine.core.triggers.paths import matches_paths, normalize
from engine.errors import InvalidInput

PR_ACTIONS = ("opened", "synchronize", "reopened")  # a pull request's code changed
MAX_RECORDED_FILES = 20
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_MAX_TEXT = 256


Preview = tuple[str, dict[str, Any], Trigger]  # pipeline, params, trigger


def concerned_files(loaded: LoadedPipeline, changed: Collection[str]) -> list[str]:
    """The changed paths that concern `loaded`: its own file, or its push triggers' `paths`."""
    specs = [t.push for t in loaded.pipeline.triggers if t.push is not None]
    own = normalize(loaded.file)
    return sorted(
        path
        for path in changed
        if path == own or any(matches_paths(spec.paths, path) for spec in specs)
    )


def plan(
    payload: Mapping[str, Any],
    pipelines: Sequence[LoadedPipeline],
    changed_files: Collection[str] | None,
) -> list[Preview]:
    """Preview runs, in pipeline order (pipeline, params, trigger of kind `pull_request`).

    `changed_files`: the paths changed between the merge base of base and head, and head;
    None when git could not tell (a shallow clone): then every pipeline with a push
    trigger is previewed, and the record says so (`source`).
    """
    action = payload.get("action")
    if action not in PR_ACTIONS:
        return []
    recorded = describe(payload)
    chosen: list[tuple[LoadedPipeline, list[str]]]
    if changed_files is None:
        chosen = [
            (loaded, [])
            for loaded in pipelines
            if any(t.push is not None for t in loaded.pipeline.triggers)
        ]
        source = "unknown (git could not diff base and head): every pipeline with a push trigger"
    else:
        changed = {normalize(path) for path in changed_files}
        found = [(loaded, concerned_files(loaded, changed)) for loaded in pipelines]
        chosen = [(loaded, hits) for loaded, hits in found if hits]
        source = "git diff"
    runs: list[Preview] = []
    for loaded, hits in chosen:
        trigger_payload = {
            **recorded,
            "source": source,
            "files": hits[:MAX_RECORDED_FILES],
            "files_total": len(hits),
        }
        trigger = Trigger(kind=PREVIEW_KIND, event="pull_request", payload=trigger_payload)
        runs.append((loaded.name, dict(loaded.pipeline.params), trigger))
    return runs


def describe(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What a preview records of its pull request: number, action, head (sha, ref, repo),
    base (sha, ref, repo), whether it comes from a fork, its author and address.

    A fork: the head repository is another than the base's, or was deleted (`head.repo`
    null). InvalidInput when the payload is not a pull request's.
    """
    pr = payload.get("pull_request")
    if not isinstance(pr, Mapping):
        raise InvalidInput("pull_request payload: pull_request is not an object")
    number = payload.get("number", pr.get("number"))
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise InvalidInput("pull_request payload: number is not a pull request number")
    head, base = pr.get("head"), pr.get("base")
    if not isinstance(head, Mapping) or not isinstance(base, Mapping):
        raise InvalidInput("pull_request payload: head and base must be objects")
    head_sha, base_sha = _sha(head, "head"), _sha(base, "base")
    head_repo, base_repo = head.get("repo"), base.get("repo")
    if not isinstance(base_repo, Mapping):
        raise InvalidInput("pull_request payload: base.repo is not an object")
    return {
        "number": number,
        "action": payload.get("action"),
        "head_sha": head_sha,
        "head_ref": _text(head.get("ref")),
        "head_repo": _text(head_repo.get("full_name")) if isinstance(head_repo, Mapping) else None,
        "base_sha": base_sha,
        "base_ref": _text(base.get("ref")),
        "base_repo": _text(base_repo.get("full_name")),
        "fork": is_fork(head_repo, base_repo),
        "author": _text(dig(pr, "user", "login")),
        "url": _url(pr.get("html_url")),
    }


def is_fork(head_repo: Any, base_repo: Mapping[str, Any]) -> bool:
    """True unless the head repository is the base repository itself."""
    if not isinstance(head_repo, Mapping):
        return True  # deleted: nobody can vouch for where the code came from
    head_id, base_id = head_repo.get("id"), base_repo.get("id")
    if isinstance(head_id, int) and isinstance(base_id, int):
        return head_id != base_id
    head_name, base_name = head_repo.get("full_name"), base_repo.get("full_name")
    if not isinstance(head_name, str) or not isinstance(base_name, str):
        return True
    return head_name.lower() != base_name.lower()


def _sha(side: Mapping[str, Any], name: str) -> str:
    sha = side.get("sha")
    if not isinstance(sha, str) or not _SHA.match(sha):
        raise InvalidInput(f"pull_request payload: {name}.sha is not a commit id")
    return sha


def _text(value: Any) -> str | None:
    return value[:_MAX_TEXT] if isinstance(value, str) else None


def _url(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith("https://") and len(value) <= _MAX_TEXT:
        return value
    return None
