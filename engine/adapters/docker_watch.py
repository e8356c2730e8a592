"""Following one running container from two threads: its output (attached before start),
and its memory and CPU figures (the daemon's stats stream)."""

from __future__ import annotations

import codecs
import json
import threading
from typing import Any, TypeAlias

import docker
import requests
from docker.types.daemon import CancellableStream

from engine.ports import LogSink

_MAX_LINE = 64 * 1024  # a longer run of text without a newline is passed on in pieces
_STATS_SILENCE = 10.0  # seconds without a stats frame that mean the stream is dead
_JOIN = 10.0  # output ends when its container does; this only bounds a sick daemon
# The stats stream opens this long after start: a step that ends sooner could never show
# two samples (they come a second apart), so it costs no connection and no daemon work.
STATS_DELAY_S = 0.5


# an attach: (stdout, stderr) pieces, closable
Attached: TypeAlias = "CancellableStream[tuple[bytes | None, bytes | None]]"


def open_attach(api: docker.APIClient, container: str) -> Attached:
    """An attach to the output of a container not started yet (stdout, stderr apart)."""
    # The SDK's `attach` inspects the container first to learn whether it has a tty;
    # the engine never gives one, so the request is made here without that call.
    raw: Any = api  # private helpers of the SDK's APIClient (stable since 3.x)
    response = raw._post(
        raw._url("/containers/{0}/attach", container),
        headers={"Connection": "Upgrade", "Upgrade": "tcp"},
        params={"logs": 0, "stdout": 1, "stderr": 1, "stream": 1},
        stream=True,
    )
    frames = raw._read_from_socket(response, True, False, demux=True)
    return CancellableStream(frames, response)


class Watch:
    """Follows one container from two threads: its output, and its stats.

    Output comes through an attach made before start, like `docker run`: nothing is
    missed, whereas docker 20.10's `logs --follow` drops what a step prints just before
    it exits (checked here: one run in two lost its last line). As with `docker run`, a
    slow `on_log` slows the step's writes rather than losing them.

    Stats: the daemon samples running containers once a second, and a container's
    cgroup (its figures) vanishes when it exits, so nothing can be read at the very end:
    the last sample is up to a second old and the figures are lower bounds. An attempt
    that saw a single sample (one shorter than one to two seconds) reports None rather
    than a figure from its first moments. The stream costs one idle connection and
    about 2 ms of client CPU per container (polling would cost a request per sample); it
    opens STATS_DELAY_S after start, so a step that ends sooner costs neither (measured
    at 4 steps at once: 9 % of a no-op step's time).
    """

    def __init__(self, api: docker.APIClient, container: str, on_log: LogSink) -> None:
        self._api, self._container, self._on_log = api, container, on_log
        self._samples, self._peak, self._cpu_ns = 0, 0, 0
        self._logs: threading.Thread | None = None
        self._attached: Attached | None = None
        self._stats = threading.Thread(target=self._follow_stats, daemon=True)
        self._exited = threading.Event()

    def attach(self, opened: Attached | None = None) -> None:
        """Before start (`opened`: an attach made earlier, when the container was staged).
        The attach ends when the container stops or goes."""
        self._attached = opened if opened is not None else open_attach(self._api, self._container)
        self._logs = threading.Thread(target=self._follow_logs, daemon=True)
        self._logs.start()

    def start(self) -> None:
        """After start."""
        self._stats.start()

    def join_logs(self, timeout: float = _JOIN) -> None:
        """Wait for the output to end; then close the attach, in case the daemon did not."""
        self._exited.set()  # called once the container stopped: no stats left to open for
        if self._logs is not None:
            self._logs.join(timeout)
            if self._logs.is_alive() and self._attached is not None:
                # seen when a container is removed while it starts: the attach hangs
                self._attached.close()
                self._logs.join(1.0)

    def join(self, *, stats: bool) -> None:
        """After removal: what remains to read is gone with the container."""
        self.join_logs(timeout=1.0)
        if stats and self._stats.ident is not None:
            self._stats.join(_STATS_SILENCE)  # the stats stream ends with the container

    def usage(self) -> tuple[int | None, float | None]:
        """(peak memory bytes, CPU seconds), or Nones when too short to tell."""
        if self._samples < 2:
            return None, None
        return self._peak, self._cpu_ns / 1e9

    def _follow_logs(self) -> None:
        # stdout and stderr each keep their own partial line
        out, err = _Lines(self._on_log), _Lines(self._on_log)
        try:
            for stdout, stderr in self._attached or ():
                if stdout:
                    out.feed(stdout)
                if stderr:
                    err.feed(stderr)
        except (OSError, requests.exceptions.RequestException):
            pass  # the container went away mid-stream (cancelled); keep what arrived
        finally:
            out.close()
            err.close()

    def _follow_stats(self) -> None:
        if self._exited.wait(STATS_DELAY_S):
            return
        api = self._api
        url = f"{api.base_url}/v{api.api_version}/containers/{self._container}/stats"
        try:
            # A live stream sends a frame every second. One orphaned by a removal racing
            # the start never ends: the read timeout ends it instead.
            with api.get(
                url, params={"stream": 1}, stream=True, timeout=_STATS_SILENCE
            ) as response:
                for line in response.iter_lines() if response.ok else ():
                    self._add(json.loads(line))
        except (requests.exceptions.RequestException, ValueError):
            pass  # no figures then; never a reason to fail an attempt

    def _add(self, frame: dict[str, Any]) -> None:
        memory = frame.get("memory_stats") or {}
        # cgroup v1 keeps a high-water mark; v2 only has current usage
        peak = memory.get("max_usage") or memory.get("usage")
        if not peak:
            return  # the empty frames the daemon sends once the container stopped
        cpu = (frame.get("cpu_stats") or {}).get("cpu_usage") or {}
        self._samples += 1
        self._peak = max(self._peak, int(peak))
        self._cpu_ns = max(self._cpu_ns, int(cpu.get("total_usage") or 0))


class _Lines:
    """Bytes of one output stream in, whole lines out (a last piece on close)."""

    def __init__(self, on_log: LogSink) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._on_log = on_log

    def feed(self, data: bytes) -> None:
        *lines, self._pending = (self._pending + self._decoder.decode(data)).split("\n")
        for line in lines:
            self._on_log(line + "\n")
        if len(self._pending) > _MAX_LINE:
            self._on_log(self._pending)
            self._pending = ""

    def close(self) -> None:
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if rest:
            self._on_log(rest)
