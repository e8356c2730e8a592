"""ContainerRuntime over the Docker Engine API (docker SDK): one fresh container per attempt."""

from __future__ import annotations

import codecs
import dataclasses
import json
import math
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import requests
from docker.models.containers import Container
from docker.types.daemon import CancellableStream

from engine.local import archives
from engine.ports import (
    LABEL_ENGINE,
    LABEL_RUN,
    ContainerResult,
    ContainerSpec,
    ImageMissing,
    LogSink,
    RuntimeUnavailable,
    Transfer,
)

_DAEMON_HINT = "start the Docker daemon, or run scripts/docker-up.sh"
_IMAGE_HINT = "build it, or on machines without a registry run scripts/build-images.sh"
_MAX_LINE = 64 * 1024  # a longer run of text without a newline is passed on in pieces
_MAX_WAIT = 30 * 86400.0  # sockets reject absurd timeouts; no step runs a month
_STATS_SILENCE = 10.0  # seconds without a stats frame that mean the stream is dead
_JOIN = 10.0  # output ends when its container does; this only bounds a sick daemon


class ImageBuildFailed(ImageMissing):
    """Building a step's image failed; the message ends with the last lines of the build log."""


@contextmanager
def _daemon_errors() -> Iterator[None]:
    """Translate a lost connection to the daemon into the engine's own error."""
    try:
        yield
    except requests.exceptions.ConnectionError as exc:
        raise RuntimeUnavailable(
            f"the Docker daemon does not answer: {exc}", hint=_DAEMON_HINT
        ) from exc


class DockerRuntime:
    """Runs each attempt in a fresh container through the Docker Engine API.

    Each running attempt holds three connections (wait, logs, stats): give
    `max_pool_size` at least three times the number of parallel steps.
    """

    def __init__(
        self, client: docker.DockerClient | None = None, *, max_pool_size: int = 32
    ) -> None:
        self._client = client
        self._max_pool_size = max_pool_size
        self._lock = threading.Lock()
        self._diff_is_cheap: bool | None = None

    def _build_network(self) -> str | None:
        """`SLUICE_BUILD_NETWORK`, else Docker's default where a bridge exists, else none.

        A Dockerfile that installs packages needs the network on a CI runner; a daemon
        started with `--bridge=none` (as on machines with no registry) cannot give one.
        """
        chosen = os.environ.get("SLUICE_BUILD_NETWORK")
        if chosen:
            return chosen
        return None if self.client.networks.list(names=["bridge"]) else "none"

    def diff_is_cheap(self) -> bool:
        """Whether `container.diff()` only walks the container's own layer (overlay2)."""
        if self._diff_is_cheap is None:
            with _daemon_errors():
                self._diff_is_cheap = self.client.info().get("Driver") == "overlay2"
        return self._diff_is_cheap

    @property
    def client(self) -> docker.DockerClient:
        """The docker client, connected on first use (the CLI must start fast)."""
        with self._lock:
            if self._client is None:
                try:
                    self._client = docker.from_env(max_pool_size=self._max_pool_size)
                except docker.errors.DockerException as exc:
                    raise RuntimeUnavailable(
                        f"cannot reach the Docker daemon: {exc}", hint=_DAEMON_HINT
                    ) from exc
            return self._client

    def image_id(self, ref: str) -> str:
        """The local image id of `ref`; one pull attempt when it is missing."""
        with _daemon_errors():
            try:
                return str(self.client.images.get(ref).id)
            except docker.errors.ImageNotFound:
                pass
            except docker.errors.APIError as exc:  # e.g. an invalid reference
                raise ImageMissing(f"image {ref!r}: {_explain(exc)}", hint=_IMAGE_HINT) from exc
            try:  # once: where no registry answers this fails within a second
                return str(self.client.images.pull(ref).id)
            except docker.errors.APIError as exc:
                raise ImageMissing(
                    f"image {ref!r} is not present locally and could not be pulled: "
                    f"{_explain(exc)}",
                    hint=_IMAGE_HINT,
                ) from exc

    def build_image(
        self,
        context: Path,
        dockerfile: str,
        tag: str,
        buildargs: dict[str, str],
        target: str | None,
    ) -> str:
        """Build `context` as `tag` with no network, unless `tag` exists; return its id."""
        with _daemon_errors():
            try:
                return str(self.client.images.get(tag).id)
            except docker.errors.ImageNotFound:
                pass
            except docker.errors.APIError as exc:
                raise ImageBuildFailed(f"image {tag!r}: {_explain(exc)}") from exc
            try:
                image, _ = self.client.images.build(
                    path=str(context),
                    dockerfile=dockerfile,
                    tag=tag,
                    buildargs=buildargs,
                    target=target,
                    network_mode=self._build_network(),
                    rm=True,
                    forcerm=True,
                )
            except (docker.errors.BuildError, docker.errors.APIError) as exc:
                log = getattr(exc, "build_log", None) or []
                text = "".join(
                    str(entry.get("stream") or entry.get("error") or "") for entry in log
                )
                raise ImageBuildFailed(
                    f"building image {tag!r} from {context / dockerfile} failed: {exc}"
                    + "".join(f"\n  | {line}" for line in text.strip().splitlines()[-20:]),
                    hint="fix the Dockerfile or the build context (SLUICE_BUILD_NETWORK sets the build network)",
                ) from exc
            return str(image.id)

    def run(
        self, spec: ContainerSpec, transfer: Transfer, *, on_log: LogSink, cancel: threading.Event
    ) -> ContainerResult:
        """Create, copy in, start, stream logs, wait, copy out, remove: one attempt.

        `on_log` gets each line with its newline (the last one may lack it), from a
        helper thread, always before this returns. Step-level problems come back as
        `error`; only a daemon that stops answering raises (RuntimeUnavailable).
        """
        if cancel.is_set():
            return _cancelled()
        with _daemon_errors():
            try:
                container = self.client.containers.create(**_create_args(spec))
            except docker.errors.ImageNotFound:
                error = f"image {spec.image!r} not found locally; {_IMAGE_HINT}"
                return ContainerResult(exit_code=None, error=error)
            except docker.errors.APIError as exc:
                return ContainerResult(exit_code=None, error=f"docker refused: {_explain(exc)}")
            watch = _Watch(self.client.api, container, on_log)
            result = None
            try:
                result = self._attempt(
                    container, spec, transfer, cancel, watch, self.diff_is_cheap()
                )
            except docker.errors.APIError as exc:
                result = _api_failure(exc, cancel)
            finally:
                _remove(container)
                # usage only counts for an attempt that ran to its end
                watch.join(stats=result is not None and result.exit_code is not None)
        if result.exit_code is None:
            return result
        peak, cpu_s = watch.usage()
        return dataclasses.replace(result, max_memory_bytes=peak, cpu_s=cpu_s)

    @staticmethod
    def _attempt(
        container: Container,
        spec: ContainerSpec,
        transfer: Transfer,
        cancel: threading.Event,
        watch: _Watch,
        diff_is_cheap: bool,
    ) -> ContainerResult:
        watch.attach()
        if transfer.put:
            container.put_archive("/", archives.concatenated(transfer.put))
        if cancel.is_set():
            return _cancelled()
        container.start()
        watch.start()
        if cancel.is_set():
            return _cancelled()
        timed_out = False
        try:
            container.wait(timeout=min(max(spec.timeout, 0.001), _MAX_WAIT))
        except requests.exceptions.RequestException:
            # The SDK's way of saying the timeout passed (a read timeout, sometimes wrapped
            # in ConnectionError); a daemon that died instead fails this inspect.
            container.reload()
            if container.attrs["State"]["Running"]:
                timed_out = True
                container.stop(timeout=math.ceil(spec.grace))  # SIGTERM, SIGKILL after grace
        if cancel.is_set():
            return _cancelled()
        container.reload()
        state = container.attrs["State"]
        watch.join_logs()
        wanted = (
            transfer.fetch
            if state["ExitCode"] == 0 and not timed_out
            else transfer.fetch_on_failure
        )
        if wanted and diff_is_cheap:
            wanted = _changed(container, wanted)
        fetched, fetch_error = _fetch(container, wanted, transfer.max_fetch_bytes)
        return ContainerResult(
            exit_code=int(state["ExitCode"]),
            timed_out=timed_out,
            oom_killed=bool(state.get("OOMKilled")),
            fetched=fetched,
            fetch_error=fetch_error,
        )

    def kill_run(self, run_id: str) -> int:
        """Kill and remove every container of the run; return how many were there."""
        removed = 0
        with _daemon_errors():
            for container in self._sluice_containers(run_id):
                removed += _remove(container)
        return removed

    def gc(self, *, everything: bool = False) -> list[str]:
        """Remove containers left by dead engines on this host, and stopped ones.

        A stopped container whose engine is alive on this host is kept: it may be
        between its exit and its copy-out.
        """
        host = socket.gethostname()
        removed: list[str] = []
        with _daemon_errors():
            for container in self._sluice_containers(None):
                labels = container.attrs.get("Labels") or {}
                engine_host, _, pid = str(labels.get(LABEL_ENGINE, "")).rpartition(":")
                local = engine_host == host and pid.isdigit()
                alive = local and _pid_alive(int(pid))
                stopped = container.attrs.get("State") != "running"
                if (everything or (local and not alive) or (stopped and not alive)) and _remove(
                    container
                ):
                    names = container.attrs.get("Names") or [container.id]
                    removed.append(str(names[0]).lstrip("/"))
        return removed

    def _sluice_containers(self, run_id: str | None) -> list[Container]:
        label = LABEL_RUN if run_id is None else f"{LABEL_RUN}={run_id}"
        # sparse: one list call, no inspect per container (which races with removal)
        return self.client.containers.list(all=True, filters={"label": label}, sparse=True)


def _create_args(spec: ContainerSpec) -> dict[str, Any]:
    labels = dict(spec.labels)
    # who made it, so `gc` can tell whether its engine is still alive
    labels.setdefault(LABEL_ENGINE, f"{socket.gethostname()}:{os.getpid()}")
    args: dict[str, Any] = {
        "image": spec.image,
        "command": spec.command,
        "environment": dict(spec.env),  # exactly the step's variables, nothing of ours
        "labels": labels,
        "working_dir": spec.working_dir,
        "network_mode": spec.network,
        "privileged": False,
        "init": True,  # a real PID 1: signals forwarded, zombies reaped
        "nano_cpus": spec.nano_cpus,
    }
    if spec.command:
        # `run`/`command` replace the image's ENTRYPOINT too (as a Kubernetes `command`
        # does): `sh -c ...` must not become arguments of an entrypoint such as the engine
        # image's. Without either, the image runs its own entrypoint and command.
        args["entrypoint"], args["command"] = spec.command[:1], spec.command[1:]
    if spec.mem_limit is not None:
        # Equal limits leave no swap, so exceeding the limit is an OOM kill, not a crawl.
        args["mem_limit"] = spec.mem_limit
        args["memswap_limit"] = spec.mem_limit
    if spec.gpus:
        args["device_requests"] = [
            docker.types.DeviceRequest(count=spec.gpus, capabilities=[["gpu"]])
        ]
    return args


def _cancelled() -> ContainerResult:
    return ContainerResult(exit_code=None, cancelled=True)


def _api_failure(exc: docker.errors.APIError, cancel: threading.Event) -> ContainerResult:
    if cancel.is_set():  # kill_run removed it under us
        return _cancelled()
    if isinstance(exc, docker.errors.NotFound):
        error = "the container was removed while it ran (docker rm or sluice gc?)"
        return ContainerResult(exit_code=None, error=error)
    return ContainerResult(exit_code=None, error=f"docker: {_explain(exc)}")


class _Watch:
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
    about 2 ms of client CPU per container; polling would cost a request per sample.
    """

    def __init__(self, api: docker.APIClient, container: Container, on_log: LogSink) -> None:
        self._api, self._container, self._on_log = api, container, on_log
        self._samples, self._peak, self._cpu_ns = 0, 0, 0
        self._logs: threading.Thread | None = None
        self._attached: CancellableStream[tuple[bytes | None, bytes | None]] | None = None
        self._stats = threading.Thread(target=self._follow_stats, daemon=True)

    def attach(self) -> None:
        """Before start. The attach ends when the container stops or goes."""
        self._attached = self._container.attach(stream=True, demux=True, logs=False)
        self._logs = threading.Thread(target=self._follow_logs, daemon=True)
        self._logs.start()

    def start(self) -> None:
        """After start."""
        self._stats.start()

    def join_logs(self, timeout: float = _JOIN) -> None:
        """Wait for the output to end; then close the attach, in case the daemon did not."""
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
        api = self._api
        url = f"{api.base_url}/v{api.api_version}/containers/{self._container.id}/stats"
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


def _changed(container: Container, wanted: dict[str, Path]) -> dict[str, Path]:
    """The wanted paths holding anything: one cheap `diff` can save a ~70 ms archive call."""
    changes = container.diff() or []
    paths = [str(change.get("Path", "")) for change in changes]
    return {
        k: v for k, v in wanted.items() if any(p.startswith(k.rstrip("/") + "/") for p in paths)
    }


def _fetch(
    container: Container, wanted: dict[str, Path], limit: int
) -> tuple[dict[str, Path], str | None]:
    """Stream each wanted path's tar to its local file, within `limit` bytes in all."""
    fetched: dict[str, Path] = {}
    budget = limit
    for path, local in wanted.items():
        try:
            stream, _ = container.get_archive(path, chunk_size=1024 * 1024)
        except docker.errors.NotFound:
            continue  # the step did not make it
        except docker.errors.APIError as exc:
            return fetched, f"copying {path} out failed: {_explain(exc)}"
        local.parent.mkdir(parents=True, exist_ok=True)
        error = None
        try:
            with local.open("wb") as out:
                for chunk in stream:
                    budget -= len(chunk)
                    if budget < 0:
                        error = f"{path}: more than {limit} bytes to copy out"
                        break
                    out.write(chunk)
        except requests.exceptions.RequestException as exc:
            error = f"copying {path} out broke off: {exc}"
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # drop the rest of an oversize stream
        if error is not None:
            local.unlink(missing_ok=True)
            return fetched, error
        fetched[path] = local
    return fetched, None


def _remove(container: Container) -> bool:
    """Kill and remove; False if it was gone already (or the daemon would not)."""
    try:
        container.remove(force=True)
    except docker.errors.APIError as exc:
        # 409: another thread is removing it (the worker and kill_run race on cancel).
        # Any other refusal leaves it to `sluice gc`: never a reason to lose a result.
        return exc.status_code == 409
    except requests.exceptions.ConnectionError:
        return False  # the daemon is gone; the caller reports that, not this
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)
