"""`sluice.yaml` settings models: light to import (reading commands need no pipeline models)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.core import layout


class StrictModel(BaseModel):
    """Base of every file-format model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ResultsConfig(StrictModel):
    branch: str = "sluice-results"
    remote: str = "origin"
    push: Literal["auto", "always", "never"] | bool = "auto"


class DriftConfig(StrictModel):
    """How a monitor run's drift signal starts the pipelines bound to it."""

    # run: in this process, right after the monitor run; dispatch: send a `sluice-drift`
    # repository_dispatch to $GITHUB_REPOSITORY, so each bound run gets its own workflow run.
    start: Literal["run", "dispatch"] = "run"


class RepoConfig(StrictModel):
    """`sluice.yaml` at the repository root (every field optional)."""

    pipelines: str = "pipelines/"
    results: ResultsConfig = Field(default_factory=ResultsConfig)
    artifacts: str = layout.DEFAULT_ARTIFACTS
    max_parallel: Annotated[int, Field(ge=1, le=256)] | None = None
    drift: DriftConfig = Field(default_factory=DriftConfig)
