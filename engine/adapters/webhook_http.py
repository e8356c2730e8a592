"""The webhook receiver's HTTP side: request checks and connection handling, no hook logic."""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import ThreadingMixIn
from typing import Any, Protocol

from engine.adapters.webhook_conns import DeadlineReader, WaitingRoom, raw_reply, refuse
from engine.errors import UsageError

MAX_BODY = 1 << 20  # 1 MiB
LINGER_BYTES = 4 * 1024**2  # drained after a refusal, at most
LINGER_S = 2.0
DELIVERY_HEADERS = ("x-sluice-delivery", "x-github-delivery")
_LENGTH = re.compile(r"[0-9]{1,16}")  # ASCII digits only: "²".isdigit(), and int() refuses it


@dataclass(frozen=True)
class Limits:
    """What one client may hold: time for a whole request, and connections served at once."""

    request_timeout: float = 30.0  # seconds for a request's line, headers and body together
    max_connections: int = 256  # served at once, a thread each; beyond: 503
    waiting_per_connection: int = 4  # silent connections that may wait, per one served


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
        self,
        address: tuple[str, int],
        receiver: Hooks,
        log: Callable[[str], None],
        limits: Limits,
    ) -> None:
        self.receiver, self.log, self.limits = receiver, log, limits
        self._served, self._count_lock = 0, threading.Lock()
        self._busy = raw_reply(
            503,
            "Service Unavailable",
            f"too many connections ({limits.max_connections} served at once); retry later",
            ("Retry-After", "5"),
        )
        self.waiting = WaitingRoom(  # first: a failed bind calls server_close
            limits.max_connections * limits.waiting_per_connection,
            limits.request_timeout,
            self._first_byte,
            log,
        )
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.waiting.add(request, client_address)  # no thread until it sends something

    def _first_byte(self, conn: socket.socket, address: Any, since: float) -> None:
        with self._count_lock:
            admitted = self._served < self.limits.max_connections
            self._served += admitted
        if not admitted:
            refuse(conn, self._busy)
            self.log(f"{address[0]} 503 (over {self.limits.max_connections} connections)")
            return
        conn.settimeout(self.limits.request_timeout)
        ThreadingMixIn.process_request(self, conn, address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._count_lock:
                self._served -= 1

    def server_close(self) -> None:
        super().server_close()
        self.waiting.close()


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sluice"
    server: _Server
    _started = 0.0
    _reader: DeadlineReader

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the socket's own reader: replaced by one that keeps the deadline
        self._reader = DeadlineReader(self.connection, self.server.limits.request_timeout)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        """One request, line, headers and body within the deadline: else 408 and close."""
        self._reader.start()
        self._started = time.monotonic()
        self.command, self.path, self.request_version = "", "", "HTTP/1.1"
        self.headers = http.client.HTTPMessage()
        super().handle_one_request()  # catches the TimeoutError, and closes the connection
        if self._reader.expired and self._reader.received:
            self.close_connection = True
            limit = self.server.limits.request_timeout
            self._reply(error(408, f"the request did not arrive whole within {limit:g} s"))

    def log_error(self, format: str, *args: Any) -> None:
        if not format.startswith("Request timed out"):  # said by the 408, or an idle close
            super().log_error(format, *args)

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
        except TimeoutError:
            raise  # past the deadline: handle_one_request answers 408
        except OSError as exc:  # the client went away
            self.close_connection = True
            self.server.log(f"{self.client_address[0]} POST {path}: body not received: {exc}")
            return
        if len(body) < refused:
            self.close_connection = True
            self._reply(error(400, f"the body ended after {len(body)} of {refused} bytes"))
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            reply = self.server.receiver.hook(event, body, headers)
        except Exception as exc:  # a bug must still be answered, and nothing was queued
            self.close_connection = True
            reply = error(500, f"internal error: {type(exc).__name__}")
        self._reply(reply)

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
        deadline = time.monotonic() + LINGER_S  # for the whole drain, not each recv
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            drained = 0
            while drained < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not (chunk := self.connection.recv(65536)):
                    break
                drained += len(chunk)
        except OSError:
            pass  # the client went away first: nothing left to protect

    def _length_refused(self) -> Reply | int:
        """The body's length, or the refusal, from the headers alone (nothing read, nothing hashed)."""
        if "Transfer-Encoding" in self.headers:
            return error(411, "send the body with a Content-Length, not chunked")
        given = {value.strip() for value in self.headers.get_all("Content-Length", [])}
        if not given:
            return error(411, "a Content-Length header is required")
        if len(given) > 1:  # RFC 9112 §6.3: which one frames the body is unknowable
            return error(400, f"conflicting Content-Length headers: {', '.join(sorted(given))}")
        raw = given.pop()
        if not _LENGTH.fullmatch(raw):
            return error(400, f"Content-Length {raw!r} is not a number of bytes (ASCII digits)")
        length = int(raw)
        if length > MAX_BODY:
            return error(413, f"the body is {length} bytes; at most {MAX_BODY}")
        return length

    def _reply(self, reply: Reply) -> None:
        data = json.dumps(reply.body).encode() + b"\n"
        try:
            self.connection.settimeout(self.server.limits.request_timeout)
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
        path = _printable(urllib.parse.urlsplit(self.path).path) or "-"
        self.server.log(
            f"{self.client_address[0]} {self.command or '-'} {path} {reply.status} {took:.1f}ms{extra}"
        )

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # `_reply` writes the request's one line

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log(f"{self.client_address[0]} {_printable(format % args)}")


def _printable(text: str, limit: int = 300) -> str:
    """Client-controlled text made safe for a one-line log: no control characters, bounded."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def make_server(
    receiver: Hooks,
    host: str,
    port: int,
    log: Callable[[str], None],
    limits: Limits | None = None,
) -> ThreadingHTTPServer:
    """The HTTP server over `receiver`, bound (port 0: a free one) but not serving yet."""
    server_class = _Server6 if ":" in host else _Server
    try:
        return server_class((host, port), receiver, log, limits or Limits())
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
