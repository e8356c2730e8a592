"""What the engine keeps on the results branch besides manifests: cache index, production."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.adapters.git_results import ClaimLost, ResultsStore
from engine.core import cache
from engine.core.manifest import ArtifactPointer, RunManifest, StepStatus, utc_iso
from engine.errors import EngineUnavailable

PRODUCTION_SCHEMA = "sluice/production/v1"
KEPT = 100  # entries (and lineage) the pointer keeps; every entry also has its own file
IMPLIED_FROM_RUNS = 100  # a branch without a pointer: production is read back from these runs
_CLAIM_ATTEMPTS = 20

Action = Literal["deploy", "promote", "rollback"]


class CacheEntry(BaseModel):
    """One cached step result: enough to reuse it without its run's manifest."""

    run_id: str
    pipeline: str
    step: str
    outputs: dict[str, ArtifactPointer]
    metrics: dict[str, float | int | bool]


class ProductionEntry(BaseModel):
    """One change of a pipeline's production run (`seq` counts them from 1)."""

    seq: int = 0  # 0: not recorded (implied by an older results branch)
    run_id: str
    step: str
    action: Action
    by: str = ""
    at: str = ""
    previous: str | None = None  # the run that was production before this entry


class Production(ProductionEntry):
    """`production/<pipeline>.json`: the current entry, what rollback walks back through,
    and the latest entries, newest first."""

    model_config = ConfigDict(populate_by_name=True)

    schema_: str = Field(default=PRODUCTION_SCHEMA, alias="schema")
    pipeline: str
    lineage: list[str] = Field(default_factory=list)  # oldest first; the last is run_id
    history: list[ProductionEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _current_ends_the_lineage(self) -> Production:
        if not self.lineage or self.lineage[-1] != self.run_id:
            self.lineage = [*self.lineage, self.run_id]
        return self

    def entry(self) -> ProductionEntry:
        """The current entry alone."""
        return ProductionEntry.model_validate(self.model_dump(include=_ENTRY_FIELDS))

    def rollback_target(self) -> str | None:
        """The run production was before the current one, rolled-back runs left out."""
        return self.lineage[-2] if len(self.lineage) > 1 else None

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2) + "\n"


_ENTRY_FIELDS = set(ProductionEntry.model_fields)
# Given the current production (None: there is none), the change to make:
# (run id, baseline step, action), or None to leave production as it is.
Decide = Callable[[Production | None], tuple[str, str, Action] | None]


def advance(
    current: Production | None,
    *,
    pipeline: str,
    run_id: str,
    step: str,
    action: Action,
    by: str,
    at: str,
    seq: int,
) -> Production:
    """Production after one more entry.

    The lineage is a stack: deploy and promote push the run; a rollback to a run that
    is in it pops back to that run's last place, so two rollbacks in a row go two steps
    back; a rollback (`--to`) to a run that never was production pushes it.

    >>> p = advance(None, pipeline="p", run_id="a", step="s", action="deploy", by="", at="", seq=1)
    >>> advance(p, pipeline="p", run_id="b", step="s", action="promote", by="", at="", seq=2).lineage
    ['a', 'b']
    """
    lineage = list(current.lineage) if current else []
    earlier = lineage[:-1]
    if action == "rollback" and run_id in earlier:
        lineage = earlier[: len(earlier) - earlier[::-1].index(run_id)]
    else:
        lineage.append(run_id)
    entry = ProductionEntry(
        seq=seq,
        run_id=run_id,
        step=step,
        action=action,
        by=by,
        at=at,
        previous=current.run_id if current else None,
    )
    history = [entry, *(current.history if current else [])][:KEPT]
    return Production(
        **entry.model_dump(), pipeline=pipeline, lineage=lineage[-KEPT:], history=history
    )


def production_path(pipeline: str) -> str:
    return f"production/{pipeline}.json"


def production_entry_path(pipeline: str, seq: int) -> str:
    return f"production/{pipeline}/{seq:08d}.json"


def succeeded_path(pipeline: str, step: str) -> str:
    return f"index/succeeded/{pipeline}/{step}"


def _json(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None  # a damaged index entry is a miss, not a crash


def _deployer(manifest: RunManifest, step: str) -> str:
    """Who deployed: whoever approved the step, else the run's trigger."""
    approvers = [
        a.get("by", "")
        for a in manifest.approvals
        if a.get("step") == step and a.get("decision") == "approve"
    ]
    return approvers[-1] if approvers and approvers[-1] else f"{manifest.trigger.kind} run"


class History:
    """Reads and writes the engine's own records through a ResultsStore."""

    def __init__(self, store: ResultsStore) -> None:
        self.store = store

    def cache_entry(self, cache_key: str) -> CacheEntry | None:
        data = _json(self.store.read(cache.entry_path(cache_key)))
        try:
            return CacheEntry.model_validate(data) if data is not None else None
        except ValidationError:
            return None

    def last_components(self, pipeline: str, step: str) -> dict[str, Any] | None:
        data = _json(self.store.read(cache.last_path(pipeline, step)))
        return data if isinstance(data, dict) else None

    # -- production -------------------------------------------------------------------------

    def production(self, pipeline: str, step: str) -> RunManifest | None:
        """The production run: the pointer's, else the latest run where `step` succeeded."""
        pointer = self.pointer(pipeline)
        run_id = pointer.run_id if pointer else self._latest_succeeded(pipeline, step)
        return self.store.manifest(run_id) if run_id else None

    def pointer(self, pipeline: str) -> Production | None:
        """`production/<pipeline>.json`, None when absent or damaged."""
        data = _json(self.store.read(production_path(pipeline)))
        if not isinstance(data, dict):
            return None
        try:
            return Production.model_validate({"pipeline": pipeline, **data})
        except ValidationError:
            return None

    def production_state(
        self, pipeline: str, step: str, *, exclude: str | None = None
    ) -> Production | None:
        """The pointer; on a branch from before it existed, what the succeeded runs imply.

        Before the pointer, production was always the latest run where `step` succeeded,
        so those runs (of the latest IMPLIED_FROM_RUNS, oldest first) are its lineage.
        `exclude` leaves out a run being recorded right now.
        """
        pointer = self.pointer(pipeline)
        if pointer is not None:
            return pointer
        latest = self._latest_succeeded(pipeline, step)
        found = sorted(
            m.run_id
            for m in self.store.runs(pipeline, IMPLIED_FROM_RUNS)
            if (rec := m.steps.get(step)) is not None and rec.status is StepStatus.succeeded
        )
        lineage = [r for r in found if r != latest] + ([latest] if latest else [])
        lineage = [r for r in lineage if r != exclude]
        if not lineage:
            return None
        return Production(
            pipeline=pipeline, run_id=lineage[-1], step=step, action="deploy", lineage=lineage
        )

    def baseline_step(self, pipeline: str) -> str | None:
        """The baseline step the results branch records for `pipeline` (its file aside)."""
        pointer = self.pointer(pipeline)
        if pointer is not None:
            return pointer.step
        steps = self.store.list_dir(f"index/succeeded/{pipeline}")
        return steps[0] if len(steps) == 1 else None

    def change_production(
        self,
        pipeline: str,
        step: str,
        decide: Decide,
        *,
        by: str,
        exclude: str | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> tuple[Production | None, Production | None]:
        """Record the change `decide` asks for; (production before, after).

        Entry `seq` is claimed (`production/<pipeline>/<seq>.json` must be absent, here
        and on the remote), so two writers never both record entry N: the one that loses
        reads the new production and asks `decide` again.
        """
        for _ in range(_CLAIM_ATTEMPTS):
            before = self.production_state(pipeline, step, exclude=exclude)
            wanted = decide(before)
            if wanted is None:
                return before, before
            run_id, run_step, action = wanted
            seq = 1 + (before.seq if before and before.seq else self._last_seq(pipeline))
            after = advance(
                before,
                pipeline=pipeline,
                run_id=run_id,
                step=run_step,
                action=action,
                by=by,
                at=utc_iso(now()),
                seq=seq,
            )
            claim = production_entry_path(pipeline, seq)
            changes: dict[str, bytes | None] = {
                production_path(pipeline): after.to_json().encode(),
                claim: after.entry().model_dump_json(indent=2).encode() + b"\n",
            }
            message = f"sluice: {action} {pipeline} to {run_id}"
            try:
                self.store.commit(changes, message, expect_absent=[claim])
            except ClaimLost:
                continue  # another writer recorded entry `seq` first
            return before, after
        raise EngineUnavailable(
            f"production of {pipeline} kept changing: gave up after {_CLAIM_ATTEMPTS} tries"
        )

    def _latest_succeeded(self, pipeline: str, step: str) -> str | None:
        latest = self.store.read(succeeded_path(pipeline, step))
        return (latest.decode().strip() or None) if latest else None

    def _last_seq(self, pipeline: str) -> int:
        names = self.store.list_dir(f"production/{pipeline}")
        seqs = [int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit()]
        return max(seqs, default=0)

    # -- runs -------------------------------------------------------------------------------

    def record(
        self,
        manifest: RunManifest,
        *,
        logs: Mapping[str, bytes],
        components: Mapping[str, Mapping[str, Any]],
        baseline_step: str | None,
        newly_done: set[str],
    ) -> None:
        """Commit the manifest, new logs, and index entries for steps that just succeeded.

        A run whose baseline step just succeeded becomes production (action `deploy`),
        recorded right after its manifest.
        """
        extra: dict[str, bytes | None] = {}
        deployed = False
        for name in newly_done:
            record = manifest.steps[name]
            if record.status is not StepStatus.succeeded:
                continue
            parts = components.get(name)
            if parts is not None and record.cache_key:
                entry = CacheEntry(
                    run_id=manifest.run_id,
                    pipeline=manifest.pipeline,
                    step=name,
                    outputs=record.outputs,
                    metrics=record.metrics,
                )
                extra[cache.entry_path(record.cache_key)] = entry.model_dump_json().encode()
                extra[cache.last_path(manifest.pipeline, name)] = json.dumps(dict(parts)).encode()
            if name == baseline_step:
                extra[succeeded_path(manifest.pipeline, name)] = manifest.run_id.encode()
                deployed = True
        self.store.record_run(manifest, logs=logs, extra=extra)
        if deployed and baseline_step is not None:
            self._deployed(manifest, baseline_step)

    def _deployed(self, manifest: RunManifest, step: str) -> None:
        run_id = manifest.run_id

        def decide(current: Production | None) -> tuple[str, str, Action] | None:
            # Recording again after a failed push must not add a second entry.
            if current is not None and (
                current.run_id == run_id
                or any(e.run_id == run_id and e.action == "deploy" for e in current.history)
            ):
                return None
            return run_id, step, "deploy"

        self.change_production(
            manifest.pipeline, step, decide, by=_deployer(manifest, step), exclude=run_id
        )
