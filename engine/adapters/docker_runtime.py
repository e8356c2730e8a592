"""ContainerRuntime over the Docker Engine API: one fresh container per attempt.

The docker SDK (and requests) load only when a container runs, an image is built or
pulled, or containers are listed: a run whose steps are all cached reads image ids over
the unix socket (adapters/docker_socket.py) and never imports them.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.adapters import docker_socket
from engine.ports import (
    LABEL_ENGINE,
    LABEL_RUN,
    LABEL_STEP,
    BuildRequest,
    ContainerResult,
    ContainerSpec,
    ImageMissing,
    LogSink,
    RuntimeUnavailable,
    Transfer,
)

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

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


class ImageBuildFailed(ImageMissing):
    """Building a step's image failed; the message ends with the last lines of the build log."""


@contextmanager
def _daemon_errors() -> Iterator[None]:
    """Translate a lost connection to the daemon into the engine's own error."""
    import requests  # lazy: loaded with the SDK, only where a call goes through it

    try:
        yield
    except requests.exceptions.ConnectionError as exc:
        raise RuntimeUnavailable(
            f"the Docker daemon does not answer: {exc}", hint=_DAEMON_HINT
        ) from exc


def _engine_labels(spec: ContainerSpec) -> dict[str, str]:
    labels = dict(spec.labels)
    # who made it, so `gc` can tell whether its engine is still alive
    labels.setdefault(LABEL_ENGINE, f"{socket.gethostname()}:{os.getpid()}")
    return labels


class DockerRuntime:
    """Runs each attempt in a fresh container through the Docker Engine API.

    Each running attempt holds three connections (wait, logs, stats): give
    `max_pool_size` at least three times the number of parallel steps.
    """

    def __init__(
        self, client: docker.DockerClient | None = None, *, max_pool_size: int = 32
    ) -> None:
        self._client = client
        if client is not None:
            _no_proxy_lookups(client)
        self._max_pool_size = max_pool_size
        self._lock = threading.Lock()
        self._diff_is_cheap: bool | None = None
        self._attached: dict[str, Any] = {}  # staged container -> its attach (docker_watch)
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
                import docker  # lazy: the SDK and requests cost ~0.3 s; only a run needs them
                import docker.errors  # lazy: with the SDK

                try:
                    self._client = docker.from_env(max_pool_size=self._max_pool_size)
                except docker.errors.DockerException as exc:
                    raise RuntimeUnavailable(
                        f"cannot reach the Docker daemon: {exc}", hint=_DAEMON_HINT
                    ) from exc
                _no_proxy_lookups(self._client)
            return self._client

    def image_id(self, ref: str) -> str:
        """The local image id of `ref`; one pull attempt when it is missing.

        On a unix socket (the usual case, and the one DOCKER_HOST=unix://... names) this is
        one inspect request without the SDK; a missing image, and other hosts, go through it.
        """
        path = docker_socket.unix_socket() if self._client is None else None
        if path is not None:
            try:
                found = docker_socket.image_inspect(path, ref)
            except docker_socket.DaemonUnreachable as exc:
                raise RuntimeUnavailable(
                    f"cannot reach the Docker daemon: {exc}", hint=_DAEMON_HINT
                ) from exc
            if found is not None and isinstance(found.get("Id"), str):
                return str(found["Id"])
        return self._image_id_sdk(ref)

    def _image_id_sdk(self, ref: str) -> str:
        import docker.errors  # lazy: with the SDK

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
        import docker.errors  # lazy: with the SDK

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

    def stage(self, spec: ContainerSpec, put: list[Path]) -> str | None:
        """Create the container of `spec` and copy `put` in, ahead of its `run`.

        Returns its handle, or None when that could not be done (`run` without it then
        says why). A staged container is either passed to `run` or to `discard`.
        """
        from engine.adapters import docker_attempt  # lazy: imports the docker SDK

        try:
            with _daemon_errors():
                made = docker_attempt.stage(self.client.api, spec, _engine_labels(spec), put)
        except RuntimeUnavailable:
            return None  # the run that follows meets the same daemon and says so
        if made is None:
            return None
        with self._lock:
            self._attached[made[0]] = made[1]  # the attach, made ahead too
        return made[0]

    def discard(self, staged: str) -> None:
        """Remove a staged container that will not run (its step ended otherwise)."""
        from engine.adapters import docker_attempt  # lazy: imports the docker SDK

        with self._lock:
            attached = self._attached.pop(staged, None)
        with _daemon_errors():
            docker_attempt.remove(self.client.api, staged)
        if attached is not None:
            attached.close()

    def run(
        self,
        spec: ContainerSpec,
        transfer: Transfer,
        *,
        on_log: LogSink,
        cancel: threading.Event,
        staged: str | None = None,
    ) -> ContainerResult:
        """Create (unless `staged`), copy in, start, stream logs, wait, copy out, remove.

        Calls, in order: create (or none: `staged` was made by `stage`, its archives
        already in), attach (before start: no output is lost), put_archive (only when
        `transfer.put` has anything: one stream), start, wait, inspect (exit code,
        OOMKilled), diff (whether the wanted folder holds anything; it saves a ~40 ms
        archive call), get_archive for what is wanted, remove. The stats stream runs
        beside, from start.

        `on_log` gets each line with its newline (the last one may lack it), from a
        helper thread, always before this returns. Step-level problems come back as
        `error`; only a daemon that stops answering raises (RuntimeUnavailable).
        """
        from engine.adapters import docker_attempt  # lazy: imports the docker SDK
        from engine.adapters.docker_watch import Watch  # lazy: imports the docker SDK

        if cancel.is_set():
            if staged is not None:
                self.discard(staged)
            return docker_attempt.cancelled()
        with self._lock:
            attached = self._attached.pop(staged, None) if staged is not None else None
        with _daemon_errors():
            api = self.client.api
            cid = staged
            if cid is None:
                cid, error = docker_attempt.create(
                    api, spec, _engine_labels(spec), _image_hint(spec.image)
                )
                if cid is None:
                    return ContainerResult(exit_code=None, error=error)
            watch = Watch(api, cid, on_log)
            result = None
            try:
                result = docker_attempt.attempt(
                    api, cid, spec, transfer, cancel, watch, self.diff_is_cheap(), attached
                )
            except docker_attempt.APIError as exc:
                result = docker_attempt.api_failure(exc, cancel)
            finally:
                docker_attempt.remove(api, cid)
                # usage only counts for an attempt that ran to its end
                watch.join(stats=result is not None and result.exit_code is not None)
        if result.exit_code is None:
            return result
        peak, cpu_s = watch.usage()
        return dataclasses.replace(result, max_memory_bytes=peak, cpu_s=cpu_s)

    def kill_run(self, run_id: str) -> int:
        """Kill and remove every container of the run; return how many were there."""
        from engine.adapters import docker_attempt  # lazy: imports the docker SDK

        removed = 0
        with _daemon_errors():
            for container in self._sluice_containers(run_id):
                removed += docker_attempt.remove(self.client.api, str(container.id))
        return removed

    def kill_step(self, run_id: str, step: str) -> int:
        """Kill and remove the containers of one step of the run; return how many."""
        from engine.adapters import docker_attempt  # lazy: imports the docker SDK

        removed = 0
        with _daemon_errors():
            for container in self._sluice_containers(run_id):
                # compared here rather than in a label filter: instance names hold `=` `,` `[`
                labels = container.attrs.get("Labels") or {}
                if labels.get(LABEL_STEP) == step:
                    removed += docker_attempt.remove(self.client.api, str(container.id))
        return removed

    def gc(self, *, everything: bool = False) -> list[str]:
        """Remove containers left by dead engines on this host, and other hosts' stale ones.

        A stopped container whose engine is alive on this host is kept: it may be between
        its exit and its copy-out (or staged ahead of its start). So is another host's (jobs
        mode runs many engines on one daemon, each in its own container, whose liveness this
        host cannot see), until it has been there `foreign_grace_s`.
        """
        from engine.adapters import docker_attempt  # lazy: imports the docker SDK

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
                if (everything or gone) and docker_attempt.remove(
                    self.client.api, str(container.id)
                ):
                    names = container.attrs.get("Names") or [container.id]
                    removed.append(str(names[0]).lstrip("/"))
        return removed

    def _sluice_containers(self, run_id: str | None) -> list[Container]:
        label = LABEL_RUN if run_id is None else f"{LABEL_RUN}={run_id}"
        # sparse: one list call, no inspect per container (which races with removal)
        return self.client.containers.list(all=True, filters={"label": label}, sparse=True)


def _no_proxy_lookups(client: docker.DockerClient) -> None:
    """No proxy settings from the environment for a local socket (unix, npipe, ssh).

    requests reads every proxy variable of the environment on each request (a third of
    the engine's CPU per step, measured): a local socket never goes through a proxy.
    TCP hosts keep them.
    """
    if str(client.api.base_url).startswith("http+docker://"):
        client.api.trust_env = False


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
