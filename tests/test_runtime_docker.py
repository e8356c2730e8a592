"""DockerRuntime against a real Docker daemon, with the busybox test image."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
from conftest import poll

from engine.adapters.docker_runtime import DockerRuntime, ImageBuildFailed
from engine.local.archives import TarBuilder, extract_tar
from engine.ports import (
    LABEL_ATTEMPT,
    LABEL_ENGINE,
    LABEL_RUN,
    LABEL_STEP,
    BuildRequest,
    ContainerResult,
    ContainerRuntime,
    ContainerSpec,
    ImageMissing,
    RuntimeUnavailable,
    Transfer,
)

pytestmark = pytest.mark.docker


@pytest.fixture
def runtime(docker_client: docker.DockerClient, no_leftover_containers: None) -> DockerRuntime:
    return DockerRuntime(docker_client)


def spec(image: str, script: str, run_id: str, mem_limit: int | None = None) -> ContainerSpec:
    labels = {LABEL_RUN: run_id, LABEL_STEP: "step", LABEL_ATTEMPT: "1"}
    command = ["sh", "-c", script]
    return ContainerSpec(image, command, env={}, labels=labels, timeout=30, mem_limit=mem_limit)


def run(
    runtime: ContainerRuntime,  # mypy checks DockerRuntime against the port here
    spec: ContainerSpec,
    transfer: Transfer | None = None,
    *,
    timeout: float = 30,
    cancel: threading.Event | None = None,
    on_log: Callable[[str], None] | None = None,
) -> tuple[ContainerResult, list[str]]:
    lines: list[str] = []

    def sink(line: str) -> None:
        lines.append(line)
        if on_log is not None:
            on_log(line)

    result = runtime.run(
        dataclasses.replace(spec, timeout=timeout, grace=1),
        transfer or Transfer(),
        on_log=sink,
        cancel=cancel or threading.Event(),
    )
    return result, lines


def containers_of(client: docker.DockerClient, run_id: str) -> list[str]:
    listed = client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
    return [str(c.id) for c in listed]


def test_exit_code_and_logs_line_by_line(
    runtime: DockerRuntime, busybox_image: str, run_id: str
) -> None:
    script = (
        "echo out; echo err >&2; printf 'caf\\303\\251 \\377\\n'; "
        "printf partial; printf tail >&2; exit 3"
    )
    result, lines = run(runtime, spec(busybox_image, script, run_id))
    assert result.exit_code == 3
    assert not (result.timed_out or result.oom_killed or result.cancelled or result.error)
    # each stream keeps its own partial line: "partial" and "tail" are never glued
    assert sorted(lines) == sorted(["out\n", "err\n", "café \ufffd\n", "partial", "tail"])
    stdout = [line for line in lines if line not in ("err\n", "tail")]
    assert stdout == ["out\n", "café \ufffd\n", "partial"]


def test_very_long_lines_arrive_whole_or_in_large_pieces(
    runtime: DockerRuntime, busybox_image: str, run_id: str
) -> None:
    script = "head -c 200000 /dev/zero | tr '\\0' a; echo; echo next"
    result, lines = run(runtime, spec(busybox_image, script, run_id))
    assert result.exit_code == 0
    assert "".join(lines) == "a" * 200000 + "\nnext\n"
    assert len(lines) <= 5  # a few large pieces, not a piece per pipe read


def test_environment_holds_only_what_was_given(
    runtime: DockerRuntime, busybox_image: str, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_secret_value")
    given = ContainerSpec(
        image=busybox_image,
        command=["env"],
        env={"SLUICE_STEP": "train", "MODEL": "churn"},
        labels={LABEL_RUN: run_id},
        timeout=30,
    )
    result, lines = run(runtime, given)
    names = {line.split("=", 1)[0] for line in lines}
    assert result.exit_code == 0
    assert {"SLUICE_STEP", "MODEL"} <= names
    assert "GITHUB_TOKEN" not in names
    assert not any("ghs_secret_value" in line for line in lines)
    # what remains is the image's and Docker's own (PATH, HOSTNAME, HOME), not the engine's
    assert names - {"SLUICE_STEP", "MODEL", "PATH", "HOSTNAME", "HOME", "PWD", "SHLVL"} == set()


def test_network_none_has_only_loopback(
    runtime: DockerRuntime, busybox_image: str, run_id: str
) -> None:
    result, lines = run(runtime, spec(busybox_image, "cat /proc/net/dev", run_id))
    interfaces = {line.split(":")[0].strip() for line in lines if ":" in line}
    assert result.exit_code == 0
    assert interfaces == {"lo"}


def test_isolation_settings_and_labels_while_running(
    runtime: DockerRuntime, docker_client: docker.DockerClient, busybox_image: str, run_id: str
) -> None:
    started, cancel = threading.Event(), threading.Event()
    limited = spec(busybox_image, "echo up; sleep 60", run_id, mem_limit=64 * 1024**2)
    results: list[ContainerResult] = []
    worker = threading.Thread(
        target=lambda: results.append(
            run(runtime, limited, cancel=cancel, on_log=lambda _: started.set())[0]
        )
    )
    worker.start()
    try:
        assert started.wait(10)
        (cid,) = containers_of(docker_client, run_id)
        attrs = docker_client.api.inspect_container(cid)
        host = attrs["HostConfig"]
        assert host["NetworkMode"] == "none"
        assert host["Privileged"] is False
        assert host["Init"] is True
        assert not host["Binds"] and not attrs["Mounts"]
        assert host["Memory"] == host["MemorySwap"] == 64 * 1024**2
        labels = attrs["Config"]["Labels"]
        assert labels[LABEL_RUN] == run_id and labels[LABEL_STEP] == "step"
        assert labels[LABEL_ENGINE] == f"{socket.gethostname()}:{os.getpid()}"
    finally:
        cancel.set()
        runtime.kill_run(run_id)
        worker.join(20)
    assert results[0].cancelled


def test_files_go_in_and_outputs_come_out(
    runtime: DockerRuntime, busybox_image: str, run_id: str, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "data.csv").write_text("a,b\n1,2\n")
    put = tmp_path / "put.tar"
    with TarBuilder(put) as tar:
        tar.add_tree(repo, "workspace")
        tar.add_bytes("sluice/config.json", b'{"n": 5}')
        tar.add_dir("sluice/outputs")
    script = (
        "pwd > /sluice/outputs/cwd.txt && cp /sluice/config.json /sluice/outputs/ && "
        "mkdir -p /sluice/outputs/model/parts && cp src/data.csv /sluice/outputs/model/parts/ && "
        "ln -s model/parts/data.csv /sluice/outputs/latest"
    )
    transfer = Transfer(
        put=[put],
        fetch={"/sluice/outputs": tmp_path / "out.tar", "/sluice/missing": tmp_path / "x.tar"},
    )
    result, _ = run(runtime, spec(busybox_image, script, run_id), transfer)
    assert result.exit_code == 0
    assert result.fetched == {"/sluice/outputs": tmp_path / "out.tar"}
    assert result.fetch_error is None
    dest = tmp_path / "dest"
    files = extract_tar(tmp_path / "out.tar", dest, strip="outputs")
    assert files == [Path("config.json"), Path("cwd.txt"), Path("model/parts/data.csv")]
    assert (dest / "cwd.txt").read_text() == "/workspace\n"
    assert (dest / "config.json").read_text() == '{"n": 5}'
    assert (dest / "latest").read_text() == "a,b\n1,2\n"


def test_oversize_copy_out_stops_with_fetch_error(
    runtime: DockerRuntime, busybox_image: str, run_id: str, tmp_path: Path
) -> None:
    script = "mkdir -p /sluice/outputs && dd if=/dev/zero of=/sluice/outputs/big bs=1M count=8"
    out = tmp_path / "out.tar"
    transfer = Transfer(fetch={"/sluice/outputs": out}, max_fetch_bytes=1024**2)
    result, _ = run(runtime, spec(busybox_image, script, run_id), transfer)
    assert result.exit_code == 0
    assert result.fetch_error and "more than 1048576 bytes" in result.fetch_error
    assert result.fetched == {} and not out.exists()


def test_timeout_stops_and_removes_the_container(
    runtime: DockerRuntime, docker_client: docker.DockerClient, busybox_image: str, run_id: str
) -> None:
    start = time.monotonic()
    result, _ = run(runtime, spec(busybox_image, "sleep 60", run_id), timeout=2)
    elapsed = time.monotonic() - start
    assert result.timed_out
    assert result.exit_code is not None and result.exit_code != 0
    assert 2 <= elapsed < 10
    assert containers_of(docker_client, run_id) == []


def test_timeout_kills_a_step_that_ignores_sigterm(
    runtime: DockerRuntime, busybox_image: str, run_id: str
) -> None:
    start = time.monotonic()
    result, _ = run(runtime, spec(busybox_image, "trap '' TERM; sleep 60", run_id), timeout=1)
    assert result.timed_out and result.exit_code == 137  # SIGKILL after the 1 s grace
    assert time.monotonic() - start < 10


def test_out_of_memory_is_reported(runtime: DockerRuntime, busybox_image: str, run_id: str) -> None:
    # dd fills a 200 MB buffer: far over the 32 MB limit, and no swap to hide in
    hog = spec(
        busybox_image, "dd if=/dev/zero of=/dev/null bs=200M count=1", run_id, mem_limit=32 << 20
    )
    result, _ = run(runtime, hog)
    assert result.oom_killed
    assert result.exit_code == 137


def test_missing_image_is_an_error_not_an_exception(runtime: DockerRuntime, run_id: str) -> None:
    result, _ = run(runtime, spec("sluice-test/no-such-image:0", "true", run_id))
    assert result.exit_code is None
    assert result.error and "'sluice-test/no-such-image:0' not found locally" in result.error


def test_kill_run_from_another_thread_cancels_promptly(
    runtime: DockerRuntime, docker_client: docker.DockerClient, busybox_image: str, run_id: str
) -> None:
    started, cancel = threading.Event(), threading.Event()
    results: list[tuple[ContainerResult, float]] = []

    def attempt() -> None:
        begin = time.monotonic()
        result, _ = run(
            runtime,
            # a second after start the worker is surely blocked in wait()
            spec(busybox_image, "sleep 1; echo waiting; sleep 60", run_id),
            timeout=120,
            cancel=cancel,
            on_log=lambda _: started.set(),
        )
        results.append((result, time.monotonic() - begin))

    worker = threading.Thread(target=attempt)
    worker.start()
    assert started.wait(10)
    killed_at = time.monotonic()
    cancel.set()
    assert runtime.kill_run(run_id) == 1
    worker.join(10)
    (result, _), returned_after = results[0], time.monotonic() - killed_at
    assert result.cancelled and result.exit_code is None
    assert returned_after < 5
    assert containers_of(docker_client, run_id) == []


def test_kill_run_racing_create_and_start_still_returns_promptly(
    runtime: DockerRuntime, docker_client: docker.DockerClient, busybox_image: str, run_id: str
) -> None:
    for _ in range(3):
        cancel = threading.Event()
        results: list[ContainerResult] = []
        quiet = spec(busybox_image, "sleep 60", run_id)
        worker = threading.Thread(
            target=lambda r=results, s=quiet, c=cancel: r.append(
                run(runtime, s, cancel=c, timeout=120)[0]
            )
        )
        worker.start()
        poll(
            lambda: containers_of(docker_client, run_id), 10, "the container to be created"
        )  # created, maybe not started
        killed_at = time.monotonic()
        cancel.set()
        runtime.kill_run(run_id)
        worker.join(15)
        assert results and results[0].cancelled
        assert time.monotonic() - killed_at < 5
        poll(lambda: not containers_of(docker_client, run_id), 10, "the containers to go")


def test_cancel_before_start_creates_nothing(runtime: DockerRuntime, busybox_image: str) -> None:
    cancel = threading.Event()
    cancel.set()
    result, _ = run(runtime, spec(busybox_image, "true", "never"), cancel=cancel)
    assert result.cancelled


def test_gc_removes_containers_of_dead_engines_and_stopped_ones(
    runtime: DockerRuntime,
    docker_client: docker.DockerClient,
    busybox_image: str,
    run_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # gc looks at every sluice container of the daemon; other sessions may share it, so
    # this test's gc only sees its own run's containers.
    own = runtime._sluice_containers
    monkeypatch.setattr(runtime, "_sluice_containers", lambda _: own(run_id))
    exited = subprocess.Popen(["true"])
    exited.wait()  # its pid now names no process
    host, me = socket.gethostname(), os.getpid()
    cases = {  # name: (engine label, running?, removed by gc()?)
        "dead-engine": (f"{host}:{exited.pid}", True, True),
        "live-engine": (f"{host}:{me}", True, False),
        "live-engine-exited": (f"{host}:{me}", False, False),
        "other-host-exited": ("elsewhere:1", False, False),  # its engine may be alive
        "other-host-running": ("elsewhere:1", True, False),
    }
    made = {}
    for name, (engine, running, _) in cases.items():
        labels = {LABEL_RUN: run_id, LABEL_ENGINE: engine, LABEL_STEP: name}
        make = docker_client.containers.run if running else docker_client.containers.create
        made[name] = make(
            busybox_image, ["sleep", "60"], labels=labels, network_mode="none", detach=True
        )
    try:
        removed = set(runtime.gc())
        assert removed == {made[name].name for name, case in cases.items() if case[2]}
        runtime.foreign_grace_s = 0  # another host's stopped container, there long enough
        assert runtime.gc() == [made["other-host-exited"].name]
        kept = {made[name].name for name, case in cases.items() if not case[2]}
        kept.discard(made["other-host-exited"].name)
        assert set(runtime.gc(everything=True)) == kept
    finally:
        for container in made.values():
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
    assert containers_of(docker_client, run_id) == []


def test_peak_memory_and_cpu_time_of_a_longer_attempt(
    runtime: DockerRuntime, busybox_image: str, run_id: str
) -> None:
    script = "dd if=/dev/zero of=/dev/null bs=24M count=1 2>/dev/null; sleep 3"
    result, _ = run(runtime, spec(busybox_image, script, run_id))
    assert result.exit_code == 0
    assert result.max_memory_bytes is not None and result.max_memory_bytes >= 24 << 20
    assert result.cpu_s is not None and 0 < result.cpu_s < 3
    short, _ = run(runtime, spec(busybox_image, "true", run_id))
    assert short.max_memory_bytes is None and short.cpu_s is None  # too short to sample


def test_image_id_and_missing_image(runtime: DockerRuntime, busybox_image: str) -> None:
    assert runtime.image_id(busybox_image).startswith("sha256:")
    start = time.monotonic()
    with pytest.raises(ImageMissing, match="sluice-test/no-such-image:0") as info:
        runtime.image_id("sluice-test/no-such-image:0")
    assert "docker build -t sluice-test/no-such-image:0 ." in str(info.value)
    assert time.monotonic() - start < 30


def test_build_image_builds_once_and_reports_failures(
    runtime: DockerRuntime,
    docker_client: docker.DockerClient,
    busybox_image: str,
    run_id: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo built > /built\n")
    (tmp_path / "Broken.dockerfile").write_text(
        f"FROM {busybox_image}\nRUN echo before-the-failure && exit 7\n"
    )
    tag = f"sluice-test/build:{run_id.lower()}"
    try:
        first = runtime.build_image(BuildRequest(tmp_path, "Dockerfile", tag))
        assert first == docker_client.images.get(tag).id
        assert runtime.build_image(BuildRequest(tmp_path, "Dockerfile", tag)) == first
        with pytest.raises(ImageBuildFailed, match="before-the-failure"):
            runtime.build_image(BuildRequest(tmp_path, "Broken.dockerfile", tag + "-broken"))
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag, force=True)


def test_unreachable_daemon_raises_runtime_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(RuntimeUnavailable, match="Docker daemon") as info:
        DockerRuntime().image_id("anything")
    assert "scripts/docker-up.sh" in str(info.value)
