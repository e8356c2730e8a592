"""The webhook server's connections: a deadline for each whole request, and a waiting room.

A connection gets a thread only once it has sent something, and only while fewer than
`max_connections` are being served; silent ones wait here, threadless, each until the
request deadline, the oldest closed first when too many wait. So idle connections cost a
file descriptor each, not a thread, and cannot keep `/healthz` from answering.
"""

from __future__ import annotations

import contextlib
import io
import json
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.core.suggest import counted

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class DeadlineReader(io.RawIOBase):
    """A socket's reads, each allowed only what is left of the current request's deadline.

    A per-`recv` timeout lets a client that sends a byte now and then hold a connection
    for ever (slow-loris); this one ends the whole request (line, headers, body) on time.
    """

    def __init__(self, sock: socket.socket, limit_s: float) -> None:
        super().__init__()
        self.sock, self.limit_s = sock, limit_s
        self.deadline = time.monotonic() + limit_s
        self.received = 0  # bytes of the current request
        self.expired = False

    def start(self, at: float | None = None) -> None:
        """A new request: its deadline is `limit_s` from `at` (default: now)."""
        self.deadline = (time.monotonic() if at is None else at) + self.limit_s
        self.received, self.expired = 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        left = self.deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError("the request deadline passed")
            self.sock.settimeout(left)
            count = self.sock.recv_into(buffer)
        except TimeoutError:
            self.expired = True
            raise
        self.received += count
        return count


def raw_reply(status: int, reason: str, message: str, *headers: tuple[str, str]) -> bytes:
    """A whole JSON error response, for a connection that no handler will serve."""
    body = json.dumps({"error": message}).encode() + b"\n"
    lines = [f"HTTP/1.1 {status} {reason}", "Server: sluice", "Content-Type: application/json"]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def refuse(conn: socket.socket, reply: bytes) -> None:
    """Send `reply` without blocking, then close; never waits on the client."""
    try:
        conn.setblocking(False)
        conn.send(reply)
        # What the client sent already: closing on unread bytes would reset the
        # connection, and the reset could destroy the reply before it is read.
        with contextlib.suppress(OSError):
            conn.recv(65536)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the client is gone
    finally:
        conn.close()


_CROWDED = raw_reply(
    503, "Service Unavailable", "too many connections waiting; retry later", ("Retry-After", "5")
)


class WaitingRoom:
    """Accepted connections that have sent nothing yet; `ready` gets each at its first byte."""

    def __init__(
        self,
        capacity: int,
        limit_s: float,
        ready: Callable[[socket.socket, Any, float], None],
        log: Callable[[str], None],
    ) -> None:
        self.capacity, self.limit_s, self.ready, self.log = capacity, limit_s, ready, log
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._lock = threading.Lock()
        self._added: list[tuple[socket.socket, Any, float]] = []
        self._waiting: OrderedDict[socket.socket, tuple[Any, float]] = OrderedDict()
        self._evicted = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="sluice-waiting", daemon=True)
        self._thread.start()

    def add(self, conn: socket.socket, address: Any) -> None:
        with self._lock:
            self._added.append((conn, address, time.monotonic()))
        with contextlib.suppress(OSError):  # a full buffer: a wake-up is pending already
            self._wake_w.send(b"\0")

    def close(self) -> None:
        """Stop waiting; every waiting connection is closed."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        self._thread.join()
        with self._lock:
            added, self._added = self._added, []
        for conn in [*self._waiting, *(c for c, _, _ in added)]:
            conn.close()
        self._waiting.clear()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _loop(self) -> None:
        logged = time.monotonic()
        while not self._closed:
            for key, _ in self._selector.select(timeout=0.25):
                if key.fileobj is self._wake_r:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                    continue
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                self._selector.unregister(conn)
                address, since = self._waiting.pop(conn)
                try:
                    self.ready(conn, address, since)
                except Exception as exc:  # e.g. no thread to be had: this loop must live on
                    self.log(f"{address[0]}: connection dropped: {exc}")
                    conn.close()
            self._admit()
            now = time.monotonic()
            while self._waiting:  # oldest first: closed at the deadline, silently
                conn, (_, since) = next(iter(self._waiting.items()))
                if since + self.limit_s > now:
                    break
                self._drop(conn)
            if self._evicted and now - logged >= 1.0:
                self.log(
                    f"{counted(self._evicted, 'silent connection')} closed to make room "
                    f"(at most {self.capacity} wait)"
                )
                self._evicted, logged = 0, now

    def _admit(self) -> None:
        with self._lock:
            added, self._added = self._added, []
        for conn, address, since in added:
            try:
                self._selector.register(conn, selectors.EVENT_READ)
            except (OSError, ValueError):  # closed already
                conn.close()
                continue
            self._waiting[conn] = (address, since)
            if len(self._waiting) > self.capacity:
                # Too many silent connections: the oldest makes room for the newest.
                oldest = next(iter(self._waiting))
                self._waiting.pop(oldest)
                self._selector.unregister(oldest)
                refuse(oldest, _CROWDED)
                self._evicted += 1

    def _drop(self, conn: socket.socket) -> None:
        self._waiting.pop(conn)
        self._selector.unregister(conn)
        conn.close()
