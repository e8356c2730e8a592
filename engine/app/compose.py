"""The one place that builds adapters: results branch, container runtime, artifact store.

Kept light: `sluice runs` and `show` read the results branch without loading the run modules,
the artifact store or Docker.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from engine.adapters.git_results import ResultsStore, store_for
from engine.core.config import RepoConfig
from engine.errors import UsageError

if TYPE_CHECKING:
    from engine.adapters.artifacts import ArtifactStore
    from engine.adapters.docker_runtime import DockerRuntime


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


def artifact_store(config: RepoConfig, repo: Path) -> ArtifactStore:
    """Where step outputs go: `artifacts:` of sluice.yaml (default: .sluice/artifacts)."""
    from engine.adapters.artifacts import ArtifactStore  # lazy: `runs` and `show` need no store

    return ArtifactStore(config.artifacts, repo)
