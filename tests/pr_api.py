"""Test helpers for pull-request previews: real GitHub `pull_request` payloads (the
@octokit/webhooks-examples package in tests/node), and a loopback stand-in for the part of
GitHub's REST API the sticky comment uses (issue comments: paginated list, create, edit)."""

from __future__ import annotations

import copy
import json
import os
import re
import threading
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

EXAMPLES = (
    Path(__file__).resolve().parent
    / "node/node_modules/@octokit/webhooks-examples/api.github.com/index.json"
)
_LIST = re.compile(r"^/repos/([^/]+)/([^/]+)/issues/(\d+)/comments$")
_EDIT = re.compile(r"^/repos/([^/]+)/([^/]+)/issues/comments/(\d+)$")
FORBIDDEN = {
    "message": "Resource not accessible by integration",
    "documentation_url": "https://docs.github.com/rest/issues/comments#create-an-issue-comment",
    "status": "403",
}


@cache
def _examples() -> dict[str, list[dict[str, Any]]]:
    if not EXAMPLES.is_file():
        reason = "@octokit/webhooks-examples is not installed (scripts/node-tools.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    found: dict[str, list[dict[str, Any]]] = {}
    for event in json.loads(EXAMPLES.read_text()):
        found[event["name"]] = event["examples"]
    return found


def pr_event(action: str) -> dict[str, Any]:
    """GitHub's own `pull_request` example for `action` (a copy to change)."""
    for example in _examples()["pull_request"]:
        if example["action"] == action:
            return copy.deepcopy(example)
    raise AssertionError(f"no pull_request example with action {action!r}")


def fork_repository() -> dict[str, Any]:
    """A real fork's repository object: the `forkee` of GitHub's `fork` event example."""
    return copy.deepcopy(_examples()["fork"][0]["forkee"])


def as_fork(event: dict[str, Any]) -> dict[str, Any]:
    """The event with its head in a fork (another repository, `fork: true`)."""
    event["pull_request"]["head"]["repo"] = fork_repository()
    owner = event["pull_request"]["head"]["repo"]["owner"]["login"]
    event["pull_request"]["head"]["label"] = f"{owner}:{event['pull_request']['head']['ref']}"
    return event


def as_deleted_head(event: dict[str, Any]) -> dict[str, Any]:
    """The event as GitHub sends it once the head repository is deleted: `head.repo` null."""
    event["pull_request"]["head"]["repo"] = None
    return event


def pointing_at(
    event: dict[str, Any], *, head: str, base: str, base_ref: str = "main"
) -> dict[str, Any]:
    """The event naming commits of a test repository."""
    event["pull_request"]["head"]["sha"] = head
    event["pull_request"]["base"]["sha"] = base
    event["pull_request"]["base"]["ref"] = base_ref
    return event


@dataclass
class Recorded:
    method: str
    path: str  # with its query
    body: Any
    authorization: str


@dataclass
class CommentsApi:
    """Issue comments on loopback, GitHub's way: pages of `per_page` (default 30) with a Link
    header, 201 on create, 200 on edit; `forbid`: 403 to writes, as a read-only token gets."""

    url: str = ""
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    forbid: bool = False
    _next_id: int = 1000
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def seed(
        self,
        number: int,
        count: int,
        *,
        body: str = "LGTM",
        at: int | None = None,
        marked: str = "",
    ) -> None:
        """`count` comments on PR `number`; at index `at`, one whose body is `marked`."""
        for index in range(count):
            text = marked if at == index else f"{body} {index}"
            self._add(number, text, login="octocat" if at != index else "github-actions[bot]")

    def _add(self, number: int, body: str, login: str = "github-actions[bot]") -> dict[str, Any]:
        self._next_id += 1
        comment = {
            "id": self._next_id,
            "body": body,
            "html_url": f"https://github.com/o/r/pull/{number}#issuecomment-{self._next_id}",
            "user": {"login": login, "type": "Bot" if "[bot]" in login else "User"},
        }
        self.comments.setdefault(number, []).append(comment)
        return comment

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.method != "GET"]

    def start(self) -> CommentsApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(
                self, status: int, data: Any, headers: dict[str, str] | None = None
            ) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _handle(self, method: str) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = json.loads(raw) if raw else None
                parts = urlsplit(self.path)
                with api._lock:
                    api.requests.append(
                        Recorded(method, self.path, body, self.headers.get("Authorization", ""))
                    )
                    listed, edited = _LIST.match(parts.path), _EDIT.match(parts.path)
                    if method == "GET" and listed:
                        self._page(int(listed[3]), parts.path, parse_qs(parts.query))
                    elif method != "GET" and api.forbid:
                        self._answer(403, FORBIDDEN)
                    elif method == "POST" and listed:
                        self._answer(201, api._add(int(listed[3]), body["body"]))
                    elif method == "PATCH" and edited:
                        wanted = int(edited[3])
                        for comment in (c for cs in api.comments.values() for c in cs):
                            if comment["id"] == wanted:
                                comment["body"] = body["body"]
                                self._answer(200, comment)
                                return
                        self._answer(404, {"message": "Not Found"})
                    else:
                        self._answer(404, {"message": "Not Found"})

            def _page(self, number: int, path: str, query: dict[str, list[str]]) -> None:
                per_page = min(int(query.get("per_page", ["30"])[0]), 100)
                page = int(query.get("page", ["1"])[0])
                items = api.comments.get(number, [])
                last = max(1, -(-len(items) // per_page))
                links = []
                if page < last:
                    links.append(
                        f'<{api.url}{path}?per_page={per_page}&page={page + 1}>; rel="next"'
                    )
                    links.append(f'<{api.url}{path}?per_page={per_page}&page={last}>; rel="last"')
                headers = {"Link": ", ".join(links)} if links else {}
                self._answer(200, items[(page - 1) * per_page : page * per_page], headers)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        return self

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


# --- the comment as GitHub shows it, for a screenshot ------------------------------------------

_INLINE = [
    (re.compile(r"\[([^\]]+)\]\(<([^>]+)>\)"), r'<a href="\2">\1</a>'),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<b>\1</b>"),
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
]
_CSS = """
body{font:14px -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1f2328;margin:16px;
max-width:900px}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #d1d9e0;
padding:4px 10px}th{background:#f6f8fa}code{background:#eff1f3;padding:1px 4px;border-radius:4px}
blockquote{color:#59636e;border-left:4px solid #d1d9e0;margin:0;padding:0 12px}svg{max-width:100%}
.box{border:1px solid #d1d9e0;border-radius:6px;padding:8px 16px}
"""


def _inline(text: str) -> str:
    for pattern, replacement in _INLINE:
        text = pattern.sub(replacement, text)
    return text.replace("\\|", "|")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def comment_html(markdown: str, svgs: list[str]) -> str:
    """The comment's markdown as a page: the subset the engine writes (headings, tables,
    lists, quotes, paragraphs, links, bold, code), each mermaid block as mermaid's own SVG."""
    out: list[str] = []
    lines = markdown.split("\n")
    drawn = iter(svgs)
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("```mermaid"):
            index += 1
            while lines[index] != "```":
                index += 1
            out.append(f"<div>{next(drawn)}</div>")
        elif line.startswith("|"):
            rows = []
            while index < len(lines) and lines[index].startswith("|"):
                rows.append(_cells(lines[index]))
                index += 1
            index -= 1
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
            body = "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                for row in rows[2:]
            )
            out.append(f"<table><tr>{head}</tr>{body}</table>")
        elif line.startswith("### "):
            out.append(f"<h3>{_inline(line[4:])}</h3>")
        elif line.startswith("- "):
            out.append(f"<ul><li>{_inline(line[2:])}</li></ul>")
        elif line.startswith("> "):
            out.append(f"<blockquote>{_inline(line[2:])}</blockquote>")
        elif line.startswith("<!--") or not line.strip():
            pass
        else:
            out.append(f"<p>{_inline(line)}</p>")
        index += 1
    body = "\n".join(out)
    return (
        f'<!doctype html><meta charset="utf-8"><style>{_CSS}</style><div class="box">{body}</div>'
    )
