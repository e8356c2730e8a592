"""The executor's decisions, driven through the in-memory FakeRuntime (no Docker)."""

from __future__ import annotations

import json
import re
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import make_repo, poll

from engine.adapters.artifacts import DEFAULT_URL, ArtifactStore
from engine.adapters.fake_runtime import FakeOutcome, FakeRuntime
from engine.core.manifest import RunManifest, RunStatus, StepStatus, Trigger
from engine.core.parse import load_text
from engine.core.spec import Outcome
from engine.errors import SluiceError
from engine.ports import ContainerSpec
from engine.run.executor import Executor, RunOptions, new_run_id, read_metrics


def execute(
    tmp_path: Path,
    text: str,
    runtime: FakeRuntime,
    *,
    params: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    start: bool = True,
) -> tuple[Executor, RunManifest | None]:
    repo = make_repo(tmp_path, files={"data.txt": "data\n"})
    loaded = load_text(textwrap.dedent(text), "pipelines/p.yaml")
    options = RunOptions(
        params={**loaded.pipeline.params, **(params or {})},
        trigger=Trigger(kind="manual"),
        max_parallel=4,
        secrets=secrets or {},
        artifacts=ArtifactStore(DEFAULT_URL, repo),
    )
    executor = Executor(loaded, runtime, repo=repo, options=options)
    return executor, executor.run() if start else None


CHAIN = """
name: chain
defaults: {image: img, retries: {limit: 2, backoff: 0.01s}}
steps:
  - name: a
    run: a
  - name: b
    needs: [a]
    run: b
  - name: c
    needs: [b]
    run: c
finally:
  - name: z
    run: z
"""


def test_a_chain_succeeds_in_order(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    _, manifest = execute(tmp_path, CHAIN, runtime)
    assert manifest is not None
    assert manifest.status is RunStatus.succeeded
    order = [spec.labels["sluice.step"] for spec in runtime.calls]
    assert order == ["a", "b", "c", "z"]
    assert all(rec.status is StepStatus.succeeded for rec in manifest.steps.values())


def test_retries_stop_at_the_limit_and_dependents_are_upstream_failed(tmp_path: Path) -> None:
    runtime = FakeRuntime({"b": [FakeOutcome(exit_code=1)] * 5})
    _, manifest = execute(tmp_path, CHAIN, runtime)
    assert manifest is not None
    assert manifest.status is RunStatus.failed
    assert len(manifest.steps["b"].attempts) == 3
    assert manifest.steps["b"].status is StepStatus.failed
    assert manifest.steps["c"].status is StepStatus.upstream_failed
    assert manifest.steps["c"].reason == "needs 'b', which failed"
    assert manifest.steps["z"].status is StepStatus.succeeded


def test_a_retry_that_succeeds_ends_succeeded(tmp_path: Path) -> None:
    runtime = FakeRuntime(
        {
            "a": [
                FakeOutcome(exit_code=1),
                FakeOutcome(oom_killed=True, exit_code=137),
                FakeOutcome(),
            ]
        }
    )
    _, manifest = execute(tmp_path, CHAIN, runtime)
    assert manifest is not None
    outcomes = [a.outcome for a in manifest.steps["a"].attempts]
    assert outcomes == [Outcome.failed, Outcome.oom_killed, Outcome.succeeded]
    assert manifest.status is RunStatus.succeeded


def test_errors_are_not_retried_unless_asked(tmp_path: Path) -> None:
    text = CHAIN.replace("run: a", "run: a\n    image: missing")
    runtime = FakeRuntime(missing_images=["missing"])
    _, manifest = execute(tmp_path, text, runtime)
    assert manifest is not None
    attempts = manifest.steps["a"].attempts
    assert [a.outcome for a in attempts] == [Outcome.error]
    assert attempts[0].error is not None and "missing" in attempts[0].error

    asked = text.replace(
        "retries: {limit: 2, backoff: 0.01s}",
        "retries: {limit: 2, backoff: 0.01s, outcomes: [error]}",
    )
    _, manifest = execute(tmp_path / "2", asked, FakeRuntime(missing_images=["missing"]))
    assert manifest is not None
    assert len(manifest.steps["a"].attempts) == 3


def test_independent_branches_go_on_after_a_failure(tmp_path: Path) -> None:
    text = """
    name: branches
    defaults: {image: img}
    steps:
      - name: left
        run: x
      - name: left-after
        needs: [left]
        run: x
      - name: right
        run: x
      - name: right-after
        needs: [right]
        run: x
    """
    _, manifest = execute(tmp_path, text, FakeRuntime({"left": [FakeOutcome(exit_code=2)]}))
    assert manifest is not None
    assert manifest.steps["left-after"].status is StepStatus.upstream_failed
    assert manifest.steps["right-after"].status is StepStatus.succeeded
    assert manifest.status is RunStatus.failed


def test_when_reads_metrics_and_params(tmp_path: Path) -> None:
    text = """
    name: gate
    params: {min_accuracy: 0.9}
    defaults: {image: img}
    steps:
      - name: evaluate
        run: x
      - name: deploy
        needs: [evaluate]
        when: steps.evaluate.metrics.accuracy >= params.min_accuracy
        run: x
      - name: after-deploy
        needs: [deploy]
        run: x
    """
    good = FakeRuntime({"evaluate": [FakeOutcome(files={"metrics.json": b'{"accuracy": 0.95}'})]})
    _, manifest = execute(tmp_path, text, good)
    assert manifest is not None
    assert manifest.steps["evaluate"].metrics == {"accuracy": 0.95}
    assert manifest.steps["deploy"].status is StepStatus.succeeded

    bad = FakeRuntime({"evaluate": [FakeOutcome(files={"metrics.json": b'{"accuracy": 0.5}'})]})
    _, manifest = execute(tmp_path / "2", text, bad)
    assert manifest is not None
    assert manifest.steps["deploy"].status is StepStatus.skipped
    assert "when is false" in (manifest.steps["deploy"].reason or "")
    assert manifest.steps["after-deploy"].status is StepStatus.skipped
    assert manifest.status is RunStatus.succeeded


def test_when_that_cannot_be_evaluated_fails_the_step(tmp_path: Path) -> None:
    text = """
    name: gate
    defaults: {image: img}
    steps:
      - name: evaluate
        run: x
      - name: deploy
        needs: [evaluate]
        when: steps.evaluate.metrics.accuracy > 'high'
        run: x
    """
    runtime = FakeRuntime({"evaluate": [FakeOutcome(files={"metrics.json": b'{"accuracy": 0.5}'})]})
    _, manifest = execute(tmp_path, text, runtime)
    assert manifest is not None
    assert manifest.steps["deploy"].status is StepStatus.failed
    assert "could not be evaluated" in (manifest.steps["deploy"].reason or "")


def test_bad_metrics_fail_the_step_with_a_clear_reason(tmp_path: Path) -> None:
    runtime = FakeRuntime({"a": [FakeOutcome(files={"metrics.json": b'{"name": "x"}'})]})
    _, manifest = execute(tmp_path, CHAIN.replace("limit: 2", "limit: 0"), runtime)
    assert manifest is not None
    assert manifest.steps["a"].status is StepStatus.failed
    assert "'name' is not a number or boolean" in (manifest.steps["a"].reason or "")


def test_approval_pauses_the_run(tmp_path: Path) -> None:
    text = """
    name: approve
    defaults: {image: img}
    steps:
      - name: train
        run: x
      - name: deploy
        needs: [train]
        approval: true
        run: x
    finally:
      - name: notify
        run: x
    """
    runtime = FakeRuntime()
    _, manifest = execute(tmp_path, text, runtime)
    assert manifest is not None
    assert manifest.status is RunStatus.waiting_approval
    assert manifest.steps["deploy"].status is StepStatus.waiting_approval
    assert manifest.steps["notify"].status is StepStatus.pending
    assert [s.labels["sluice.step"] for s in runtime.calls] == ["train"]


@pytest.mark.parametrize(("wanted", "paused"), [(False, False), (True, True)])
def test_approval_from_a_param_is_decided_by_the_runs_params(
    tmp_path: Path, wanted: bool, paused: bool
) -> None:
    text = """
    name: approve
    params: {require_approval: false}
    defaults: {image: img}
    steps:
      - name: train
        run: x
      - name: deploy
        needs: [train]
        approval: "${{ params.require_approval }}"
        run: x
    """
    runtime = FakeRuntime()
    _, manifest = execute(tmp_path, text, runtime, params={"require_approval": wanted})
    assert manifest is not None
    expected = StepStatus.waiting_approval if paused else StepStatus.succeeded
    assert manifest.steps["deploy"].status is expected
    ran = [s.labels["sluice.step"] for s in runtime.calls]
    assert ran == (["train"] if paused else ["train", "deploy"])


def test_container_spec_is_isolated_and_templated(tmp_path: Path) -> None:
    text = """
    name: spec
    params: {n: 3, label: base}
    steps:
      - name: s
        image: img
        command: [python, train.py, "--n=${{ params.n }}", "${{ trigger.kind }}"]
        env: {N: "${{ params.n }}", FIXED: "yes"}
        secrets: [TOKEN]
        config: {n: "${{ params.n }}", text: "n is ${{ params.n }}"}
        network: host
        resources: {cpus: 1.5, memory: 64m}
    """
    seen: dict[str, Any] = {}

    def script(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        seen["spec"] = spec
        seen["files"] = files
        return FakeOutcome()

    _, manifest = execute(
        tmp_path, text, FakeRuntime({"s": script}), params={"n": 5}, secrets={"TOKEN": "tok-123"}
    )
    assert manifest is not None
    spec: ContainerSpec = seen["spec"]
    assert spec.command == ["python", "train.py", "--n=5", "manual"]
    assert spec.env["N"] == "5" and spec.env["FIXED"] == "yes" and spec.env["TOKEN"] == "tok-123"
    assert {k for k in spec.env if k.startswith("SLUICE_")} == {
        "SLUICE_RUN_ID",
        "SLUICE_PIPELINE",
        "SLUICE_STEP",
        "SLUICE_ATTEMPT",
        "SLUICE_CONFIG",
        "SLUICE_INPUTS",
        "SLUICE_OUTPUTS",
    }
    assert len(spec.env) == 10
    assert spec.network == "host"
    assert spec.nano_cpus == 1_500_000_000 and spec.mem_limit == 64 * 1024**2
    assert spec.labels["sluice.run-id"] == manifest.run_id
    assert spec.labels["sluice.attempt"] == "1"
    config = json.loads(seen["files"]["/sluice/config.json"])
    assert config == {"n": 5, "text": "n is 5"}
    assert json.loads(seen["files"]["/sluice/params.json"]) == {"n": 5, "label": "base"}
    assert seen["files"]["/workspace/data.txt"] == b"data\n"


def test_a_missing_secret_is_an_error(tmp_path: Path) -> None:
    text = """
    name: sec
    steps:
      - name: s
        image: img
        run: x
        secrets: [NOT_SET]
    """
    _, manifest = execute(tmp_path, text, FakeRuntime())
    assert manifest is not None
    assert manifest.steps["s"].attempts[0].outcome is Outcome.error
    assert "NOT_SET is not set" in (manifest.steps["s"].reason or "")


def test_cancel_stops_the_run_and_kills_its_containers(tmp_path: Path) -> None:
    runtime = FakeRuntime({"b": [FakeOutcome(block=True)]})
    executor, _ = execute(tmp_path, CHAIN, runtime, start=False)
    result: list[RunManifest] = []
    worker = threading.Thread(target=lambda: result.append(executor.run()))
    worker.start()
    poll(
        lambda: executor.manifest.steps["b"].status is StepStatus.running,
        10,
        "step b to start",
        0.01,
    )
    executor.cancel()
    worker.join(timeout=10)
    assert not worker.is_alive()
    manifest = result[0]
    assert manifest.status is RunStatus.cancelled
    assert manifest.steps["b"].status is StepStatus.cancelled
    assert manifest.steps["c"].status is StepStatus.cancelled
    assert runtime.killed_runs == [manifest.run_id]
    saved = RunManifest.from_json(
        (tmp_path / "repo/.sluice/runs" / manifest.run_id / "manifest.json").read_text()
    )
    assert saved.status is RunStatus.cancelled


def test_manifest_round_trips_and_has_the_spec_shape(tmp_path: Path) -> None:
    _, manifest = execute(tmp_path, CHAIN, FakeRuntime())
    assert manifest is not None
    data = json.loads(manifest.to_json())
    assert data["schema"] == "sluice/run/v1"
    assert set(data) >= {
        "run_id",
        "pipeline",
        "pipeline_file",
        "pipeline_sha256",
        "commit",
        "dirty",
        "trigger",
        "params",
        "status",
        "started_at",
        "finished_at",
        "duration_s",
        "engine",
        "steps",
    }
    attempt = data["steps"]["a"]["attempts"][0]
    assert set(attempt) >= {
        "number",
        "outcome",
        "exit_code",
        "started_at",
        "finished_at",
        "duration_s",
        "log",
    }
    assert RunManifest.from_json(manifest.to_json()) == manifest


def test_run_ids_sort_by_time() -> None:
    from datetime import UTC, datetime

    early = new_run_id(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    late = new_run_id(datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC))
    assert re.fullmatch(r"20260102T030405Z-[0-9a-f]{6}", early)
    assert early < late


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[1, 2]", "JSON object"),
        (b"{not json", "not valid JSON"),
        (b'{"a": {"b": 1}}', "'a' is not a number"),
        (b'{"a": NaN}', "'a' is not a number"),
    ],
)
def test_read_metrics_refuses_what_is_not_flat_numbers(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "metrics.json"
    path.write_bytes(content)
    with pytest.raises(SluiceError, match=message):
        read_metrics(path)
