"""The Docker Engine API over its unix socket with http.client: image ids without the SDK.

A run that executes nothing (every step cached) still needs each step's image id for its
cache key; importing the docker SDK (and requests) for that one call costs ~0.3 s. Where
the daemon is on a unix socket (DOCKER_HOST unset or `unix://...`) the id comes from one
`GET /images/<ref>/json` here; other hosts (tcp with TLS, ssh, npipe) go through the SDK.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from urllib.parse import quote

DEFAULT_SOCKET = "/var/run/docker.sock"
_TIMEOUT_S = 60.0  # the daemon answers an inspect in milliseconds; this only bounds a sick one


class DaemonUnreachable(OSError):
    """The socket does not answer (missing, refused, or the daemon hung)."""


def unix_socket(env: dict[str, str] | os._Environ[str] | None = None) -> str | None:
    """The daemon's unix socket path as the SDK's `from_env` would pick it, None when it is
    another kind of host (or TLS is asked for): those go through the SDK."""
    env = os.environ if env is None else env
    host = env.get("DOCKER_HOST") or ""
    if not host:
        return DEFAULT_SOCKET
    if host.startswith("unix://"):
        path = host[len("unix://") :]
        return path or None
    return None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=_TIMEOUT_S)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def image_inspect(path: str, ref: str) -> dict[str, object] | None:
    """`GET /images/<ref>/json` on the socket at `path`: the image's inspect object, None
    when the daemon has no such image (404) or refuses the reference (400: the SDK path
    words that). Raises DaemonUnreachable when nothing answers."""
    connection = _UnixConnection(path)
    try:
        try:
            connection.request("GET", f"/images/{quote(ref, safe='/:@')}/json")
            response = connection.getresponse()
            body = response.read()
        except OSError as exc:  # FileNotFoundError, ConnectionRefusedError, timeouts
            raise DaemonUnreachable(f"unix://{path}: {exc}") from exc
        except http.client.HTTPException as exc:
            raise DaemonUnreachable(f"unix://{path}: {exc}") from exc
    finally:
        connection.close()
    if response.status != 200:
        return None
    data = json.loads(body)
    return data if isinstance(data, dict) else None
