"""ContainerRuntime over the Docker Engine API (docker SDK): one fresh container per attempt."""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import requests
from docker.models.containers import Container

from engine.adapters.docker_watch import Watch
from engine.local import archives, disk
from engine.ports import (
    LABEL_ENGINE,
    LABEL_RUN,
    BuildRequest,
    ContainerResult,
    ContainerSpec,
    ImageMissing,
    LogSink,
    RuntimeUnavailable,
    Transfer,
)

_DAEMON_HINT = "start the Docker daemon, or run scripts/docker-up.sh"

# How long `gc` leaves another host's stopped container alone: its engine may be alive,
# between creating and starting it, or between its exit and its copy-out.
FOREIGN_GRACE_S = 6 * 3600.0


def _image_hint(ref: str) -> str:
    """How to get a missing image, in the user's own repository."""
    return (
        f"pull it where a registry answers (`docker pull {ref}`), build it in your repository "
        f"(`docker build -t {ref} .`), or let Sluice build it: "
        "image: {build: {context: ., dockerfile: Dockerfile}}"
    )


_MAX_WAIT = 30 * 86400.0  # sockets reject absurd timeouts; no step runs a month


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
        self.foreign_grace_s = FOREIGN_GRACE_S

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
                raise ImageMissing(
                    f"image {ref!r}: {_explain(exc)}", hint=_image_hint(ref)
                ) from exc
            try:  # once: where no registry answers this fails within a second
                return str(self.client.images.pull(ref).id)
            except docker.errors.APIError as exc:
                raise ImageMissing(
                    f"image {ref!r} is not present locally and could not be pulled: "
                    f"{_explain(exc)}",
                    hint=_image_hint(ref),
                ) from exc

    def build_image(self, build: BuildRequest) -> str:
        """Build `build.context` as `build.tag`, unless that tag exists; return its id."""
        tag = build.tag
        with _daemon_errors():
            try:
                return str(self.client.images.get(tag).id)
            except docker.errors.ImageNotFound:
                pass
            except docker.errors.APIError as exc:
                raise ImageBuildFailed(f"image {tag!r}: {_explain(exc)}") from exc
            try:
                image, _ = self.client.images.build(
                    path=str(build.context),
                    dockerfile=build.dockerfile,
                    tag=tag,
                    buildargs=build.args,
                    target=build.target,
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
                    f"building image {tag!r} from {build.context / build.dockerfile} failed: {exc}"
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
                error = f"image {spec.image!r} not found locally; {_image_hint(spec.image)}"
                return ContainerResult(exit_code=None, error=error)
            except docker.errors.APIError as exc:
                return ContainerResult(exit_code=None, error=f"docker refused: {_explain(exc)}")
            watch = Watch(self.client.api, container, on_log)
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
        watch: Watch,
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
        """Remove containers left by dead engines on this host, and other hosts' stale ones.

        A stopped container whose engine is alive on this host is kept: it may be between
        its exit and its copy-out. So is another host's (jobs mode runs many engines on one
        daemon, each in its own container, whose liveness this host cannot see), until it
        has been there `foreign_grace_s`.
        """
        host = socket.gethostname()
        removed: list[str] = []
        now = time.time()
        with _daemon_errors():
            for container in self._sluice_containers(None):
                labels = container.attrs.get("Labels") or {}
                engine_host, _, pid = str(labels.get(LABEL_ENGINE, "")).rpartition(":")
                local = engine_host == host and pid.isdigit()
                stopped = container.attrs.get("State") != "running"
                created = container.attrs.get("Created")
                age = now - created if isinstance(created, int | float) else float("inf")
                if local:
                    gone = not _pid_alive(int(pid))
                else:
                    gone = stopped and age >= self.foreign_grace_s
                if (everything or gone) and _remove(container):
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
        # setuid binaries and file capabilities cannot raise a step's privileges
        "security_opt": ["no-new-privileges:true"],
        "pids_limit": spec.pids_limit,
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
    if spec.capabilities is not None:
        args["cap_drop"], args["cap_add"] = ["ALL"], list(spec.capabilities)
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
        except OSError as exc:  # the engine's disk, not the step: a full one stops the run
            local.unlink(missing_ok=True)
            full = disk.full_disk(exc, local.parent, f"{path} (copied out)")
            if full is None:
                raise
            raise full from None
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
