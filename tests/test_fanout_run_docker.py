"""Fan-out on real Docker, where the executor's own choices show: fail_fast stops a sweep
(instances not started are cancelled, their containers made ahead removed; a running one is
stopped and recorded cancelled), and an expansion the params make empty exits 2 before any
container. The user-level suite is tests/test_fanout_docker.py."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import docker
import pytest
from conftest import RUN_LABEL, make_repo, poll, sluice

from engine.adapters.artifacts import DEFAULT_URL, ArtifactStore
from engine.adapters.docker_runtime import DockerRuntime
from engine.adapters.pipeline_files import load_file
from engine.core.manifest import RunManifest, RunStatus, StepStatus
from engine.core.spec import Outcome
from engine.run.attempt import AttemptReport
from engine.run.executor import Executor, RunOptions
from engine.run.schedule import Job

pytestmark = pytest.mark.docker


def test_fail_fast_cancels_the_rest_of_a_sweep_and_removes_containers_made_ahead(
    tmp_path: Path, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: fast
        defaults: {{image: {busybox_image}, workspace: false}}
        steps:
          - name: shard
            foreach: [a, b, c, d]
            fail_fast: true
            run: |
              cat /sluice/matrix.json
              [ "$SLUICE_INSTANCE" != "shard[a]" ]
          - name: merge
            needs: shard
            run: ls -R /sluice/inputs
        """
        },
    )
    loaded = load_file(repo / "pipelines" / "p.yaml", repo)
    options = RunOptions(
        params=dict(loaded.pipeline.params),
        max_parallel=1,  # one at a time: shard[a] fails while the others wait (made ahead)
        grace_s=2.0,
        artifacts=ArtifactStore(DEFAULT_URL, repo),
    )
    manifest = Executor(loaded, DockerRuntime(), repo=repo, options=options).run()
    assert manifest.status is RunStatus.failed
    first = manifest.steps["shard[a]"]
    assert first.status is StepStatus.failed and first.attempts[0].exit_code == 1
    log = (repo / ".sluice" / "runs" / manifest.run_id / "logs" / "shard[a].1.log").read_text()
    assert '"item": "a"' in log
    for name in ("shard[b]", "shard[c]", "shard[d]"):
        record = manifest.steps[name]
        assert (record.status, record.reason) == (
            StepStatus.cancelled,
            "fail_fast: shard[a] failed",
        )
        assert not record.attempts
    assert manifest.steps["shard"].status is StepStatus.failed
    assert manifest.steps["merge"].status is StepStatus.upstream_failed
    left = docker_client.containers.list(
        all=True, filters={"label": f"{RUN_LABEL}={manifest.run_id}"}
    )
    assert left == []  # nothing made ahead for a cancelled instance outlives the run


def test_fail_fast_stops_a_running_instance_and_the_run_ends_at_once(
    tmp_path: Path, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: stops
        defaults: {{image: {busybox_image}, workspace: false}}
        steps:
          - name: shard
            foreach: [a, b]
            fail_fast: true
            run: |
              echo "up $SLUICE_INSTANCE"
              if [ "$SLUICE_INSTANCE" = "shard[a]" ]; then exit 1; fi
              sleep 60
          - name: merge
            needs: shard
            run: ls -R /sluice/inputs
        """
        },
    )
    loaded = load_file(repo / "pipelines" / "p.yaml", repo)
    options = RunOptions(
        params=dict(loaded.pipeline.params),
        max_parallel=2,  # side by side; shard[a] starts once shard[b]'s container runs
        grace_s=2.0,
        artifacts=ArtifactStore(DEFAULT_URL, repo),
    )

    def running(run_id: str, step: str) -> bool:
        listed = docker_client.containers.list(filters={"label": f"{RUN_LABEL}={run_id}"})
        return any(c.labels.get("sluice.step") == step for c in listed)

    class BFirst(Executor):
        def start(self, name: str, number: int) -> Job:
            job = super().start(name, number)
            if name != "shard[a]":
                return job
            run_id = self.run_id

            def after_b() -> AttemptReport:
                poll(lambda: running(run_id, "shard[b]"), 30, "shard[b]'s container")
                return job()

            return after_b

    executor = BFirst(loaded, DockerRuntime(), repo=repo, options=options)
    ended: list[RunManifest] = []
    thread = threading.Thread(target=lambda: ended.append(executor.run()), daemon=True)
    thread.start()
    # shard[b] sleeps 60 s: a run that ends well before that stopped it
    poll(lambda: ended, 40, "the run to end once shard[a] failed")
    manifest = ended[0]
    assert manifest.status is RunStatus.failed
    assert manifest.steps["shard[a]"].status is StepStatus.failed
    stopped = manifest.steps["shard[b]"]
    why = "fail_fast: shard[a] failed"
    assert (stopped.status, stopped.reason) == (StepStatus.cancelled, why)
    assert [(a.outcome, a.error) for a in stopped.attempts] == [(Outcome.cancelled, why)]
    log = (repo / ".sluice" / "runs" / manifest.run_id / "logs" / "shard[b].1.log").read_text()
    assert log.splitlines() == ["up shard[b]", f"sluice: {why}"]
    assert manifest.steps["shard"].status is StepStatus.failed
    assert manifest.steps["merge"].status is StepStatus.upstream_failed
    recorded = (repo / ".sluice" / "runs" / manifest.run_id / "manifest.json").read_text()
    assert RunManifest.from_json(recorded) == manifest
    left = docker_client.containers.list(
        all=True, filters={"label": f"{RUN_LABEL}={manifest.run_id}"}
    )
    assert left == []


def test_sluice_run_exits_1_when_fail_fast_stops_a_sweep(
    tmp_path: Path, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: stops
        defaults: {{image: {busybox_image}, workspace: false}}
        steps:
          - name: shard
            foreach: [slow, bad]
            fail_fast: true
            run: |
              if [ "$SLUICE_INSTANCE" = "shard[bad]" ]; then exit 1; fi
              sleep 60
        """
        },
        commit="pipelines",
    )
    # shard[slow] is stopped running, or cancelled before it starts: either way well
    # within the deadline (a sleep of 60 s left alone would pass it)
    result = sluice("run", "stops", "--json", repo=repo, process=True, timeout=45)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["status"] == "failed"
    slow = manifest["steps"]["shard[slow]"]
    assert (slow["status"], slow["reason"]) == ("cancelled", "fail_fast: shard[bad] failed")
    assert [a["outcome"] for a in slow["attempts"]] in ([], ["cancelled"])
    assert manifest["steps"]["shard"]["status"] == "failed"
    recorded = repo / ".sluice" / "runs" / manifest["run_id"] / "manifest.json"
    assert json.loads(recorded.read_text())["status"] == "failed"
    run_label = f"{RUN_LABEL}={manifest['run_id']}"
    assert docker_client.containers.list(all=True, filters={"label": run_label}) == []


def test_a_sweep_the_params_make_empty_exits_2_before_any_container(
    tmp_path: Path, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: empty
        params: {{regions: [eu]}}
        defaults: {{image: {busybox_image}, workspace: false}}
        steps:
          - name: score
            foreach: "${{{{ params.regions }}}}"
            run: echo "$SLUICE_INSTANCE"
        """
        },
        commit="pipelines",
    )
    result = sluice("run", "empty", "-p", "regions=[]", repo=repo)
    assert result.returncode == 2, result.stderr
    assert "step 'score' fans out over nothing" in result.stderr
    assert "Traceback" not in result.stderr
    runs = repo / ".sluice" / "runs"
    assert not runs.exists() or not any(runs.iterdir())
    made = docker_client.containers.list(all=True, filters={"label": "sluice.pipeline=empty"})
    assert made == []

    result = sluice("run", "empty", "-p", "regions=eu,us", repo=repo)
    assert result.returncode == 0, result.stderr


def test_approve_refuses_when_an_instances_outputs_left_the_store(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: gate
        defaults: {{image: {busybox_image}, workspace: false}}
        steps:
          - name: shard
            foreach: [a, b]
            run: echo "$SLUICE_INSTANCE" > /sluice/outputs/part.txt
          - name: merge
            needs: shard
            approval: true
            run: cat "/sluice/inputs/shard/shard[a]/part.txt" "/sluice/inputs/shard/shard[b]/part.txt"
        """
        },
        commit="pipelines",
    )
    result = sluice("run", "gate", "--json", repo=repo)
    assert result.returncode == 0, result.stderr
    paused = json.loads(result.stdout)
    run_id = paused["run_id"]
    assert paused["status"] == "waiting_approval"
    part = paused["steps"]["shard[a]"]["outputs"]["part.txt"]["sha256"]
    (repo / ".sluice" / "artifacts" / "sha256" / part[:2] / part[2:]).unlink()

    refused = sluice("approve", run_id, repo=repo)
    assert refused.returncode == 2, refused.stderr
    assert "shard[a]/part.txt" in refused.stderr

    # run again: shard[b] comes from the cache; shard[a]'s cached output is gone, so it runs
    again = json.loads(sluice("run", "gate", "--json", repo=repo).stdout)
    assert again["status"] == "waiting_approval"
    assert again["steps"]["shard[a]"]["status"] == "succeeded"
    assert again["steps"]["shard[b]"]["status"] == "cached"
    done = sluice("approve", again["run_id"], "--json", repo=repo)
    assert done.returncode == 0, done.stderr
    merged = json.loads(done.stdout)
    assert merged["status"] == "succeeded"
    log = (repo / ".sluice" / "runs" / again["run_id"] / "logs" / "merge.1.log").read_text()
    assert log.splitlines() == ["shard[a]", "shard[b]"]
