"""Start a run with the real adapters: what `run`, `retry`, `tick`, `trigger` and `serve` share."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.executor import Executor, RunOptions
from engine.loader import LoadedPipeline
from engine.manifest import RunManifest, Trigger
from engine.progress import Reporter
from engine.runtime.base import ContainerRuntime
from engine.spec import RepoConfig


def run_options(
    repo: Path,
    config: RepoConfig,
    loaded: LoadedPipeline,
    *,
    params: dict[str, Any],
    trigger: Trigger,
    push: bool | str | None = None,
    max_parallel: int | None = None,
) -> RunOptions:
    """Options with the results branch (when `repo` is a git repository) and the artifact store."""
    from engine.artifacts import ArtifactStore
    from engine.history import History
    from engine.results import store_for

    wanted = {name for step in loaded.steps for name in step.secrets}
    secrets = {name: os.environ[name] for name in wanted if name in os.environ}
    options = RunOptions(params=params, trigger=trigger, secrets=secrets)
    options.max_parallel = max_parallel or config.max_parallel or options.max_parallel
    store = store_for(repo, config, push)
    if store is not None:
        options.history = History(store)
    options.artifacts = ArtifactStore(config.artifacts, repo)
    return options


def execute(
    repo: Path,
    loaded: LoadedPipeline,
    options: RunOptions,
    *,
    reporter: Reporter | None = None,
    runtime: ContainerRuntime | None = None,
    on_executor: Callable[[Executor], None] | None = None,
) -> RunManifest:
    """Run to the end and close the results store; `on_executor` sees it first (signals)."""
    if runtime is None:
        from engine.runtime.docker import DockerRuntime

        runtime = DockerRuntime()
    executor = Executor(loaded, runtime, repo=repo, options=options, reporter=reporter)
    if on_executor is not None:
        on_executor(executor)
    try:
        return executor.run()
    finally:
        if options.history is not None:
            options.history.store.close()


class OneAtATime:
    """Runs started one after another: a signal cancels the current run and starts no more.

    Install `cancel` as the signal handler and pass `started` as `execute(on_executor=...)`.
    """

    def __init__(self) -> None:
        self.interrupted = threading.Event()
        self._current: Executor | None = None

    def cancel(self) -> None:
        self.interrupted.set()
        current = self._current
        if current is not None:
            current.cancel()

    def started(self, executor: Executor) -> None:
        self._current = executor
        if self.interrupted.is_set():  # the signal came between two runs
            executor.cancel()

    def finished(self) -> None:
        self._current = None
