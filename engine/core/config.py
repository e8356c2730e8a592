"""`sluice.yaml` settings models: light to import (reading commands need no pipeline models)."""

from __future__ import annotations

import re
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
    # Runs of a pipeline kept at the branch tip; older ones move to `archive/` in batches
    # (still readable: show, logs, retry, rollback read them at the commit that holds them).
    keep_runs: Annotated[int, Field(ge=1, le=100_000)] = 100
    archive_batch: Annotated[int, Field(ge=1, le=10_000)] = 50  # runs moved per commit


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


# The Sluice Action, pinned: `OWNER/REPO[/PATH]@REF`, optionally `  # vX.Y.Z`, or `./PATH`.
_ACTION_REF = re.compile(r"^(?:\./[\w./-]*|[\w.-]+/[\w./-]+@[\w./-]+)(?:\s+#\s*\S.*)?$")
# A published engine image pinned by digest: `REGISTRY/NAME[:TAG]@sha256:<64 hex>`.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_REF = re.compile(
    rf"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?@sha256:[0-9a-f]{64}$"
)


def action_ref(value: str) -> str:
    """A `workflow.uses` / `--uses` value, checked; ValueError naming the form otherwise."""
    text = value.strip()
    if text.startswith("docker://"):
        raise ValueError(f"{value!r} is an image: give it as `image:` (or --image), not `uses:`")
    if not _ACTION_REF.match(text):
        raise ValueError(
            f"{value!r} is not an Action reference: give OWNER/REPO@<commit>, e.g. "
            "'my-org/sluice@<40-hex commit>  # v1.2.0', or ./ for this repository's action.yml"
        )
    return text


def image_ref(value: str) -> str:
    """A `workflow.image` / `--image` value without `docker://`, pinned by digest."""
    text = value.strip().removeprefix("docker://")
    if not _IMAGE_REF.match(text):
        raise ValueError(
            f"{value!r} is not an image pinned by digest: give NAME@sha256:<64 hex digits>, "
            "e.g. ghcr.io/my-org/sluice@sha256:<digest> (the release workflow prints it)"
        )
    return text


class WorkflowConfig(StrictModel):
    """What `sluice workflow generate` writes: `mode` (one job for every pipeline, or a
    workflow per pipeline with a job per step), the engine step (`uses:` the Sluice Action,
    or `image:` a published engine image), and what it adds to the jobs, e.g. the artifact
    store's credentials: `env` for the engine step, `permissions` for the jobs (`id-token:
    write` for OIDC), `steps_before` the engine step (e.g. configure-aws-credentials)."""

    mode: Literal["single", "jobs"] = "single"
    uses: Annotated[str, AfterValidator(action_ref)] | None = None
    image: Annotated[str, AfterValidator(image_ref)] | None = None
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
