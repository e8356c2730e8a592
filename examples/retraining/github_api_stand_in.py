"""A stand-in for the small part of GitHub's REST API that a preview's comment uses, on
loopback, so that scenario.sh can show the comment without GitHub.

    python3 github_api_stand_in.py DIR

It serves one pull request's issue comments as GitHub does: list (GET, one page), create
(POST, 201) and edit (PATCH, 200). Once listening, it writes its address to DIR/url (point
GITHUB_API_URL at it); it keeps every comment's latest body in DIR/comment-<id>.md and one
line per request in DIR/requests.log ("POST /repos/o/r/issues/7/comments"). It runs until
it is stopped (SIGTERM). Any token is accepted; it never leaves this machine.
"""

from __future__ import annotations

import json
import re
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

COMMENTS = re.compile(r"^/repos/[^/]+/[^/]+/issues/(\d+)/comments$")
ONE_COMMENT = re.compile(r"^/repos/[^/]+/[^/]+/issues/comments/(\d+)$")


def serve(folder: Path) -> None:
    comments: dict[int, dict[str, Any]] = {}  # id -> comment (all on one pull request here)

    class Handler(BaseHTTPRequestHandler):
        def answer(self, status: int, data: Any) -> None:
            raw = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def handle_one(self, method: str) -> None:
            path = self.path.split("?", 1)[0]
            with (folder / "requests.log").open("a") as log:
                log.write(f"{method} {path}\n")
            size = int(self.headers.get("Content-Length") or 0)
            sent = json.loads(self.rfile.read(size)) if size else {}
            listed, edited = COMMENTS.match(path), ONE_COMMENT.match(path)
            if method == "GET" and listed:
                self.answer(200, list(comments.values()))
            elif method == "POST" and listed:
                comment_id = 1001 + len(comments)
                comments[comment_id] = {
                    "id": comment_id,
                    "user": {"login": "github-actions[bot]", "type": "Bot"},
                    "html_url": f"https://github.com/pr/{listed[1]}#issuecomment-{comment_id}",
                }
                self.keep(comment_id, sent["body"], 201)
            elif method == "PATCH" and edited and int(edited[1]) in comments:
                self.keep(int(edited[1]), sent["body"], 200)
            else:
                self.answer(404, {"message": "Not Found"})

        def keep(self, comment_id: int, body: str, status: int) -> None:
            comments[comment_id]["body"] = body
            (folder / f"comment-{comment_id}.md").write_text(body)
            self.answer(status, comments[comment_id])

        def do_GET(self) -> None:
            self.handle_one("GET")

        def do_POST(self) -> None:
            self.handle_one("POST")

        def do_PATCH(self) -> None:
            self.handle_one("PATCH")

        def log_message(self, format: str, *args: object) -> None:
            pass  # requests.log has them

    server = HTTPServer(("127.0.0.1", 0), Handler)
    address = f"http://127.0.0.1:{server.server_address[1]}"
    (folder / "url.tmp").write_text(address + "\n")
    (folder / "url.tmp").rename(folder / "url")  # whole, or not there yet
    server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python3 github_api_stand_in.py DIR  (an existing folder)")
    serve(Path(sys.argv[1]))
