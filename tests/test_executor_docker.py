"""The executor against real Docker: retries, timeouts, OOM, parallelism, data, isolation."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import make_repo

from engine.adapters.artifacts import DEFAULT_URL, ArtifactStore
from engine.adapters.docker_runtime import DockerRuntime
from engine.adapters.pipeline_files import load_file
from engine.core.manifest import RunManifest, RunStatus, StepStatus
from engine.core.spec import Outcome
from engine.run.executor import Executor, RunOptions

pytestmark = pytest.mark.docker

BUSYBOX = "sluice-test/busybox:1"


def run_pipeline(
    repo: Path, *, secrets: dict[str, str] | None = None, max_parallel: int = 4, **params: Any
) -> RunManifest:
    loaded = load_file(repo / "pipelines" / "p.yaml", repo)
    options = RunOptions(
        params={**loaded.pipeline.params, **params},
        max_parallel=max_parallel,
        secrets=secrets or {},
        grace_s=2.0,
        artifacts=ArtifactStore(DEFAULT_URL, repo),
    )
    return Executor(loaded, DockerRuntime(), repo=repo, options=options).run()


def ts(text: str | None) -> float:
    assert text is not None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def log_of(repo: Path, manifest: RunManifest, step: str, attempt: int = 1) -> str:
    return (
        repo / ".sluice" / "runs" / manifest.run_id / "logs" / f"{step}.{attempt}.log"
    ).read_text()


def test_flaky_step_retries_with_backoff(tmp_path: Path, busybox_image: str) -> None:
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: flaky
        steps:
          - name: flaky
            image: {busybox_image}
            run: 'echo "attempt $SLUICE_ATTEMPT"; [ "$SLUICE_ATTEMPT" -ge 3 ]'
            retries: {{limit: 3, backoff: 1s, factor: 2}}
        """
        },
    )
    manifest = run_pipeline(repo)
    step = manifest.steps["flaky"]
    assert manifest.status is RunStatus.succeeded
    assert [a.outcome for a in step.attempts] == [Outcome.failed, Outcome.failed, Outcome.succeeded]
    assert [a.exit_code for a in step.attempts] == [1, 1, 0]
    first_gap = ts(step.attempts[1].started_at) - ts(step.attempts[0].finished_at)
    second_gap = ts(step.attempts[2].started_at) - ts(step.attempts[1].finished_at)
    assert 1.0 <= first_gap < 3.0
    assert 2.0 <= second_gap < 4.0
    assert "attempt 2" in log_of(repo, manifest, "flaky", 2)


def test_permanent_failure_fails_dependents_and_finally_runs(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: permanent
        defaults: {{image: {busybox_image}}}
        steps:
          - name: broken
            run: exit 3
            retries: {{limit: 2, backoff: 0.1s}}
          - name: after
            needs: [broken]
            run: echo never
          - name: later
            needs: [after]
            run: echo never
        finally:
          - name: cleanup
            run: echo cleaned
        """
        },
    )
    manifest = run_pipeline(repo)
    assert manifest.status is RunStatus.failed
    broken = manifest.steps["broken"]
    assert broken.status is StepStatus.failed
    assert len(broken.attempts) == 3
    assert {a.exit_code for a in broken.attempts} == {3}
    assert manifest.steps["after"].status is StepStatus.upstream_failed
    assert manifest.steps["later"].status is StepStatus.upstream_failed
    assert manifest.steps["cleanup"].status is StepStatus.succeeded
    assert "cleaned" in log_of(repo, manifest, "cleanup")


def test_timeout_kills_the_step(tmp_path: Path, busybox_image: str) -> None:
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: slow
        steps:
          - name: sleeper
            image: {busybox_image}
            run: sleep 60
            timeout: 2s
        """
        },
    )
    manifest = run_pipeline(repo)
    step = manifest.steps["sleeper"]
    assert step.status is StepStatus.failed
    assert step.attempts[0].outcome is Outcome.timed_out
    assert step.attempts[0].duration_s is not None and step.attempts[0].duration_s < 8
    assert manifest.duration_s is not None and manifest.duration_s < 10


def test_out_of_memory_is_oom_killed(tmp_path: Path, python_image: str) -> None:
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: hungry
        steps:
          - name: hog
            image: {python_image}
            command: [python3, -c, "b = bytearray(200 * 1024 * 1024); print(len(b))"]
            resources: {{memory: 32m}}
            workspace: false
        """
        },
    )
    manifest = run_pipeline(repo)
    step = manifest.steps["hog"]
    assert step.status is StepStatus.failed
    assert step.attempts[0].outcome is Outcome.oom_killed
    assert "out of memory" in (step.reason or "")


def test_missing_image_is_an_error_with_a_clear_message(tmp_path: Path, busybox_image: str) -> None:
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": """
        name: noimage
        steps:
          - name: ghost
            image: sluice-test/does-not-exist:42
            run: echo hi
        """
        },
    )
    manifest = run_pipeline(repo)
    attempt = manifest.steps["ghost"].attempts[0]
    assert attempt.outcome is Outcome.error
    assert attempt.error is not None and "sluice-test/does-not-exist:42" in attempt.error
    assert manifest.status is RunStatus.failed


def test_parallelism_is_capped(tmp_path: Path, busybox_image: str) -> None:
    steps = "\n".join(f"  - name: s{i}\n    run: sleep 1" for i in range(8))
    repo = make_repo(
        tmp_path, {"p.yaml": f"name: wide\ndefaults: {{image: {busybox_image}}}\nsteps:\n{steps}\n"}
    )
    manifest = run_pipeline(repo, max_parallel=4)
    assert manifest.status is RunStatus.succeeded
    intervals = [
        (ts(a.started_at), ts(a.finished_at))
        for rec in manifest.steps.values()
        for a in rec.attempts
    ]
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak == 4


def test_outputs_reach_dependents_and_metrics_reach_the_manifest(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: data
        params: {{rows: 3}}
        defaults: {{image: {busybox_image}}}
        steps:
          - name: produce
            run: |
              mkdir -p /sluice/outputs/sub
              echo hello > /sluice/outputs/sub/greeting.txt
              echo '{{"rows": 3, "ok": true, "score": 0.5}}' > /sluice/outputs/metrics.json
          - name: consume
            needs: [produce]
            config: {{rows: "${{{{ params.rows }}}}", label: "n=${{{{ params.rows }}}}"}}
            run: |
              cat /sluice/inputs/produce/sub/greeting.txt
              cat /sluice/config.json
              cat data.txt
        """
        },
        files={"data.txt": "workspace file\n"},
    )
    manifest = run_pipeline(repo, rows=7)
    assert manifest.status is RunStatus.succeeded
    assert manifest.steps["produce"].metrics == {"rows": 3, "ok": True, "score": 0.5}
    log = log_of(repo, manifest, "consume")
    assert "hello" in log
    assert "workspace file" in log
    config = json.loads(log[log.index("{") : log.rindex("}") + 1])
    assert config == {"rows": 7, "label": "n=7"}


def test_checkpoints_survive_a_failed_attempt(tmp_path: Path, busybox_image: str) -> None:
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: resume
        steps:
          - name: train
            image: {busybox_image}
            retries: {{limit: 1, backoff: 0.1s}}
            run: |
              if [ -f /sluice/checkpoints/epoch ]; then
                echo "resumed from epoch $(cat /sluice/checkpoints/epoch)"
                exit 0
              fi
              echo 5 > /sluice/checkpoints/epoch
              exit 1
        """
        },
    )
    manifest = run_pipeline(repo)
    assert manifest.status is RunStatus.succeeded
    assert len(manifest.steps["train"].attempts) == 2
    assert "resumed from epoch 5" in log_of(repo, manifest, "train", 2)


def test_when_conditions_skip_and_propagate(tmp_path: Path, busybox_image: str) -> None:
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: gates
        params: {{threshold: 0.9}}
        defaults: {{image: {busybox_image}}}
        steps:
          - name: evaluate
            run: "echo '{{\\"accuracy\\": 0.8}}' > /sluice/outputs/metrics.json"
          - name: deploy
            needs: [evaluate]
            when: steps.evaluate.metrics.accuracy >= params.threshold
            run: echo deploying
          - name: announce
            needs: [deploy]
            run: echo announced
          - name: report
            needs: [evaluate]
            when: steps.evaluate.metrics.accuracy < params.threshold
            run: echo reporting
        """
        },
    )
    manifest = run_pipeline(repo)
    assert manifest.status is RunStatus.succeeded
    assert manifest.steps["deploy"].status is StepStatus.skipped
    assert manifest.steps["announce"].status is StepStatus.skipped
    assert manifest.steps["report"].status is StepStatus.succeeded
    lowered = run_pipeline(repo, threshold=0.5)
    assert lowered.steps["deploy"].status is StepStatus.succeeded
    assert lowered.steps["announce"].status is StepStatus.succeeded
    assert lowered.steps["report"].status is StepStatus.skipped


@pytest.mark.parametrize(
    ("script", "why"),
    [
        ("ln -s / /sluice/outputs/root", "links to absolute"),
        ("ln -s ../../../etc /sluice/outputs/etc", "outside"),
        ("mkfifo /sluice/outputs/pipe", "FIFO"),
    ],
)
def test_unsafe_output_archives_are_refused(
    tmp_path: Path, busybox_image: str, script: str, why: str
) -> None:
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: unsafe
        steps:
          - name: evil
            image: {busybox_image}
            run: "echo fine > /sluice/outputs/ok.txt; {script}"
        """
        },
    )
    before = {p for p in tmp_path.rglob("*")}
    manifest = run_pipeline(repo)
    step = manifest.steps["evil"]
    assert step.status is StepStatus.failed
    assert step.reason is not None and why.lower() in step.reason.lower()
    run_dir = repo / ".sluice" / "runs" / manifest.run_id
    written = {p for p in tmp_path.rglob("*")} - before
    engine_dir = repo / ".sluice"
    store = engine_dir / "artifacts"
    outside = written - {engine_dir, engine_dir / ".gitignore", run_dir.parent, store}
    kept = (run_dir, engine_dir / "cache")  # the run, and the pipeline cache
    assert [p for p in outside if not any(p.is_relative_to(k) for k in kept)] == []
    assert not any(p.is_file() for p in store.rglob("*"))  # nothing of a refused archive is kept
    assert not (run_dir / "steps" / "evil" / "outputs" / "ok.txt").exists()


def test_engine_environment_never_reaches_steps(
    tmp_path: Path, busybox_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_enginetoken123")
    monkeypatch.setenv("ACTIONS_RUNTIME_TOKEN", "runtime-token-456")
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: isolated
        steps:
          - name: show
            image: {busybox_image}
            env: {{MODEL_NAME: churn}}
            run: env | sort
        """
        },
    )
    manifest = run_pipeline(repo)
    log = log_of(repo, manifest, "show")
    assert "GITHUB_TOKEN" not in log and "ghs_enginetoken123" not in log
    assert "ACTIONS_RUNTIME_TOKEN" not in log
    names = {line.split("=", 1)[0] for line in log.splitlines() if "=" in line}
    sluice = {n for n in names if n.startswith("SLUICE_")}
    assert sluice == {
        "SLUICE_RUN_ID",
        "SLUICE_PIPELINE",
        "SLUICE_STEP",
        "SLUICE_ATTEMPT",
        "SLUICE_CONFIG",
        "SLUICE_INPUTS",
        "SLUICE_OUTPUTS",
    }
    assert "MODEL_NAME=churn" in log


def test_secrets_are_masked_in_logs_and_manifest(tmp_path: Path, busybox_image: str) -> None:
    secret = "s3cr3t-value-987"
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: secretive
        steps:
          - name: leak
            image: {busybox_image}
            secrets: [API_TOKEN]
            run: 'echo "token is $API_TOKEN"; echo "$API_TOKEN" >&2; exit 1'
        """
        },
    )
    manifest = run_pipeline(repo, secrets={"API_TOKEN": secret})
    run_dir = repo / ".sluice" / "runs" / manifest.run_id
    log = log_of(repo, manifest, "leak")
    assert "token is ***" in log
    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix in (".log", ".json"):
            assert secret not in path.read_text(errors="replace"), path
    assert secret not in manifest.to_json()
