"""What the engine keeps on the results branch besides manifests: cache index, production pointers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from engine import cache
from engine.manifest import ArtifactPointer, RunManifest, StepStatus, utc_iso
from engine.results import ResultsStore


class CacheEntry(BaseModel):
    """One cached step result: enough to reuse it without its run's manifest."""

    run_id: str
    pipeline: str
    step: str
    outputs: dict[str, ArtifactPointer]
    metrics: dict[str, float | int | bool]


def production_path(pipeline: str) -> str:
    return f"production/{pipeline}.json"


def succeeded_path(pipeline: str, step: str) -> str:
    return f"index/succeeded/{pipeline}/{step}"


def _json(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None  # a damaged index entry is a miss, not a crash


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

    def production(self, pipeline: str, step: str) -> RunManifest | None:
        """The run promoted last, else the latest run where `step` succeeded."""
        pointer = _json(self.store.read(production_path(pipeline)))
        run_id = pointer.get("run_id") if isinstance(pointer, dict) else None
        if not isinstance(run_id, str):
            latest = self.store.read(succeeded_path(pipeline, step))
            run_id = latest.decode().strip() if latest else None
        return self.store.manifest(run_id) if run_id else None

    def set_production(
        self, pipeline: str, run_id: str, step: str, *, by: str, action: str
    ) -> None:
        record = {
            "run_id": run_id,
            "step": step,
            "by": by,
            "action": action,
            "at": utc_iso(datetime.now(UTC)),
        }
        self.store.commit(
            {production_path(pipeline): json.dumps(record, indent=2).encode()},
            f"sluice: {action} {pipeline} to {run_id}",
        )

    def record(
        self,
        manifest: RunManifest,
        *,
        logs: Mapping[str, bytes],
        components: Mapping[str, Mapping[str, Any]],
        baseline_step: str | None,
        newly_done: set[str],
    ) -> None:
        """Commit the manifest, new logs, and index entries for steps that just succeeded."""
        extra: dict[str, bytes | None] = {}
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
        self.store.record_run(manifest, logs=logs, extra=extra)
