"""The part of GitHub's REST API a workflow's jobs ask about their own run, on loopback:
GET /repos/{owner}/{repo}/actions/runs/{run_id}/approvals answers the environment reviews
the emulator's reviewer gave (GitHub's shape: state, environments, user.login, comment)."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_APPROVALS = re.compile(r"^/repos/[^/]+/[^/]+/actions/runs/(\d+)/approvals$")


@dataclass
class GitHubApi:
    url: str = ""
    reviews: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def review(self, run_id: int, environment: str, decision: Any) -> None:
        entry = {
            "state": "approved" if decision.approve else "rejected",
            "environments": [{"name": environment}],
            "user": {"login": decision.by},
            "comment": "",
        }
        with self._lock:
            self.reviews.setdefault(run_id, []).append(entry)

    def start(self) -> GitHubApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with api._lock:
                    api.requests.append(("GET", self.path))
                    found = _APPROVALS.match(self.path.split("?")[0])
                    body = json.dumps(api.reviews.get(int(found[1]), [])) if found else None
                data = (body or json.dumps({"message": "Not Found"})).encode()
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
