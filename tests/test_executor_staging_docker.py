"""Containers made ahead, against real Docker: a chain whose next containers are made while
their upstream runs, and none left behind when a step made ahead does not run."""

from __future__ import annotations

import threading
from pathlib import Path

import docker
import pytest
from conftest import make_repo, poll

from engine.adapters.artifacts import DEFAULT_URL, ArtifactStore
from engine.adapters.docker_runtime import DockerRuntime
from engine.adapters.pipeline_files import load_file
from engine.core.manifest import RunManifest, RunStatus, StepStatus
from engine.ports import LABEL_RUN, ContainerResult, ContainerSpec, LogSink, Transfer
from engine.run.executor import Executor, RunOptions

pytestmark = pytest.mark.docker


class CountingRuntime(DockerRuntime):
    """Docker, counting the containers made ahead and the attempts that used one."""

    def __init__(self) -> None:
        super().__init__()
        self.staged: list[str] = []
        self.used: list[str] = []

    def stage(self, spec: ContainerSpec, put: list[Path]) -> str | None:
        handle = super().stage(spec, put)
        if handle is not None:
            self.staged.append(handle)
        return handle

    def run(
        self,
        spec: ContainerSpec,
        transfer: Transfer,
        *,
        on_log: LogSink,
        cancel: threading.Event,
        staged: str | None = None,
    ) -> ContainerResult:
        if staged is not None:
            self.used.append(staged)
        return super().run(spec, transfer, on_log=on_log, cancel=cancel, staged=staged)


def executor(repo: Path, runtime: DockerRuntime) -> Executor:
    loaded = load_file(repo / "pipelines" / "p.yaml", repo)
    options = RunOptions(
        params=dict(loaded.pipeline.params),
        max_parallel=2,
        grace_s=1.0,
        artifacts=ArtifactStore(DEFAULT_URL, repo),
    )
    return Executor(loaded, runtime, repo=repo, options=options)


def created(client: docker.DockerClient, run_id: str) -> int:
    listed = client.containers.list(  # sparse: no inspect of a container removed meanwhile
        all=True, sparse=True, filters={"label": f"{LABEL_RUN}={run_id}", "status": "created"}
    )
    return len(listed)


def test_a_chain_runs_in_containers_made_ahead_with_inputs_copied_at_start(
    tmp_path: Path, busybox_image: str
) -> None:
    text = f"""
    name: chain
    defaults: {{image: {busybox_image}}}
    steps:
      - name: a
        run: 'echo one > /sluice/outputs/n.txt'
      - name: b
        needs: [a]
        config: {{word: two}}
        run: 'cat /sluice/inputs/a/n.txt /workspace/data.txt > /sluice/outputs/n.txt; grep -o two /sluice/config.json >> /sluice/outputs/n.txt'
      - name: c
        needs: [b]
        run: 'cp /sluice/inputs/b/n.txt /sluice/outputs/n.txt'
    """
    repo = make_repo(tmp_path, {"p.yaml": text}, files={"data.txt": "data\n"})
    runtime = CountingRuntime()
    manifest = executor(repo, runtime).run()
    assert manifest.status is RunStatus.succeeded, manifest.steps
    assert len(runtime.used) == 2 and runtime.used == runtime.staged  # b and c
    assert manifest.steps["c"].outputs["n.txt"].size == len("one\ndata\ntwo\n")


def test_steps_made_ahead_that_do_not_run_leave_no_container(
    tmp_path: Path, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    text = f"""
    name: failing
    defaults: {{image: {busybox_image}}}
    steps:
      - name: a
        run: 'exit 3'
      - name: b
        needs: [a]
        run: 'true'
      - name: c
        needs: [a]
        run: 'true'
    """
    repo = make_repo(tmp_path, {"p.yaml": text})
    runtime = CountingRuntime()
    manifest = executor(repo, runtime).run()
    assert manifest.steps["b"].status is StepStatus.upstream_failed
    assert manifest.steps["c"].status is StepStatus.upstream_failed
    assert len(runtime.staged) == 2 and runtime.used == []
    # busybox_image's fixture fails the test if any container is left


def test_cancel_while_the_next_step_waits_made_ahead(
    tmp_path: Path, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    text = f"""
    name: cancelled
    defaults: {{image: {busybox_image}}}
    steps:
      - name: a
        run: 'sleep 60'
      - name: b
        needs: [a]
        run: 'true'
    """
    repo = make_repo(tmp_path, {"p.yaml": text})
    run = executor(repo, CountingRuntime())
    result: list[RunManifest] = []
    worker = threading.Thread(target=lambda: result.append(run.run()))
    worker.start()
    try:
        poll(lambda: created(docker_client, run.run_id) == 1, 30, "b's container made ahead")
    finally:
        run.cancel()  # also when the poll failed: the run's containers go with it
        worker.join(timeout=60)
    assert not worker.is_alive()
    assert result[0].status is RunStatus.cancelled
    assert result[0].steps["b"].status is StepStatus.cancelled
