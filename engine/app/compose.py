"""The one place that builds adapters: results branch, runtime, artifact store, executor."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.adapters import pipeline_files
from engine.adapters.artifacts import ArtifactStore
from engine.adapters.git_results import ResultsStore, store_for
from engine.core.config import RepoConfig
from engine.core.manifest import RunManifest, Trigger
from engine.core.parse import LoadedPipeline
from engine.errors import UsageError
from engine.ports import ContainerRuntime, Reporter
from engine.run.executor import Executor, RunOptions
from engine.run.records import History

if TYPE_CHECKING:
    from engine.adapters.docker_runtime import DockerRuntime


def repo_config(repo: Path, path: Path | None) -> RepoConfig:
    """`path`, else the repository's sluice.yaml, else the defaults."""
    if path is None and not (repo / "sluice.yaml").exists():
        return RepoConfig()
    return pipeline_files.load_repo_config(repo, path)


def pipeline(repo: Path, folder: Path, ref: str) -> LoadedPipeline:
    """A pipeline by name or file; NotFound otherwise."""
    found = pipeline_files.find_pipeline(repo, folder, ref)
    assert found is not None
    return found


def results_branch(repo: Path, config: RepoConfig, push: bool | str | None) -> ResultsStore | None:
    """The results branch to write (None outside a git repository)."""
    return store_for(repo, config, push)


def reading_branch(repo: Path, config: RepoConfig, *, fetch: bool = False) -> ResultsStore:
    """The results branch to read (never pushed to); UsageError outside a git repository."""
    store = store_for(repo, config, push=False)
    if store is None:
        raise UsageError(f"{repo} is not a git repository: there is no results branch to read")
    if fetch:
        store.fetch()
    return store


def docker_runtime() -> DockerRuntime:
    from engine.adapters.docker_runtime import DockerRuntime  # lazy: docker costs ~150 ms

    return DockerRuntime()


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
    store = results_branch(repo, config, push)
    if store is not None:
        store.catch_up()  # a fresh CI checkout has no results branch: no cache, no baseline
        options.history = History(store)
    options.artifacts = ArtifactStore(config.artifacts, repo)
    options.engine_image = os.environ.get("SLUICE_ENGINE_IMAGE") or None
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
        runtime = docker_runtime()
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
    """Run to the end and close the results store; `on_executor` sees it first (signals)."""
    built = executor(loaded, options, repo=repo, runtime=runtime, reporter=reporter)
    if on_executor is not None:
        on_executor(built)
    try:
        return built.run()
    finally:
        if options.history is not None:
            options.history.close()
