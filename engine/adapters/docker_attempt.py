"""One attempt's container through the docker SDK's low-level API (imported only to run one).

The low-level calls take a container id: no model object, so no inspect after create and
none before attach (the SDK's `containers.create` and `attach` each add one). The order
of calls and why each is there is described on `DockerRuntime.run`.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import requests
from docker.models import containers as _models

from engine.adapters.docker_watch import Attached, Watch, open_attach
from engine.local import archives, disk
from engine.ports import ContainerResult, ContainerSpec, Transfer

APIError = docker.errors.APIError
_MAX_WAIT = 30 * 86400.0  # sockets reject absurd timeouts; no step runs a month


def create_kwargs(spec: ContainerSpec, labels: dict[str, str], version: str) -> dict[str, Any]:
    """The arguments of the low-level `create_container` for `spec`."""
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
        "version": version,
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
    # the SDK's own mapping of `containers.create` keywords (without its inspect after)
    made: dict[str, Any] = _models._create_container_args(args)  # type: ignore[attr-defined]
    return made


def create(
    api: docker.APIClient, spec: ContainerSpec, labels: dict[str, str], hint: str
) -> tuple[str | None, str | None]:
    """(container id, None), or (None, why) when Docker refuses the container."""
    try:
        made = api.create_container(**create_kwargs(spec, labels, api.api_version))
    except docker.errors.ImageNotFound:
        return None, f"image {spec.image!r} not found locally; {hint}"
    except docker.errors.APIError as exc:
        return None, f"docker refused: {explain(exc)}"
    return str(made["Id"]), None


def stage(
    api: docker.APIClient, spec: ContainerSpec, labels: dict[str, str], put: list[Path]
) -> tuple[str, Attached] | None:
    """A created container with `put` in it and its output attached, None when Docker
    refused any of that."""
    cid, _ = create(api, spec, labels, "")
    if cid is None:
        return None
    try:
        if put:
            api.put_archive(cid, "/", archives.concatenated(put))
        return cid, open_attach(api, cid)
    except (docker.errors.APIError, OSError):
        remove(api, cid)
        return None


def attempt(
    api: docker.APIClient,
    cid: str,
    spec: ContainerSpec,
    transfer: Transfer,
    cancel: threading.Event,
    watch: Watch,
    diff_is_cheap: bool,
    attached: Attached | None = None,
) -> ContainerResult:
    watch.attach(attached)
    if transfer.put:
        api.put_archive(cid, "/", archives.concatenated(transfer.put))
    if cancel.is_set():
        return cancelled()
    api.start(cid)
    watch.start()
    if cancel.is_set():
        return cancelled()
    timed_out = False
    waited: dict[str, Any] = {}
    try:
        wait_s: Any = min(max(spec.timeout, 0.001), _MAX_WAIT)  # seconds, a float is fine
        waited = dict(api.wait(cid, timeout=wait_s))
    except requests.exceptions.RequestException:
        # The SDK's way of saying the timeout passed (a read timeout, sometimes wrapped
        # in ConnectionError); a daemon that died instead fails this inspect.
        if api.inspect_container(cid)["State"]["Running"]:
            timed_out = True
            api.stop(cid, timeout=math.ceil(spec.grace))  # SIGTERM, SIGKILL after grace
    if cancel.is_set():
        return cancelled()
    state: dict[str, Any] = {"ExitCode": waited.get("StatusCode"), "OOMKilled": False}
    if state["ExitCode"] != 0 or timed_out:
        # Whether it was killed for memory: an OOM kill ends the step with a signal (its
        # init exits 137); an exit code of 0 needs no inspect.
        state = api.inspect_container(cid)["State"]
    watch.join_logs()
    wanted = (
        transfer.fetch if state["ExitCode"] == 0 and not timed_out else transfer.fetch_on_failure
    )
    if wanted and diff_is_cheap:
        wanted = _changed(api, cid, wanted)
    fetched, fetch_error = _fetch(api, cid, wanted, transfer.max_fetch_bytes)
    return ContainerResult(
        exit_code=int(state["ExitCode"]),
        timed_out=timed_out,
        oom_killed=bool(state.get("OOMKilled")),
        fetched=fetched,
        fetch_error=fetch_error,
    )


def cancelled() -> ContainerResult:
    return ContainerResult(exit_code=None, cancelled=True)


def api_failure(exc: docker.errors.APIError, cancel: threading.Event) -> ContainerResult:
    if cancel.is_set():  # kill_run removed it under us
        return cancelled()
    if isinstance(exc, docker.errors.NotFound):
        error = "the container was removed while it ran (docker rm or sluice gc?)"
        return ContainerResult(exit_code=None, error=error)
    return ContainerResult(exit_code=None, error=f"docker: {explain(exc)}")


def _changed(api: docker.APIClient, cid: str, wanted: dict[str, Path]) -> dict[str, Path]:
    """The wanted paths holding anything: one cheap `diff` can save a ~70 ms archive call."""
    changes = api.diff(cid) or []
    paths = [str(change.get("Path", "")) for change in changes]
    return {
        k: v for k, v in wanted.items() if any(p.startswith(k.rstrip("/") + "/") for p in paths)
    }


def _fetch(
    api: docker.APIClient, cid: str, wanted: dict[str, Path], limit: int
) -> tuple[dict[str, Path], str | None]:
    """Stream each wanted path's tar to its local file, within `limit` bytes in all."""
    fetched: dict[str, Path] = {}
    budget = limit
    for path, local in wanted.items():
        try:
            stream, _ = api.get_archive(cid, path, chunk_size=1024 * 1024)
        except docker.errors.NotFound:
            continue  # the step did not make it
        except docker.errors.APIError as exc:
            return fetched, f"copying {path} out failed: {explain(exc)}"
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


def remove(api: docker.APIClient, cid: str) -> bool:
    """Kill and remove; False if it was gone already (or the daemon would not)."""
    try:
        api.remove_container(cid, force=True)
    except docker.errors.APIError as exc:
        # 409: another thread is removing it (the worker and kill_run race on cancel).
        # Any other refusal leaves it to `sluice gc`: never a reason to lose a result.
        return exc.status_code == 409
    except requests.exceptions.ConnectionError:
        return False  # the daemon is gone; the caller reports that, not this
    return True


def explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)
