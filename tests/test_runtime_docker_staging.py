"""DockerRuntime's containers made ahead (`stage`, `run(staged=...)`, `discard`), and image
ids read over the unix socket without the docker SDK, against a real daemon."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import docker
import pytest

from engine.adapters import docker_socket
from engine.adapters.docker_runtime import DockerRuntime
from engine.local.archives import TarBuilder
from engine.ports import LABEL_ATTEMPT, LABEL_RUN, LABEL_STEP, ContainerSpec, Transfer


@pytest.fixture
def runtime(docker_client: docker.DockerClient, no_leftover_containers: None) -> DockerRuntime:
    return DockerRuntime(docker_client)


def spec(image: str, script: str, run_id: str) -> ContainerSpec:
    labels = {LABEL_RUN: run_id, LABEL_STEP: "step", LABEL_ATTEMPT: "1"}
    return ContainerSpec(image, ["sh", "-c", script], env={}, labels=labels, timeout=30)


def tar(path: Path, files: dict[str, bytes]) -> Path:
    with TarBuilder(path) as out:
        for name, data in files.items():
            out.add_bytes(name, data)
    return path


def states(client: docker.DockerClient, run_id: str) -> list[str]:
    listed = client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
    return [str(c.status) for c in listed]


@pytest.mark.docker
def test_a_staged_container_runs_with_what_went_in_ahead_and_at_start(
    runtime: DockerRuntime,
    docker_client: docker.DockerClient,
    busybox_image: str,
    run_id: str,
    tmp_path: Path,
) -> None:
    made = spec(busybox_image, "cat /sluice/config.json /sluice/inputs/a/x", run_id)
    ahead = tar(tmp_path / "ahead.tar", {"sluice/config.json": b"ahead\n"})
    handle = runtime.stage(made, [ahead])
    assert handle is not None
    assert states(docker_client, run_id) == ["created"]  # made, not started
    late = tar(tmp_path / "late.tar", {"sluice/inputs/a/x": b"late\n"})
    lines: list[str] = []
    result = runtime.run(
        made, Transfer(put=[late]), on_log=lines.append, cancel=threading.Event(), staged=handle
    )
    assert result.exit_code == 0
    assert lines == ["ahead\n", "late\n"]
    assert states(docker_client, run_id) == []


@pytest.mark.docker
def test_a_staged_container_with_nothing_left_to_copy_and_one_discarded(
    runtime: DockerRuntime,
    docker_client: docker.DockerClient,
    busybox_image: str,
    run_id: str,
    tmp_path: Path,
) -> None:
    made = spec(busybox_image, "cat /sluice/config.json", run_id)
    ahead = tar(tmp_path / "ahead.tar", {"sluice/config.json": b"only\n"})
    first, second = runtime.stage(made, [ahead]), runtime.stage(made, [ahead])
    assert first is not None and second is not None
    lines: list[str] = []
    result = runtime.run(
        made, Transfer(), on_log=lines.append, cancel=threading.Event(), staged=first
    )
    assert (result.exit_code, lines) == (0, ["only\n"])
    assert states(docker_client, run_id) == ["created"]
    runtime.discard(second)
    assert states(docker_client, run_id) == []
    runtime.discard(second)  # gone already: nothing to say


@pytest.mark.docker
def test_a_staged_container_of_a_cancelled_attempt_is_removed(
    runtime: DockerRuntime, docker_client: docker.DockerClient, busybox_image: str, run_id: str
) -> None:
    made = spec(busybox_image, "true", run_id)
    handle = runtime.stage(made, [])
    assert handle is not None
    cancel = threading.Event()
    cancel.set()
    result = runtime.run(made, Transfer(), on_log=print, cancel=cancel, staged=handle)
    assert result.cancelled
    assert states(docker_client, run_id) == []


@pytest.mark.docker
def test_image_ids_come_over_the_socket_without_importing_the_sdk(
    docker_client: docker.DockerClient, busybox_image: str
) -> None:
    code = (
        "import sys\n"
        "from engine.adapters.docker_runtime import DockerRuntime\n"
        f"print(DockerRuntime().image_id({busybox_image!r}))\n"
        "print(sorted(m for m in ('docker', 'requests', 'urllib3') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    image_id, imported = done.stdout.splitlines()
    assert image_id == docker_client.images.get(busybox_image).id
    assert imported == "[]"


def test_the_socket_is_the_one_docker_host_names() -> None:
    assert docker_socket.unix_socket({}) == "/var/run/docker.sock"
    assert docker_socket.unix_socket({"DOCKER_HOST": ""}) == "/var/run/docker.sock"
    assert docker_socket.unix_socket({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}) == (
        "/run/user/1000/docker.sock"
    )
    # other hosts go through the SDK (TLS, ssh, named pipes)
    for host in ("tcp://10.0.0.2:2376", "ssh://me@host", "npipe:////./pipe/docker_engine"):
        assert docker_socket.unix_socket({"DOCKER_HOST": host}) is None


def test_a_socket_that_is_not_there_says_the_daemon_does_not_answer(tmp_path: Path) -> None:
    with pytest.raises(docker_socket.DaemonUnreachable, match=r"nothing\.sock"):
        docker_socket.image_inspect(str(tmp_path / "nothing.sock"), "busybox")
