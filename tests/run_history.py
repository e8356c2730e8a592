"""Runs recorded through the engine onto a real git results branch, for the diff and report
tests: the executor, the git results branch and the artifact store are the real ones; only
the containers are the in-memory FakeRuntime (Docker tests use `sluice run` instead)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.adapters.artifacts import DEFAULT_URL, ArtifactStore
from engine.adapters.fake_runtime import FakeOutcome, FakeRuntime
from engine.adapters.git_results import store_for
from engine.adapters.pipeline_files import load_file
from engine.core.config import RepoConfig
from engine.core.manifest import RunManifest, Trigger
from engine.ports import ContainerSpec
from engine.run.executor import Executor, RunOptions
from engine.run.records import History
from tests.conftest import make_repo

# A model whose quality follows param `n`: auc 0.9 + n/100, rmse 1/n. The gate says auc is
# better higher and rmse lower; `prepare` never changes, so later runs take it from the cache.
MODEL = """\
name: model
params: {n: 1, note: first}
baseline: {step: deploy}
defaults: {image: img}
steps:
  - name: prepare
    run: prepare
  - name: train
    needs: [prepare]
    command: [train, "${{ params.n }}"]
    config: {n: "${{ params.n }}"}
  - name: evaluate
    needs: [train]
    run: evaluate
    config: {n: "${{ params.n }}"}
  - name: deploy
    type: deployment
    needs: [evaluate]
    run: deploy
    when: >-
      steps.evaluate.metrics.rmse <= 10 and
      (not baseline or steps.evaluate.metrics.auc >= baseline.steps.evaluate.metrics.auc - 0.02)
"""


def _n(files: dict[str, bytes]) -> int:
    config: dict[str, Any] = json.loads(files["/sluice/config.json"])
    return int(config["n"])


def _train(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
    return FakeOutcome(files={"model.bin": f"model {_n(files)}".encode()})


def _evaluate(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
    n = _n(files)
    metrics = {"auc": round(0.9 + n / 100, 4), "rmse": round(1 / n, 4), "passed": n > 1}
    return FakeOutcome(files={"metrics.json": json.dumps(metrics).encode(), "eval.txt": b"ok"})


def _prepare(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
    return FakeOutcome(files={"data.csv": b"a,b\n1,2\n"})


class Recorded:
    """One repository whose runs of `model` land on its real `sluice-results` branch."""

    def __init__(self, tmp_path: Path, text: str = MODEL) -> None:
        self.repo = make_repo(tmp_path, {"model.yaml": text}, commit="pipelines")
        self.artifacts = ArtifactStore(DEFAULT_URL, self.repo)
        self.runtime = FakeRuntime({"prepare": _prepare, "train": _train, "evaluate": _evaluate})

    def run(self, **params: Any) -> RunManifest:
        loaded = load_file(self.repo / "pipelines" / "model.yaml", self.repo)
        branch = store_for(self.repo, RepoConfig(), push=False)
        assert branch is not None
        try:
            options = RunOptions(
                params={**loaded.pipeline.params, **params},
                trigger=Trigger(kind="manual"),
                max_parallel=2,
                artifacts=self.artifacts,
                history=History(branch),
            )
            return Executor(loaded, self.runtime, repo=self.repo, options=options).run()
        finally:
            branch.close()
