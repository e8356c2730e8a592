"""`sluice.yaml` settings models: light to import (reading commands need no pipeline models)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

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


def _not_github(name: str) -> str:
    if name.upper().startswith("GITHUB_"):
        raise ValueError(f"{name}: GITHUB_* is the runner's own (GITHUB_TOKEN is always passed)")
    return name


def _a_step(step: dict[str, Any]) -> dict[str, Any]:
    if ("uses" in step) == ("run" in step) or not all(isinstance(k, str) for k in step):
        raise ValueError("a step has exactly one of `uses:` and `run:`, as in a workflow")
    return step


EnvName = Annotated[
    str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"), AfterValidator(_not_github)
]
Permission = Literal[
    "actions",
    "attestations",
    "checks",
    "deployments",
    "discussions",
    "id-token",
    "issues",
    "packages",
    "pages",
    "pull-requests",
    "repository-projects",
    "security-events",
    "statuses",
]  # `contents` stays `write`: the results branch is pushed


class WorkflowConfig(StrictModel):
    """What `sluice workflow generate` adds to the job, e.g. the artifact store's credentials:
    `env` for the Action's step, `permissions` for the job (`id-token: write` for OIDC),
    `steps_before` the Action (e.g. aws-actions/configure-aws-credentials)."""

    env: dict[EnvName, str] = Field(default_factory=dict)
    permissions: dict[Permission, Literal["read", "write", "none"]] = Field(default_factory=dict)
    steps_before: list[Annotated[dict[str, Any], AfterValidator(_a_step)]] = Field(
        default_factory=list, max_length=20
    )


class RepoConfig(StrictModel):
    """`sluice.yaml` at the repository root (every field optional)."""

    pipelines: str = "pipelines/"
    results: ResultsConfig = Field(default_factory=ResultsConfig)
    artifacts: str = layout.DEFAULT_ARTIFACTS
    max_parallel: Annotated[int, Field(ge=1, le=256)] | None = None
    drift: DriftConfig = Field(default_factory=DriftConfig)
    workflow: WorkflowConfig = Field(default_factory=WorkflowConfig)
