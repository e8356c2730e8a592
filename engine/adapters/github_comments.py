"""One sticky comment on a pull request, through GitHub's REST API: found by a hidden marker
(every page of the PR's comments, 100 at a time, following the Link header), created once,
then edited in place."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal

from engine.adapters.github_api import (
    API_VERSION,
    DEFAULT_API,
    TIMEOUT_S,
    NoRedirect,
    github_message,
    parse_repository,
)
from engine.errors import SluiceError, UsageError

PER_PAGE = 100  # GitHub's most
MAX_PAGES = 100  # 10,000 comments: a bound against a Link header that never ends
_MAX_PAGE_BYTES = 32 * 1024 * 1024  # a page of 100 comments of up to 65,536 characters each
_MAX_ERROR_BYTES = 64 * 1024
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


class CommentFailed(SluiceError):
    """The comment could not be read or written (the caller warns: a preview's job never
    fails for its comment). `forbidden`: GitHub said 403 or 404 (the token may not write
    pull requests: a missing `pull-requests: write`, or a fork's read-only token)."""

    def __init__(self, message: str, *, forbidden: bool = False, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.forbidden = forbidden


@dataclass(frozen=True)
class Posted:
    action: Literal["created", "updated", "unchanged"]
    comment_id: int
    url: str | None  # the comment's address on GitHub, when the answer gave one


class Comments:
    """The comments of one pull request (an issue, to the REST API)."""

    def __init__(
        self,
        repository: str,
        number: int,
        *,
        token: str,
        api_url: str = DEFAULT_API,
        timeout: float = TIMEOUT_S,
    ) -> None:
        owner, name = parse_repository(repository)
        base = api_url.strip().rstrip("/")
        if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
            raise UsageError(f"GITHUB_API_URL={api_url!r} is not an http(s) URL")
        if not token.strip():
            raise CommentFailed("GITHUB_TOKEN is empty: the pull request cannot be commented")
        quote = urllib.parse.quote
        self.repo_url = f"{base}/repos/{quote(owner, safe='')}/{quote(name, safe='')}"
        self.base, self.number, self.timeout = base, number, timeout
        self.repository = f"{owner}/{name}"
        self._token = token.strip()
        self.pages_read = 0

    def find(self, marker: str) -> dict[str, Any] | None:
        """The first comment whose body starts with `marker`, reading the pages in turn: the
        first a bot wrote (the job's token is a bot's), else the first anyone wrote (a
        personal token's comments are a user's). A bot's ends the search."""
        url: str | None = f"{self.repo_url}/issues/{self.number}/comments?per_page={PER_PAGE}"
        found: dict[str, Any] | None = None
        while url is not None and self.pages_read < MAX_PAGES:
            page, link = self._call("GET", url)
            self.pages_read += 1
            for comment in page if isinstance(page, list) else []:
                body = comment.get("body") if isinstance(comment, dict) else None
                if not isinstance(body, str) or not body.startswith(marker):
                    continue
                user = comment.get("user")
                if isinstance(user, dict) and user.get("type") == "Bot":
                    return comment  # type: ignore[no-any-return]
                found = found or comment
            url = self._next(link)
        return found

    def upsert(self, marker: str, body: str) -> Posted:
        """Edit the marked comment to `body` (which starts with `marker`), or create it."""
        if not body.startswith(marker):
            raise ValueError("the body must start with its marker, or it is never found again")
        found = self.find(marker)
        if found is None:
            made, _ = self._call(
                "POST", f"{self.repo_url}/issues/{self.number}/comments", {"body": body}
            )
            return Posted("created", _id(made), _html(made))
        comment_id = _id(found)
        if found.get("body") == body:
            return Posted("unchanged", comment_id, _html(found))
        edited, _ = self._call(
            "PATCH", f"{self.repo_url}/issues/comments/{comment_id}", {"body": body}
        )
        return Posted("updated", comment_id, _html(edited) or _html(found))

    def _next(self, link: str | None) -> str | None:
        """The Link header's `next` page, if it stays on the API's own host (the token goes
        with every request: it must never be sent elsewhere)."""
        found = _NEXT.search(link or "")
        if found is None:
            return None
        url = found[1]
        ours, theirs = urllib.parse.urlsplit(self.base), urllib.parse.urlsplit(url)
        if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc):
            raise CommentFailed(f"GitHub's next page {url!r} is on another host: not followed")
        return url

    def _call(
        self, method: str, url: str, data: dict[str, Any] | None = None
    ) -> tuple[Any, str | None]:
        request = urllib.request.Request(
            url,
            data=json.dumps(data).encode() if data is not None else None,
            method=method,
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {self._token}",
                "X-GitHub-Api-Version": API_VERSION,
                "Content-Type": "application/json",
                "User-Agent": "sluice",
            },
        )
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(request, timeout=self.timeout) as response:
                raw = response.read(_MAX_PAGE_BYTES)
                link = response.headers.get("Link")
        except urllib.error.HTTPError as exc:
            with exc:
                raise self._refused(exc, method) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise CommentFailed(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
        try:
            return (json.loads(raw) if raw else None), link
        except ValueError:
            raise CommentFailed(f"GitHub's answer to {method} {url} is not JSON") from None

    def _refused(self, exc: urllib.error.HTTPError, method: str) -> CommentFailed:
        said = github_message(exc.read(_MAX_ERROR_BYTES))
        where = f"pull request #{self.number} of {self.repository}"
        if exc.code in (403, 404):
            return CommentFailed(
                f"GitHub refused to let this job comment on {where} "
                f"({exc.code}{said and ': ' + said})",
                forbidden=True,
                hint="give the job `permissions: pull-requests: write`; a pull request from "
                "a fork gets a read-only token, so its report is in the job summary only",
            )
        if exc.code == 401:
            return CommentFailed(f"GitHub refused the token (401{said and ': ' + said})")
        return CommentFailed(
            f"GitHub answered {exc.code} to {method} on {where}{said and ': ' + said}"
        )


def _id(comment: Any) -> int:
    found = comment.get("id") if isinstance(comment, dict) else None
    if not isinstance(found, int) or isinstance(found, bool):
        raise CommentFailed("GitHub's comment has no id")
    return found


def _html(comment: Any) -> str | None:
    url = comment.get("html_url") if isinstance(comment, dict) else None
    return url if isinstance(url, str) and url.startswith("https://") else None
