"""Shared fixtures: a Docker daemon (never skipped under CI), test images, run ids."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import NoReturn

import docker
import pytest

BUSYBOX = "sluice-test/busybox:1"
PYTHON = "python:3.11-slim"
RUN_LABEL = "sluice.run-id"
ENGINE_LABEL = "sluice.engine"
_RUN_IDS: set[str] = set()  # handed out by the run_id fixture in this session


def _unavailable(reason: str) -> NoReturn:
    """Skip on a developer's machine; under CI a missing daemon or image is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: Docker tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        _unavailable(f"no Docker daemon answers ({exc}); run scripts/docker-up.sh")
    yield client
    client.close()


def _sluice_containers(client: docker.DockerClient) -> dict[str, dict[str, str]]:
    listed = client.containers.list(all=True, filters={"label": RUN_LABEL}, sparse=True)
    return {str(c.id): c.attrs.get("Labels") or {} for c in listed}


def _ours(labels: dict[str, str]) -> bool:
    """Made by this test process: its engine label, or a run id this session handed out.

    Other sessions may share the daemon; their containers are none of our business.
    """
    engine = f"{socket.gethostname()}:{os.getpid()}"
    return labels.get(ENGINE_LABEL) == engine or labels.get(RUN_LABEL) in _RUN_IDS


@pytest.fixture
def no_leftover_containers(docker_client: docker.DockerClient) -> Iterator[None]:
    """Fail the test if it leaves any `sluice.run-id` container behind (then remove them)."""
    before = set(_sluice_containers(docker_client))
    yield
    after = _sluice_containers(docker_client)
    left = {cid: labels for cid, labels in after.items() if cid not in before and _ours(labels)}
    for cid in left:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.api.remove_container(cid, force=True)
    if left:
        pytest.fail(f"test left containers behind: {sorted(left.values(), key=str)}")


def _image(client: docker.DockerClient, ref: str) -> str:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        _unavailable(f"image {ref} is missing; run scripts/build-images.sh")
    return ref


@pytest.fixture
def busybox_image(docker_client: docker.DockerClient, no_leftover_containers: None) -> str:
    return _image(docker_client, BUSYBOX)


@pytest.fixture
def python_image(docker_client: docker.DockerClient, no_leftover_containers: None) -> str:
    return _image(docker_client, PYTHON)


@pytest.fixture
def run_id() -> str:
    """A fresh run id in the results layout's format, e.g. 20261125T101500Z-abc123."""
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    _RUN_IDS.add(run_id)
    return run_id
