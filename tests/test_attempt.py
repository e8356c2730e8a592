"""run/attempt.py: one attempt of one step, driven by the fake runtime and a file:// store."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.adapters.artifacts import ArtifactStore
from engine.adapters.fake_runtime import FakeOutcome, FakeRuntime, Script
from engine.core.manifest import ArtifactPointer
from engine.core.parse import load_text
from engine.core.spec import Outcome, ResolvedStep
from engine.errors import EngineUnavailable
from engine.local.logs import Masker
from engine.local.workspace import WorkspaceSnapshot
from engine.ports import LABEL_ATTEMPT, LABEL_RUN, LABEL_STEP, ContainerSpec, NullReporter
from engine.run.attempt import AttemptReport, AttemptRunner
from engine.run.prepare import Prepared

PIPELINE = """
name: p
defaults: {image: img}
params: {n: 3}
steps:
  - {name: prep, run: prep}
  - name: train
    run: train
    needs: [prep]
    timeout: 30s
    secrets: [TOKEN]
    config: {lr: 0.1}
"""
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
SECRET = "s3cr3t-value"


def steps() -> dict[str, ResolvedStep]:
    return {s.name: s for s in load_text(PIPELINE, "pipelines/p.yaml").steps}


class Harness:
    def __init__(self, tmp_path: Path, script: Script | list[FakeOutcome]) -> None:
        self.runtime = FakeRuntime({"train": script, "prep": [FakeOutcome()]}, default=None)
        self.store = ArtifactStore(f"file://{tmp_path / 'store'}", tmp_path)
        self.run_dir = tmp_path / "run"
        self.lines: list[str] = []
        self.runner = AttemptRunner(
            runtime=self.runtime,
            store=self.store,
            run_dir=self.run_dir,
            run_id="20261125T100000Z-abc123",
            pipeline="p",
            workspace=WorkspaceSnapshot(root=tmp_path, tar=None),
            params={"n": 3},
            secrets={"TOKEN": SECRET},
            mask=Masker([SECRET]),
            reporter=NullReporter(),
            cancel=threading.Event(),
            clock=lambda: NOW,
            log_cap=1024**2,
            grace_s=1.0,
        )

    def prepared(self, name: str = "train", **changes: Any) -> Prepared:
        step = steps()[name]
        given: dict[str, Any] = {
            "step": step,
            "image_id": "sha256:" + "1" * 64,
            "argv": step.argv,
            "config": step.config,
            "env": {"MODE": "full"},
        }
        return Prepared(**{**given, **changes})

    def attempt(
        self,
        number: int = 1,
        inputs: Mapping[str, Mapping[str, ArtifactPointer]] | None = None,
        prepared: Prepared | None = None,
    ) -> AttemptReport:
        return self.runner.attempt(prepared or self.prepared(), number, inputs or {}, None)

    def log(self, report: AttemptReport) -> str:
        assert report.attempt.log is not None
        return (self.run_dir / report.attempt.log).read_text()


def test_a_succeeded_attempt_stores_outputs_and_reads_metrics(tmp_path: Path) -> None:
    seen: list[tuple[ContainerSpec, dict[str, bytes]]] = []

    def train(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        seen.append((spec, files))
        return FakeOutcome(
            logs=f"token is {SECRET}\nfitting\n",
            files={"metrics.json": b'{"accuracy": 0.9, "ok": true}', "model/w.bin": b"weights"},
        )

    harness = Harness(tmp_path, train)
    report = harness.attempt()
    assert report.attempt.outcome is Outcome.succeeded
    assert report.attempt.exit_code == 0 and report.attempt.error is None
    assert report.attempt.started_at == "2026-11-25T10:00:00.000Z"
    assert report.metrics == {"accuracy": 0.9, "ok": True}
    assert sorted(report.outputs) == ["metrics.json", "model/w.bin"]
    assert all(harness.store.has(p, verify=True) for p in report.outputs.values())
    assert report.engine_error is None and report.checkpoints is None
    assert harness.log(report) == "token is ***\nfitting\n"  # masked on the way to the file
    spec, files = seen[0]
    assert spec.env["TOKEN"] == SECRET and spec.env["MODE"] == "full"
    assert spec.env["SLUICE_STEP"] == "train" and spec.env["SLUICE_ATTEMPT"] == "1"
    assert spec.timeout == 30 and spec.grace == 1.0
    assert spec.labels[LABEL_RUN] == "20261125T100000Z-abc123"
    assert (spec.labels[LABEL_STEP], spec.labels[LABEL_ATTEMPT]) == ("train", "1")
    assert json.loads(files["/sluice/config.json"]) == {"lr": 0.1}
    assert json.loads(files["/sluice/params.json"]) == {"n": 3}


def test_upstream_outputs_arrive_under_inputs(tmp_path: Path) -> None:
    got: list[dict[str, bytes]] = []

    def train(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        got.append(files)
        return FakeOutcome()

    harness = Harness(tmp_path, train)
    source = tmp_path / "data.csv"
    source.write_text("a,b\n1,2\n")
    pointer = harness.store.put_file(source)
    report = harness.attempt(inputs={"prep": {"data/data.csv": pointer}})
    assert report.attempt.outcome is Outcome.succeeded
    assert got[0]["/sluice/inputs/prep/data/data.csv"] == b"a,b\n1,2\n"


def test_a_failed_attempt_keeps_its_checkpoints_for_the_next(tmp_path: Path) -> None:
    given: list[dict[str, bytes]] = []

    def train(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        given.append(files)
        if attempt == 1:
            return FakeOutcome(exit_code=2, files={"/sluice/checkpoints/epoch": b"7"})
        return FakeOutcome()

    harness = Harness(tmp_path, train)
    first = harness.attempt(1)
    assert first.attempt.outcome is Outcome.failed
    assert (first.attempt.exit_code, first.attempt.error) == (2, "exited with code 2")
    assert first.outputs == {} and first.checkpoints is not None
    assert harness.store.has(first.checkpoints, verify=True)
    assert harness.log(first).endswith("sluice: exited with code 2\n")
    second = harness.attempt(2)
    assert second.attempt.outcome is Outcome.succeeded
    assert given[1]["/sluice/checkpoints/epoch"] == b"7"
    assert "/sluice/checkpoints/epoch" not in given[0]


def test_bad_metrics_fail_the_attempt(tmp_path: Path) -> None:
    outcome = FakeOutcome(files={"metrics.json": b'{"accuracy": "high"}'})
    report = Harness(tmp_path, [outcome]).attempt()
    assert report.attempt.outcome is Outcome.failed
    assert "'accuracy' is not a number or boolean" in (report.attempt.error or "")
    assert report.outputs == {}


def test_a_timeout_is_its_own_outcome(tmp_path: Path) -> None:
    harness = Harness(tmp_path, [FakeOutcome(block=True)])
    step = steps()["train"].model_copy(update={"timeout": 0.05})
    report = harness.attempt(prepared=harness.prepared(step=step))
    assert report.attempt.outcome is Outcome.timed_out
    assert report.attempt.error == "timed out after 0.05 s"


def test_what_stops_an_attempt_before_its_container(tmp_path: Path) -> None:
    harness = Harness(tmp_path, [])
    no_image = harness.attempt(prepared=harness.prepared(image_id=None, error="image gone"))
    assert (no_image.attempt.outcome, no_image.attempt.error) == (Outcome.error, "image gone")
    harness.runner.secrets = {}
    unset = harness.attempt()
    assert unset.attempt.outcome is Outcome.error
    assert unset.attempt.error == "secret TOKEN is not set in the engine's environment"
    harness.runner.secrets = {"TOKEN": SECRET}
    harness.runner.cancel.set()
    assert harness.attempt().attempt.outcome is Outcome.cancelled
    assert harness.runtime.calls == []  # none of them reached the runtime


def test_a_store_that_cannot_be_written_is_the_engines_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = Harness(tmp_path, [FakeOutcome(files={"model.bin": b"w"})])

    def refuse(path: Path) -> ArtifactPointer:
        raise EngineUnavailable("cannot write to artifact store: disk full")

    monkeypatch.setattr(harness.store, "put_file", refuse)
    report = harness.attempt()
    assert report.attempt.outcome is Outcome.error
    assert isinstance(report.engine_error, EngineUnavailable)
    assert "the engine could not run" in (report.attempt.error or "")


def test_an_engine_bug_comes_back_as_an_error_outcome(tmp_path: Path) -> None:
    def broken(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        raise RuntimeError(f"bug with {SECRET}")

    report = Harness(tmp_path, broken).attempt()
    assert report.attempt.outcome is Outcome.error
    assert report.attempt.error == "engine error: RuntimeError: bug with ***"
