"""Send a `repository_dispatch` through GitHub's REST API, with a hop count against loops."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.core.payloads import check_payload
from engine.errors import InvalidInput, SluiceError, UsageError, json_object

DEFAULT_API = "https://api.github.com"
API_VERSION = "2022-11-28"
MAX_EVENT_TYPE = 100  # GitHub's limits for repository_dispatch
MAX_PAYLOAD_KEYS = 10
HOPS_KEY = "sluice_hops"  # in client_payload; counts against GitHub's 10 keys
HOPS_ENV = "SLUICE_DISPATCH_HOPS"
MAX_HOPS = 3
TIMEOUT_S = 30.0
_MAX_ERROR_BYTES = 64 * 1024
_MAX_REVIEW_BYTES = 1024 * 1024
_LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?")
_REPOSITORY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")


class DispatchFailed(SluiceError):
    """GitHub did not accept the dispatch, or could not be reached (exit 1: GitHub is not
    part of the engine, so this is not an EngineUnavailable)."""


class DispatchLoop(SluiceError):
    """The sender is already `max_hops` dispatches deep: sending more could loop forever."""

    def __init__(self, hops: int, max_hops: int) -> None:
        super().__init__(
            f"refusing to dispatch: this run was started by a chain of {hops} dispatch(es), "
            f"the limit is {max_hops} ({HOPS_ENV}={hops})",
            hint="a pipeline that dispatches the event that starts it loops; "
            "raise --max-hops only for a chain that really is that long",
        )


def parse_repository(text: str) -> tuple[str, str]:
    """`OWNER/NAME` -> (owner, name); InvalidInput when it cannot name a GitHub repository."""
    text = text.strip()
    if not _REPOSITORY.match(text) or text.split("/")[1] in (".", ".."):
        raise InvalidInput(f"{text!r} is not a repository: use OWNER/NAME, e.g. octo-org/churn")
    owner, name = text.split("/")
    return owner, name.removesuffix(".git")


def parse_payload(text: str | None) -> dict[str, Any]:
    """`--payload` text -> a JSON object ({} when not given)."""
    if text is None or not text.strip():
        return {}
    payload = json_object(text, "--payload", example='\'{"params": {"n": 3}}\'')
    check_payload(payload, "--payload")
    return payload


def current_hops(environ: Mapping[str, str]) -> int:
    """How many dispatches led to this process: the most that `SLUICE_DISPATCH_HOPS` or,
    inside a workflow run that a repository_dispatch started, its event payload says.

    The event file is read too so that a workflow step calling `sluice dispatch` is
    guarded even when nothing set the variable.
    """
    hops = 0
    raw = environ.get(HOPS_ENV, "").strip()
    if raw:
        if not raw.isdigit():
            raise InvalidInput(f"{HOPS_ENV}={raw!r}: expected a whole number >= 0")
        hops = int(raw)
    if environ.get("GITHUB_EVENT_NAME") == "repository_dispatch" and environ.get(
        "GITHUB_EVENT_PATH"
    ):
        hops = max(hops, _event_hops(Path(environ["GITHUB_EVENT_PATH"])))
    return hops


def _event_hops(path: Path) -> int:
    try:
        event = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return 0  # no readable event: the variable alone decides
    client = event.get("client_payload") if isinstance(event, dict) else None
    found = client.get(HOPS_KEY) if isinstance(client, dict) else None
    # bool is an int subclass; `true` is no count
    return found if isinstance(found, int) and not isinstance(found, bool) and found > 0 else 0


def client_payload(payload: Mapping[str, Any], hops: int, max_hops: int) -> dict[str, Any]:
    """The payload to send: `payload` plus the next hop count, within GitHub's limits.

    The loop guard: a dispatch made with `GITHUB_TOKEN` starts workflow runs, so a
    pipeline that dispatches from a run a dispatch started could go on for ever. Each
    dispatch carries `sluice_hops` = the dispatches that led to the sender + 1; whatever
    starts a run from a dispatch hands that on as `SLUICE_DISPATCH_HOPS`; a sender that
    is already `max_hops` deep raises DispatchLoop instead.

        >>> client_payload({"params": {"n": 3}}, hops=1, max_hops=3)
        {'params': {'n': 3}, 'sluice_hops': 2}
    """
    if HOPS_KEY in payload:
        raise InvalidInput(
            f"--payload: {HOPS_KEY!r} is set by Sluice (the loop guard's hop count); leave it out"
        )
    if len(payload) > MAX_PAYLOAD_KEYS - 1:
        raise InvalidInput(
            f"--payload has {len(payload)} top-level keys; GitHub allows {MAX_PAYLOAD_KEYS} "
            f"and Sluice adds {HOPS_KEY!r}, so at most {MAX_PAYLOAD_KEYS - 1}",
            hint='nest them under one key, e.g. {"params": {...}}',
        )
    if hops >= max_hops:
        raise DispatchLoop(hops, max_hops)
    return {**payload, HOPS_KEY: hops + 1}


def check_event_type(event_type: str) -> str:
    if not 1 <= len(event_type) <= MAX_EVENT_TYPE:
        raise InvalidInput(
            f"--event-type must be 1 to {MAX_EVENT_TYPE} characters, got {len(event_type)}"
        )
    return event_type


def dispatches_url(api_url: str, owner: str, name: str) -> str:
    base = api_url.strip().rstrip("/")
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        raise UsageError(f"GITHUB_API_URL={api_url!r} is not an http(s) URL")
    quote = urllib.parse.quote
    return f"{base}/repos/{quote(owner, safe='')}/{quote(name, safe='')}/dispatches"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Surface redirects as errors: urllib would re-send the token to the new host, as a GET."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def dispatch(
    repository: str,
    event_type: str,
    payload: Mapping[str, Any],
    *,
    token: str,
    api_url: str = DEFAULT_API,
    hops: int = 0,
    max_hops: int = MAX_HOPS,
    timeout: float = TIMEOUT_S,
) -> str:
    """POST the dispatch; returns the URL it went to. Raises DispatchFailed, DispatchLoop,
    or InvalidInput (nothing sent)."""
    owner, name = parse_repository(repository)
    check_event_type(event_type)
    body = {"event_type": event_type, "client_payload": client_payload(payload, hops, max_hops)}
    if not token.strip():
        raise UsageError("GITHUB_TOKEN is empty")
    url = dispatches_url(api_url, owner, name)
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token.strip()}",
            "X-GitHub-Api-Version": API_VERSION,
            "Content-Type": "application/json",
            "User-Agent": "sluice",  # GitHub refuses requests without one
        },
    )
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read(_MAX_ERROR_BYTES)
    except urllib.error.HTTPError as exc:
        with exc:
            raise _refused(exc, f"{owner}/{name}") from None
    except urllib.error.URLError as exc:
        raise DispatchFailed(f"cannot reach {url}: {exc.reason}") from None
    except TimeoutError:
        raise DispatchFailed(f"no answer from {url} within {timeout:g}s") from None
    except OSError as exc:  # a reset connection, after the request was sent
        raise DispatchFailed(f"connection to {url} failed: {exc}") from None
    return url


def environment_approver(
    repository: str,
    run_id: int,
    environment: str,
    *,
    token: str,
    api_url: str = DEFAULT_API,
    timeout: float = TIMEOUT_S,
) -> str | None:
    """The login of whoever last approved `environment` for workflow run `run_id`
    (GET .../actions/runs/{run_id}/approvals); None when no review names it. Raises
    DispatchFailed when GitHub cannot be asked (the answer is untrusted: only a login that
    looks like one is returned)."""
    owner, name = parse_repository(repository)
    url = f"{api_url.rstrip('/')}/repos/{owner}/{name}/actions/runs/{run_id}/approvals"
    request = urllib.request.Request(
        url,
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token.strip()}",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "sluice",
        },
    )
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            reviews = json.loads(response.read(_MAX_REVIEW_BYTES))
    except urllib.error.HTTPError as exc:
        with exc:
            raise _refused(exc, f"{owner}/{name}") from None
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        raise DispatchFailed(f"cannot read {url}: {exc}") from None
    found = None
    for review in reviews if isinstance(reviews, list) else []:
        if not isinstance(review, dict) or review.get("state") != "approved":
            continue
        named = [e.get("name") for e in review.get("environments") or [] if isinstance(e, dict)]
        login = (
            (review.get("user") or {}).get("login")
            if isinstance(review.get("user"), dict)
            else None
        )
        if environment in named and isinstance(login, str) and _LOGIN.fullmatch(login):
            found = login
    return found


def _refused(exc: urllib.error.HTTPError, repository: str) -> DispatchFailed:
    """GitHub's answer, in words that say what to do about it."""
    said = github_message(exc.read(_MAX_ERROR_BYTES))
    status = exc.code
    if status == 401:
        return DispatchFailed(
            f"GitHub refused the token (401{said and ': ' + said}): GITHUB_TOKEN is invalid or expired"
        )
    if status == 403:
        return DispatchFailed(
            f"GitHub forbids this dispatch to {repository} (403{said and ': ' + said})",
            hint="the token needs the `repo` scope (classic) or `contents: write` on the "
            "repository; a 403 can also mean a rate limit",
        )
    if status == 404:
        return DispatchFailed(
            f"repository {repository} not found, or the token cannot see it (404)",
            hint="check OWNER/NAME; the token needs the `repo` scope (classic) or "
            "`contents: write` on the repository (fine-grained token, GitHub App)",
        )
    if status == 422:
        return DispatchFailed(f"GitHub rejected the dispatch (422): {said or 'validation failed'}")
    if 300 <= status < 400:
        where = exc.headers.get("Location") or "elsewhere"
        return DispatchFailed(
            f"GitHub redirected the dispatch to {where} ({status}): not followed",
            hint="a renamed or transferred repository: dispatch to its new OWNER/NAME",
        )
    return DispatchFailed(f"GitHub answered {status} {exc.reason}{said and ': ' + said}")


def github_message(raw: bytes) -> str:
    """`message` and any `errors` of a GitHub error body, else its text (shortened)."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:300]
    if not isinstance(body, dict):
        return ""
    parts = [str(body["message"])] if body.get("message") else []
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            parts.append(str(error.get("message") or error.get("code") or error))
        else:
            parts.append(str(error))
    return "; ".join(parts)[:500]
