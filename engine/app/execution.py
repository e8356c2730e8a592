"""A run's options (with the adapters compose builds), its executor, and running it to the end."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.adapters import github_ci
from engine.app import compose
from engine.core.config import RepoConfig
from engine.core.manifest import RunManifest, Trigger
from engine.core.parse import LoadedPipeline
from engine.ports import ContainerRuntime, Reporter
from engine.run.executor import Executor
from engine.run.options import RunOptions
from engine.run.records import History


def run_options(
    repo: Path,
    config: RepoConfig,
    loaded: LoadedPipeline,
    *,
    trigger: Trigger,
    params: dict[str, Any] | None = None,
    push: bool | str | None = None,
    max_parallel: int | None = None,
) -> RunOptions:
    """Options with the results branch (when `repo` is a git repository) and the artifact store.

    `params`: default, the pipeline's own defaults.
    """
    if params is None:
        params = dict(loaded.pipeline.params)
    wanted = {name for step in loaded.steps for name in step.secrets}
    secrets = {name: os.environ[name] for name in wanted if name in os.environ}
    options = RunOptions(params=params, trigger=trigger, secrets=secrets)
    options.max_parallel = max_parallel or config.max_parallel or options.max_parallel
    store = compose.results_branch(repo, config, push)
    if store is not None:
        store.catch_up()  # a fresh CI checkout has no results branch: no cache, no baseline
        options.history = History(store)
    options.artifacts = compose.artifact_store(config, repo)
    options.engine_image = os.environ.get("SLUICE_ENGINE_IMAGE") or None
    options.ci = github_ci.ci_context(os.environ)
    return options


def executor(
    loaded: LoadedPipeline,
    options: RunOptions,
    *,
    repo: Path,
    runtime: ContainerRuntime | None = None,
    reporter: Reporter | None = None,
) -> Executor:
    """An executor over `runtime` (default: Docker)."""
    if runtime is None:
        runtime = compose.docker_runtime()
    return Executor(loaded, runtime, repo=repo, options=options, reporter=reporter)


def execute(
    repo: Path,
    loaded: LoadedPipeline,
    options: RunOptions,
    *,
    reporter: Reporter | None = None,
    runtime: ContainerRuntime | None = None,
    on_executor: Callable[[Executor], None] | None = None,
) -> RunManifest:
    """Run to the end and close the results store; `on_executor` sees it first (signals).

    A run whose final record did not reach the results branch (or its remote) comes back
    with `engine_error` set and `error` saying why: the engine did not finish its work
    (exit 3), though the record committed locally says how the run itself ended.
    """
    built = executor(loaded, options, repo=repo, runtime=runtime, reporter=reporter)
    if on_executor is not None:
        on_executor(built)
    try:
        manifest = built.run()
    finally:
        if options.history is not None:
            options.history.close()
    failure = built.recorder.unrecorded
    if failure is not None:
        said = f"the run's final record failed: {failure.message}"
        said += f" ({failure.hint})" if failure.hint else ""
        manifest.engine_error = True
        manifest.error = built.mask(f"{manifest.error}; {said}" if manifest.error else said)
    return manifest
