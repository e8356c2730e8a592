"""The webhook receiver's HTTP side: request checks and connection handling, no hook logic."""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from engine.errors import UsageError

MAX_BODY = 1 << 20  # 1 MiB
LINGER_BYTES = 4 * 1024**2  # drained after a refusal, at most
LINGER_S = 2.0
DELIVERY_HEADERS = ("x-sluice-delivery", "x-github-delivery")


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


def error(status: int, message: str, *headers: tuple[str, str]) -> Reply:
    return Reply(status, {"error": message}, headers)


class Hooks(Protocol):
    """What the HTTP layer hands requests to (engine.app.webhooks.Receiver)."""

    def hook(self, event: str, body: bytes, headers: Mapping[str, str]) -> Reply: ...

    def run(self, run_id: str) -> Reply: ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the default 5 drops connections in a burst of deliveries

    def __init__(
        self, address: tuple[str, int], receiver: Hooks, log: Callable[[str], None]
    ) -> None:
        self.receiver, self.log = receiver, log
        super().__init__(address, _Handler)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sluice"
    timeout = 30  # a client that stalls mid-request does not hold its thread for ever
    server: _Server
    _started = 0.0

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        self._started = time.monotonic()
        if self.headers.get("Content-Length", "0").strip() != "0":
            self.close_connection = True  # a body is not read: it must not pass for a request
        if path == "/healthz":
            self._reply(Reply(200, {"ok": True}))
        elif path.startswith("/runs/"):
            self._reply(self.server.receiver.run(path.removeprefix("/runs/")))
        else:
            self._reply(error(404, f"no such endpoint: GET {path}"))

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        event = urllib.parse.unquote(path.removeprefix("/hooks/"))
        self._started = time.monotonic()
        if not path.startswith("/hooks/") or not event or "/" in event:
            self.close_connection = True  # the body is not read: it must not pass for a request
            self._reply(error(404, f"no such endpoint: POST {path}"))
            return
        refused = self._length_refused()
        if isinstance(refused, Reply):
            self.close_connection = True
            self._reply(refused)
            self._linger()
            return
        try:
            body = self.rfile.read(refused)
        except OSError as exc:  # the client stalled past `timeout`, or went away
            self.close_connection = True
            self.server.log(f"{self.client_address[0]} POST {path}: body not received: {exc}")
            return
        if len(body) < refused:
            self.close_connection = True
            self._reply(error(400, f"the body ended after {len(body)} of {refused} bytes"))
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        self._reply(self.server.receiver.hook(event, body, headers))

    def handle_expect_100(self) -> bool:
        """`Expect: 100-continue`: refuse a body by its length before the client sends it."""
        refused = self._length_refused() if self.command == "POST" else 0
        if isinstance(refused, Reply):
            self._started = time.monotonic()
            self.close_connection = True
            self._reply(refused)
            return False
        return super().handle_expect_100()

    def _linger(self) -> None:
        """Read and drop what the client still sends (bounded) before the socket closes.

        A refused body is never read; closing with unread data would reset the connection,
        and a reset can destroy the reply the client has not read yet (a lingering close,
        as nginx does).
        """
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_S)
            drained = 0
            while drained < LINGER_BYTES and (chunk := self.connection.recv(65536)):
                drained += len(chunk)
        except OSError:
            pass  # the client went away first: nothing left to protect

    def _length_refused(self) -> Reply | int:
        """The body's length, or the refusal, from the headers alone (nothing read, nothing hashed)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return error(411, "send the body with a Content-Length, not chunked")
        raw = self.headers.get("Content-Length")
        if raw is None:
            return error(411, "a Content-Length header is required")
        if not raw.strip().isdigit():
            return error(400, f"Content-Length {raw!r} is not a number of bytes")
        length = int(raw)
        if length > MAX_BODY:
            return error(413, f"the body is {length} bytes; at most {MAX_BODY}")
        return length

    def _reply(self, reply: Reply) -> None:
        data = json.dumps(reply.body).encode() + b"\n"
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client is gone; its log line still says why
        took = (time.monotonic() - self._started) * 1000
        delivery = next((self.headers[h] for h in DELIVERY_HEADERS if h in self.headers), None)
        extra = f" delivery={_printable(delivery)}" if delivery else ""
        if "run_ids" in reply.body:
            extra += " runs=" + ",".join(reply.body["run_ids"])
        elif reply.status >= 400 and reply.status != 404:
            extra += f" ({_printable(reply.body['error'])})"
        path = _printable(urllib.parse.urlsplit(self.path).path)
        self.server.log(
            f"{self.client_address[0]} {self.command} {path} {reply.status} {took:.1f}ms{extra}"
        )

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # `_reply` writes the request's one line

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log(f"{self.client_address[0]} {_printable(format % args)}")


def _printable(text: str, limit: int = 300) -> str:
    """Client-controlled text made safe for a one-line log: no control characters, bounded."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def make_server(
    receiver: Hooks, host: str, port: int, log: Callable[[str], None]
) -> ThreadingHTTPServer:
    """The HTTP server over `receiver`, bound (port 0: a free one) but not serving yet."""
    server_class = _Server6 if ":" in host else _Server
    try:
        return server_class((host, port), receiver, log)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
