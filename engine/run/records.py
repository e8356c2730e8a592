"""What the engine keeps on the results branch besides manifests: cache index, production."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError

from engine.core import layout
from engine.core.manifest import (
    ArtifactPointer,
    Name,
    RelPath,
    RunManifest,
    StepStatus,
    refusal,
    utc_iso,
)
from engine.core.payloads import json_or_none
from engine.core.production import (
    IMPLIED_FROM_RUNS,
    Decide,
    Production,
    advance,
    deploy_once,
    deployer,
    implied,
    last_seq,
)
from engine.errors import ClaimLost, EngineUnavailable
from engine.ports import Clock, ResultsBranch, SystemClock

_CLAIM_ATTEMPTS = 20
_PREVIEW = "pull_request"  # a pull request's preview run (core/preview.py): never production


class _Change(NamedTuple):
    """A production change to commit: before, after (None: no change), files, claim, message."""

    before: Production | None
    after: Production | None
    files: dict[str, bytes | None]
    claim: str
    message: str


class CacheEntry(BaseModel):
    """One cached step result: enough to reuse it without its run's manifest."""

    run_id: Name
    pipeline: Name
    step: Name
    outputs: dict[RelPath, ArtifactPointer]
    metrics: dict[str, float | int | bool]


def refused_manifest(branch: ResultsBranch, run_id: str) -> str | None:
    """Why the branch's manifest of `run_id` does not load (the adapters hide such a run
    from listings); None when there is no manifest of that run at all."""
    for pipeline in branch.list_dir(layout.RUNS):
        path = layout.manifest(pipeline, run_id)
        data = branch.read(path)
        if data is None:
            continue
        try:
            RunManifest.from_json(data)
        except ValidationError as exc:
            return f"{path} on the results branch is refused: {refusal(exc)}"
        except ValueError as exc:
            return f"{path} on the results branch is not valid JSON: {exc}"
    return None


class History:
    """Reads and writes the engine's own records through the results branch."""

    def __init__(self, branch: ResultsBranch, clock: Clock | None = None) -> None:
        self.branch = branch
        self.clock = clock or SystemClock()

    def manifest(self, run_id: str) -> RunManifest | None:
        """The manifest of run `run_id`, None when the branch has no such run."""
        return self.branch.manifest(run_id)

    def cache_entry(
        self, cache_key: str, note: Callable[[str], None] | None = None
    ) -> CacheEntry | None:
        """The cached result of `cache_key`; None when absent or damaged. An entry with a
        name the engine refuses (the branch is untrusted) is a miss that `note` tells."""
        path = layout.cache_entry(cache_key)
        data = json_or_none(self.branch.read(path))
        try:
            return CacheEntry.model_validate(data) if data is not None else None
        except ValidationError as exc:
            if note is not None:
                note(f"cache entry {path} refused: {refusal(exc)}; the step runs again")
            return None

    def last_components(self, pipeline: str, step: str) -> dict[str, Any] | None:
        data = json_or_none(self.branch.read(layout.cache_last(pipeline, step)))
        return data if isinstance(data, dict) else None

    def close(self) -> None:
        """Release the results branch (its git process)."""
        self.branch.close()

    # -- production -------------------------------------------------------------------------

    def production(self, pipeline: str, step: str) -> RunManifest | None:
        """The production run: the pointer's, else the latest run where `step` succeeded."""
        pointer = self.pointer(pipeline)
        run_id = pointer.run_id if pointer else self._latest_succeeded(pipeline, step)
        return self.branch.manifest(run_id) if run_id else None

    def pointer(self, pipeline: str) -> Production | None:
        """`production/<pipeline>.json`, None when absent or damaged."""
        data = json_or_none(self.branch.read(layout.production(pipeline)))
        if not isinstance(data, dict):
            return None
        try:
            return Production.model_validate({"pipeline": pipeline, **data})
        except ValidationError:
            return None

    def production_state(
        self, pipeline: str, step: str, *, exclude: str | None = None
    ) -> Production | None:
        """The pointer; on a branch from before it existed, what the succeeded runs imply
        (of the latest IMPLIED_FROM_RUNS). `exclude` leaves out a run being recorded now."""
        pointer = self.pointer(pipeline)
        if pointer is not None:
            return pointer
        succeeded = [
            m.run_id
            for m in self.branch.runs(pipeline, IMPLIED_FROM_RUNS)
            if (rec := m.steps.get(step)) is not None and rec.status is StepStatus.succeeded
        ]
        latest = self._latest_succeeded(pipeline, step)
        return implied(pipeline, step, succeeded, latest, exclude)

    def baseline_step(self, pipeline: str) -> str | None:
        """The baseline step the results branch records for `pipeline` (its file aside)."""
        pointer = self.pointer(pipeline)
        if pointer is not None:
            return pointer.step
        steps = self.branch.list_dir(layout.succeeded_steps(pipeline))
        return steps[0] if len(steps) == 1 else None

    def change_production(
        self,
        pipeline: str,
        step: str,
        decide: Decide,
        *,
        by: str,
        exclude: str | None = None,
    ) -> tuple[Production | None, Production | None]:
        """Record the change `decide` asks for; (production before, after).

        Entry `seq` is claimed (`production/<pipeline>/<seq>.json` must be absent, here
        and on the remote), so two writers never both record entry N: the one that loses
        reads the new production and asks `decide` again.
        """
        for _ in range(_CLAIM_ATTEMPTS):
            change = self._production_change(pipeline, step, decide, by=by, exclude=exclude)
            if change.after is None:
                return change.before, change.before
            try:
                self.branch.commit(change.files, change.message, expect_absent=[change.claim])
            except ClaimLost:
                continue  # another writer recorded entry `seq` first
            return change.before, change.after
        raise EngineUnavailable(
            f"production of {pipeline} kept changing: gave up after {_CLAIM_ATTEMPTS} tries"
        )

    def _production_change(
        self, pipeline: str, step: str, decide: Decide, *, by: str, exclude: str | None
    ) -> _Change:
        """What changing production as `decide` asks takes, seen from the branch's tip: the
        pointer and the claimed entry `seq` (no `after`: no change)."""
        before = self.production_state(pipeline, step, exclude=exclude)
        wanted = decide(before)
        if wanted is None:
            return _Change(before, None, {}, "", "")
        run_id, run_step, action = wanted
        seq = 1 + (before.seq if before and before.seq else self._last_seq(pipeline))
        after = advance(
            before,
            pipeline=pipeline,
            run_id=run_id,
            step=run_step,
            action=action,
            by=by,
            at=utc_iso(self.clock.now()),
            seq=seq,
        )
        claim = layout.production_entry(pipeline, seq)
        files: dict[str, bytes | None] = {
            layout.production(pipeline): after.to_json().encode(),
            claim: after.entry().model_dump_json(indent=2).encode() + b"\n",
        }
        return _Change(before, after, files, claim, f"sluice: {action} {pipeline} to {run_id}")

    def _latest_succeeded(self, pipeline: str, step: str) -> str | None:
        latest = self.branch.read(layout.succeeded(pipeline, step))
        return (latest.decode().strip() or None) if latest else None

    def _last_seq(self, pipeline: str) -> int:
        return last_seq(self.branch.list_dir(layout.production_entries(pipeline)))

    # -- runs -------------------------------------------------------------------------------

    def record(
        self,
        manifest: RunManifest,
        *,
        logs: Mapping[str, bytes],
        components: Mapping[str, Mapping[str, Any]],
        baseline_step: str | None,
        newly_done: set[str],
        steps_only: Collection[str] | None = None,
        absorb: bool = False,
    ) -> None:
        """Commit the manifest, new logs, and index entries for steps that just succeeded.

        A run whose baseline step just succeeded becomes production (action `deploy`; never
        a pull request's preview run, whose cache entries still count), in the same commit:
        the pointer and the claimed entry `seq` with the record. When another writer claimed
        that entry first, the record is committed alone and the change follows, decided
        again on the new production (`change_production`).

        Jobs mode: with `steps_only`, the file of each of those steps instead of the
        manifest (jobs that push at once write different files); with `absorb`, the
        manifest with every step file removed (it holds them now).
        """
        extra: dict[str, bytes | None] = {}
        deployed = False
        if steps_only is not None:
            newly_done = newly_done & set(steps_only)
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
                extra[layout.cache_entry(record.cache_key)] = entry.model_dump_json().encode()
                extra[layout.cache_last(manifest.pipeline, name)] = json.dumps(dict(parts)).encode()
            if name == baseline_step and manifest.trigger.kind != _PREVIEW:
                extra[layout.succeeded(manifest.pipeline, name)] = manifest.run_id.encode()
                deployed = True
        if absorb:
            folder = layout.step_records(manifest.pipeline, manifest.run_id)
            for file in self.branch.list_dir(folder):
                extra[f"{folder}/{file}"] = None
        if steps_only is None:
            changes, message = layout.run_record(manifest, logs, extra)
        else:
            changes, message = layout.step_run_record(manifest, steps_only, logs, extra)
        if not deployed or baseline_step is None:
            self.branch.commit(changes, message)
            return
        run_id = manifest.run_id
        decide = deploy_once(run_id, baseline_step)
        by = deployer(manifest, baseline_step)
        pipeline = manifest.pipeline
        change = self._production_change(pipeline, baseline_step, decide, by=by, exclude=run_id)
        if change.after is not None:  # one commit: the record and production's change
            both = f"{message}\n\n{change.message}"
            try:
                self.branch.commit({**changes, **change.files}, both, expect_absent=[change.claim])
                return
            except ClaimLost:
                pass  # another writer took entry `seq`: the record first, then production
        self.branch.commit(changes, message)
        self.change_production(pipeline, baseline_step, decide, by=by, exclude=run_id)
