"""`sluice run` and `sluice gc` as a user runs them: real processes, real Docker, real signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest
from conftest import make_repo, poll, sluice

pytestmark = pytest.mark.docker


def containers(client: docker.DockerClient, pipeline: str) -> list[object]:
    return list(
        client.containers.list(
            all=True, filters={"label": f"sluice.pipeline={pipeline}"}, sparse=True
        )
    )


def test_json_prints_the_manifest_and_exit_codes_follow_the_run(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: json-out
        params: {{fail: false}}
        steps:
          - name: only
            image: {busybox_image}
            env: {{FAIL: "${{{{ params.fail }}}}"}}
            run: 'echo working; [ "$FAIL" = false ]'
        """
        },
    )
    ok = sluice("run", "json-out", "--json", repo=repo, process=True)
    assert ok.returncode == 0, ok.stderr
    manifest = json.loads(ok.stdout)
    assert manifest["status"] == "succeeded"
    assert manifest["steps"]["only"]["status"] == "succeeded"
    assert "[only] working" in ok.stderr

    failed = sluice("run", "json-out", "--json", "-p", "fail=true", repo=repo, process=True)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["status"] == "failed"

    bad = sluice("run", "json-out", "-p", "fail=maybe", repo=repo, process=True)
    assert bad.returncode == 2
    assert "param 'fail' takes true or false" in bad.stderr
    assert "Traceback" not in bad.stderr

    unknown = sluice("run", "json-outt", repo=repo, process=True)
    assert unknown.returncode == 2
    assert "did you mean 'json-out'?" in unknown.stderr


def test_sigterm_removes_the_runs_containers_and_exits_130(
    tmp_path: Path, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: cancel-me
        defaults: {{image: {busybox_image}}}
        steps:
          - name: long-a
            run: sleep 60
          - name: long-b
            run: sleep 60
          - name: after
            needs: [long-a]
            run: echo never
        finally:
          - name: tidy
            run: echo tidy
        """
        },
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "--repo", str(repo), "run", "cancel-me", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # `after` may have its container made ahead already (created, not started): count
        # the running ones. All, made ahead or not, must be gone after the signal.
        poll(
            lambda: (
                [c.status for c in containers(docker_client, "cancel-me")].count("running") == 2
            ),
            30,
            "both steps to start",
        )
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        print("took", time.monotonic() - sent, err)
        assert proc.returncode == 130, err
        poll(
            lambda: containers(docker_client, "cancel-me") == [],
            10 - (time.monotonic() - sent),
            "containers to go",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
    manifest = json.loads(out)
    assert manifest["status"] == "cancelled"
    assert {s["status"] for s in manifest["steps"].values()} == {"cancelled"}
    saved = next((repo / ".sluice" / "runs").glob("*/manifest.json"))
    assert json.loads(saved.read_text())["status"] == "cancelled"


def test_gc_removes_containers_of_a_dead_engine(
    tmp_path: Path, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = docker_client.containers.create(
        busybox_image,
        ["sleep", "60"],
        labels={
            "sluice.run-id": "20260101T000000Z-dead00",
            "sluice.pipeline": "orphaned",
            "sluice.step": "s",
            "sluice.attempt": "1",
            "sluice.engine": f"{socket.gethostname()}:{dead.pid}",
        },
        network_mode="none",
    )
    orphan.start()
    result = sluice("gc", repo=tmp_path, process=True)
    assert result.returncode == 0, result.stderr
    assert containers(docker_client, "orphaned") == []
    assert "removed 1 container" in result.stderr
