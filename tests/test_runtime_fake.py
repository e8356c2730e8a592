"""The fake runtime itself: scripted outcomes, real tars in and out, cancellation."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from engine.adapters.fake_runtime import FakeOutcome, FakeRuntime
from engine.local.archives import TarBuilder, extract_tar
from engine.ports import (
    LABEL_ATTEMPT,
    LABEL_RUN,
    LABEL_STEP,
    BuildRequest,
    ContainerResult,
    ContainerRuntime,
    ContainerSpec,
    ImageMissing,
    Transfer,
)


def _spec(
    step: str, attempt: int, run_id: str = "r1", image: str = "img:1", timeout: float = 5
) -> ContainerSpec:
    labels = {LABEL_RUN: run_id, LABEL_STEP: step, LABEL_ATTEMPT: str(attempt)}
    return ContainerSpec(image=image, command=["true"], env={}, labels=labels, timeout=timeout)


def _run(
    runtime: ContainerRuntime, spec: ContainerSpec, transfer: Transfer
) -> tuple[ContainerResult, list[str]]:
    lines: list[str] = []
    result = runtime.run(spec, transfer, on_log=lines.append, cancel=threading.Event())
    return result, lines


def test_scripted_attempts_files_in_and_outputs_out(tmp_path: Path) -> None:
    seen: list[dict[str, bytes]] = []

    def train(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        seen.append(files)
        config = json.loads(files["/sluice/config.json"])
        if attempt == 1:
            return FakeOutcome(exit_code=1, logs="boom\n")
        return FakeOutcome(
            logs="epoch 1\nepoch 2",
            files={"metrics.json": json.dumps({"n": config["n"]}).encode(), "model/w.bin": b"w"},
        )

    runtime = FakeRuntime({"train": train})
    put = tmp_path / "put.tar"
    with TarBuilder(put) as tar:
        tar.add_dir("sluice/outputs")
        tar.add_bytes("sluice/config.json", b'{"n": 3}')
    out = tmp_path / "outputs.tar"
    transfer = Transfer(
        put=[put], fetch={"/sluice/outputs": out, "/sluice/checkpoints": tmp_path / "c"}
    )

    first, lines = _run(runtime, _spec("train", 1), transfer)
    assert (first.exit_code, lines) == (1, ["boom\n"])
    second, lines = _run(runtime, _spec("train", 2), transfer)
    assert second.exit_code == 0
    assert lines == ["epoch 1\n", "epoch 2"]
    assert second.fetched == {"/sluice/outputs": out}  # no checkpoints folder: skipped
    files = extract_tar(out, tmp_path / "dest", strip="outputs")
    assert files == [Path("metrics.json"), Path("model/w.bin")]
    assert json.loads((tmp_path / "dest" / "metrics.json").read_text()) == {"n": 3}
    assert [call.labels[LABEL_ATTEMPT] for call in runtime.calls] == ["1", "2"]
    assert seen[0]["/sluice/config.json"] == b'{"n": 3}'


def test_outcome_lists_images_and_unscripted_steps(tmp_path: Path) -> None:
    runtime = FakeRuntime(
        {"eval": [FakeOutcome(oom_killed=True, exit_code=137), FakeOutcome()]},
        default=None,
        missing_images=["gone:1"],
    )
    assert _run(runtime, _spec("eval", 1), Transfer())[0].oom_killed
    assert _run(runtime, _spec("eval", 2), Transfer())[0].exit_code == 0
    with pytest.raises(AssertionError, match="ran 3 times, scripted 2"):
        _run(runtime, _spec("eval", 3), Transfer())
    with pytest.raises(AssertionError, match="no outcome scripted for step 'other'"):
        _run(runtime, _spec("other", 1), Transfer())
    assert _run(runtime, _spec("eval", 1, image="gone:1"), Transfer())[0].error
    with pytest.raises(ImageMissing):
        runtime.image_id("gone:1")
    assert runtime.build_image(BuildRequest(tmp_path, "Dockerfile", "gone:1")).startswith("sha256:")
    assert runtime.image_id("gone:1") == runtime.image_id("gone:1")


def test_kill_run_ends_a_blocked_attempt_as_cancelled() -> None:
    runtime = FakeRuntime({"serve": [FakeOutcome(block=True, logs="listening\n")]})
    cancel, started = threading.Event(), threading.Event()
    results: list[ContainerResult] = []

    def attempt() -> None:
        spec = _spec("serve", 1, timeout=60)
        logs = lambda _line: started.set()  # noqa: E731
        results.append(runtime.run(spec, Transfer(), on_log=logs, cancel=cancel))

    worker = threading.Thread(target=attempt)
    worker.start()
    assert started.wait(5)
    cancel.set()  # the executor's order: cancel, then kill the run's containers
    assert runtime.kill_run("r1") == 1
    worker.join(5)
    assert results[0].cancelled
    assert runtime.kill_run("r1") == 0


def test_blocked_attempt_times_out() -> None:
    runtime = FakeRuntime({"serve": [FakeOutcome(block=True)]})
    result = runtime.run(
        _spec("serve", 1, timeout=0.05), Transfer(), on_log=print, cancel=threading.Event()
    )
    assert result.timed_out and result.exit_code == 143
