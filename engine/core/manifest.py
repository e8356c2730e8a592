"""Run manifest models (schema `sluice/run/v1`) and their JSON round trip."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA = "sluice/run/v1"


class Outcome(StrEnum):
    """How one attempt of a step ended."""

    succeeded = "succeeded"
    failed = "failed"
    timed_out = "timed_out"
    oom_killed = "oom_killed"
    error = "error"
    cancelled = "cancelled"


class StepStatus(StrEnum):
    pending = "pending"  # not decided yet (only while a run is going or paused)
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    skipped = "skipped"
    cached = "cached"
    upstream_failed = "upstream_failed"
    waiting_approval = "waiting_approval"
    cancelled = "cancelled"


TERMINAL = frozenset(
    {
        StepStatus.succeeded,
        StepStatus.failed,
        StepStatus.skipped,
        StepStatus.cached,
        StepStatus.upstream_failed,
        StepStatus.cancelled,
    }
)
DONE_OK = frozenset({StepStatus.succeeded, StepStatus.cached})


class RunStatus(StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    waiting_approval = "waiting_approval"
    cancelled = "cancelled"


# When several statuses meet (a run's steps, a command's runs), the first present wins.
PRECEDENCE = (
    RunStatus.cancelled,
    RunStatus.failed,
    RunStatus.waiting_approval,
    RunStatus.succeeded,
)


def run_status(steps: Iterable[StepStatus], *, cancelled: bool = False) -> RunStatus | None:
    """How a run ended, from its steps' statuses in PRECEDENCE; None while one is undecided.

    >>> run_status([StepStatus.succeeded, StepStatus.upstream_failed])
    <RunStatus.failed: 'failed'>
    >>> run_status([StepStatus.cached, StepStatus.running]) is None
    True
    """
    statuses = set(steps)
    if cancelled:
        return RunStatus.cancelled
    if statuses & {StepStatus.failed, StepStatus.upstream_failed}:
        return RunStatus.failed
    if StepStatus.waiting_approval in statuses:
        return RunStatus.waiting_approval
    if statuses <= TERMINAL:
        return RunStatus.succeeded
    return None


def overall_status(statuses: Iterable[str], *, none: str = "skipped") -> str:
    """One word for several runs: the first of PRECEDENCE present; `none` for no run.

    >>> overall_status(["succeeded", "failed", "waiting_approval"])
    'failed'
    >>> overall_status([])
    'skipped'
    """
    present = set(statuses)
    for status in PRECEDENCE:
        if status in present:
            return status.value
    return none


def utc_iso(moment: datetime) -> str:
    """`2026-11-24T10:00:00.123Z`: UTC, milliseconds, sortable."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class ArtifactPointer(_Model):
    uri: str
    sha256: str
    size: int


class Attempt(_Model):
    number: int
    outcome: Outcome | None = None  # None while it runs
    exit_code: int | None = None
    started_at: str
    finished_at: str | None = None
    duration_s: float | None = None
    log: str | None = None
    max_memory_bytes: int | None = None
    cpu_s: float | None = None
    error: str | None = None


class StepRecord(_Model):
    status: StepStatus = StepStatus.pending
    type: str = "custom"
    image: str = ""
    image_id: str | None = None
    cache_key: str | None = None
    cached_from: str | None = None
    needs: list[str] = Field(default_factory=list)
    is_finally: bool = False
    reason: str | None = None  # why skipped / upstream_failed / failed, in words
    attempts: list[Attempt] = Field(default_factory=list)
    outputs: dict[str, ArtifactPointer] = Field(default_factory=dict)
    metrics: dict[str, float | int | bool] = Field(default_factory=dict)
    checkpoints: ArtifactPointer | None = None  # of its last failed attempt, for `sluice retry`


class Trigger(_Model):
    kind: str = "manual"
    event: str | None = None
    scheduled_for: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


class RunManifest(_Model):
    schema_: str = Field(default=SCHEMA, alias="schema")
    run_id: str
    pipeline: str
    pipeline_file: str
    pipeline_sha256: str
    commit: str | None = None
    dirty: bool = False
    trigger: Trigger = Field(default_factory=Trigger)
    params: dict[str, Any] = Field(default_factory=dict)
    status: RunStatus = RunStatus.running
    started_at: str
    finished_at: str | None = None
    duration_s: float | None = None
    engine: dict[str, Any] = Field(default_factory=dict)
    ci: dict[str, Any] | None = None
    error: str | None = None
    engine_error: bool = False  # the engine itself could not run (exit 3); `error` says why
    baseline_run: str | None = None  # the production run `when` and baseline.json saw
    approvals: list[dict[str, str]] = Field(default_factory=list)  # {step, decision, by, at}
    steps: dict[str, StepRecord] = Field(default_factory=dict)

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> RunManifest:
        return cls.model_validate_json(text)
