"""Run manifest models (schema `sluice/run/v1`) and their JSON round trip."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from engine.core.names import safe_name, safe_path

SCHEMA = "sluice/run/v1"

# Names the engine turns into paths (run ids, pipeline and step names; output names and log
# paths, in folders): checked whenever a manifest or a cache entry is read, since the results
# branch is untrusted input (see engine/core/names.py).
Name = Annotated[str, AfterValidator(safe_name)]
RelPath = Annotated[str, AfterValidator(safe_path)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


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


def content_key(sha256: str) -> str:
    """Where an object lies inside any store: `sha256/<ab>/<the other 62 digits>`."""
    return f"sha256/{sha256[:2]}/{sha256[2:]}"


_KEY_TAIL = re.compile(r"/sha256/[0-9a-f]{2}/[0-9a-f]{62}$")


class ArtifactPointer(_Model):
    """One stored output: the store as configured (`s3://bucket/prefix`; a `file://` store
    inside the repository relative to its root), the content key, sha256 and size; `uri`
    joins the two. Old records (a machine-absolute `file:///...` uri) read the same way.
    The engine fetches by sha256 from the store it is configured with, never from `uri`.

    >>> old = ArtifactPointer(uri="file:///tmp/x/store/sha256/ab/" + "c" * 62,
    ...                       sha256="ab" + "c" * 62, size=1)
    >>> old.store, old.key == content_key(old.sha256)
    ('file:///tmp/x/store', True)
    """

    uri: str
    sha256: Sha256
    size: Annotated[int, Field(ge=0)]
    store: str = ""
    key: str = ""

    @model_validator(mode="after")
    def _named(self) -> ArtifactPointer:
        if not self.key:
            self.key = content_key(self.sha256)
        if self.key != content_key(self.sha256):  # the branch is untrusted
            raise ValueError(f"key {self.key[:80]!r} is not the content key of its sha256")
        if not self.store:
            self.store = _KEY_TAIL.sub("", self.uri)
        return self


class Attempt(_Model):
    number: int
    outcome: Outcome | None = None  # None while it runs
    exit_code: int | None = None
    started_at: str
    finished_at: str | None = None
    duration_s: float | None = None
    log: RelPath | None = None
    # The whole log in the artifact store, when the results branch keeps only its tail
    # (core/log_tail.py); None for a log the branch holds whole, and in older records.
    log_full: ArtifactPointer | None = None
    max_memory_bytes: int | None = None
    cpu_s: float | None = None
    error: str | None = None


class StepRecord(_Model):
    status: StepStatus = StepStatus.pending
    type: str = "custom"
    image: str = ""
    image_id: str | None = None
    cache_key: str | None = None
    cached_from: Name | None = None
    needs: list[Name] = Field(default_factory=list)
    is_finally: bool = False
    reason: str | None = None  # why skipped / upstream_failed / failed, in words
    attempts: list[Attempt] = Field(default_factory=list)
    outputs: dict[RelPath, ArtifactPointer] = Field(default_factory=dict)
    metrics: dict[str, float | int | bool] = Field(default_factory=dict)
    checkpoints: ArtifactPointer | None = None  # of its last failed attempt, for `sluice retry`
    warnings: list[str] = Field(default_factory=list)  # e.g. a `when` read a missing metric
    job: dict[str, str] | None = None  # jobs mode: the GitHub job that ran it {job, runner, url}
    # Fan-out (engine.core.fanout): an instance names its step and its values; the step
    # itself (the group) names its instances and keeps the fan-in index as output index.json.
    instance_of: Name | None = None
    matrix: dict[str, bool | int | float | str] | None = None
    instances: list[Name] = Field(default_factory=list)


class Trigger(_Model):
    kind: str = "manual"
    event: str | None = None
    scheduled_for: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


class RunManifest(_Model):
    schema_: str = Field(default=SCHEMA, alias="schema")
    run_id: Name
    pipeline: Name
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
    baseline_run: Name | None = None  # the production run `when` and baseline.json saw
    approvals: list[dict[str, str]] = Field(default_factory=list)  # {step, decision, by, at}
    steps: dict[Name, StepRecord] = Field(default_factory=dict)

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> RunManifest:
        return cls.model_validate_json(text)


def with_step_records(manifest: RunManifest, records: Mapping[str, bytes]) -> RunManifest:
    """The manifest with jobs mode's per-step records (`<step>.json` -> bytes) laid over it.

    A record counts only for a step the manifest has that is not yet finished there (once
    `finish` folded the records in, a late one changes nothing); one that does not load
    (the branch is untrusted) is left out.
    """
    merged: RunManifest | None = None
    for file, data in sorted(records.items()):
        name = file.removesuffix(".json")
        current = manifest.steps.get(name)
        if not file.endswith(".json") or current is None or current.status in TERMINAL:
            continue
        try:
            fields = json.loads(data)
            approvals = _Approvals.validate_python(fields.pop("approvals", []))
            record = StepRecord.model_validate(fields)
        except (ValueError, AttributeError):
            continue
        merged = merged or manifest.model_copy(deep=True)
        merged.steps[name] = record
        merged.approvals += [a for a in approvals if a.get("step") == name]
    return merged or manifest


_Approvals = TypeAdapter(list[dict[str, str]])


def refusal(exc: ValidationError, limit: int = 3) -> str:
    """Why a record read from the results branch was refused, naming each field.

    >>> try:
    ...     StepRecord.model_validate({"needs": ["a"], "cached_from": "/x"})
    ... except ValidationError as exc:
    ...     print(refusal(exc))
    cached_from: '/x' is an absolute path
    """
    found = []
    for error in exc.errors()[:limit]:
        loc = [str(part) for part in error["loc"]]
        if loc and loc[-1] == "[key]":  # a bad key: name the mapping, the message shows the key
            loc = loc[:-2]
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] not in ("value_error", "missing"):  # show what pydantic refused
            message = f"{message} (got {str(error.get('input'))[:80]!r})"
        found.append(f"{'.'.join(loc) or 'the record'}: {message}")
    more = exc.error_count() - limit
    return "; ".join(found) + (f"; and {more} more" if more > 0 else "")
