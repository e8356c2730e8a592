"""What a run takes from earlier runs: step results (from the retried run, or the cache), a baseline."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from engine.core import cache
from engine.core.manifest import DONE_OK, ArtifactPointer, RunManifest
from engine.core.spec import ResolvedStep
from engine.ports import ArtifactStore
from engine.run.prepare import Prepared
from engine.run.records import History


@dataclass(frozen=True)
class Reused:
    """A result taken over: what the step's record gets, and why (its `reason`)."""

    outputs: dict[str, ArtifactPointer]
    metrics: dict[str, float | int | bool]
    cache_key: str | None
    image_id: str | None
    cached_from: str
    reason: str


def from_retried(
    original: RunManifest | None, step: str | ResolvedStep, store: ArtifactStore
) -> Reused | None:
    """`sluice retry`: the original run's result of a step that succeeded there.

    Never of a `finally` step or a `cache: false` step: those run again, so that a
    notification reports the retry and a side effect happens for it.
    """
    name = step if isinstance(step, str) else step.name
    done = original.steps.get(name) if original else None
    if (
        original is None
        or done is None
        or done.is_finally
        or (not isinstance(step, str) and (step.is_finally or not step.cache))
        or done.status not in DONE_OK
        # re-verified: a retry must never build on outputs that changed under it
        or not all(store.has(p, verify=True) for p in done.outputs.values())
    ):
        return None
    cached_from = done.cached_from or original.run_id
    return Reused(
        dict(done.outputs),
        dict(done.metrics),
        done.cache_key,
        done.image_id,
        cached_from,
        f"reused from {cached_from}",
    )


def from_cache(
    history: History,
    prepared: Prepared,
    store: ArtifactStore,
    note: Callable[[str], None] | None = None,
) -> Reused | None:
    """An earlier run's result for the same cache key, its outputs still in the store; an
    entry the engine refuses (see History.cache_entry) is a miss that `note` tells."""
    entry = history.cache_entry(prepared.key, note) if prepared.key else None
    if entry is None or not all(store.has(p) for p in entry.outputs.values()):
        return None
    return Reused(
        dict(entry.outputs),
        dict(entry.metrics),
        prepared.key,
        prepared.image_id,
        entry.run_id,
        f"cached from {entry.run_id}",
    )


def why_missed(
    history: History, pipeline: str, prepared: Prepared, files: Mapping[str, str]
) -> str:
    """Words for why a cacheable step has no cached result (`files`: what it sees now)."""
    if prepared.error:
        return prepared.error
    entry = history.cache_entry(prepared.key) if prepared.key else None
    if entry is not None:  # a hit but for its blobs: another runner's store, or gc
        return (
            f"the outputs of {entry.run_id} are gone from the artifact store (it runs again; "
            "a lasting store, `artifacts:` in sluice.yaml, keeps them across runners)"
        )
    last = history.last_components(pipeline, prepared.step.name) or {}
    why = cache.why_missed(last.get("parts"), prepared.components, last.get("files"), files)
    if prepared.step.workspace is True and "workspace files changed" in why:
        why += "; declare `workspace: [paths]` to narrow"
    return why


def ran_because(
    history: History, pipeline: str, prepared: Prepared, files: Mapping[str, str]
) -> str:
    """A cacheable step's reason when it runs: `not cached: <why_missed>`; the job summary
    shows it, e.g. `not cached: workspace files changed (README.md); declare ...`."""
    return cache.MISSED + why_missed(history, pipeline, prepared, files)


def never_cached(
    step: ResolvedStep, use_cache: bool, history: History | None, retry: bool = False
) -> str | None:
    """Why `step` is not looked up in the cache at all; None when it is. On `sluice retry`
    (`retry`), a `finally` step runs again too: its cache key would find the original's."""
    if step.is_group:
        return "a fan-out step settles from its instances"
    if retry and step.is_finally:
        return "finally steps run again on `sluice retry`"
    if not step.cache:
        return (
            "deployment steps are never cached"
            if step.type.value == "deployment"
            else ("cache: false")
        )
    if not use_cache:
        return "--no-cache"
    if history is None:
        return "no results branch to look the cache up in"
    return None


def baseline(
    history: History, manifest: RunManifest, pipeline: str, step: str
) -> RunManifest | None:
    """The run `when` and baseline.json compare against: the one `manifest` pinned (a resumed
    run keeps its own), else production's; recorded in `manifest.baseline_run`."""
    pinned = manifest.baseline_run
    found = history.manifest(pinned) if pinned else None
    if found is None and not pinned:
        found = history.production(pipeline, step)
    if found is not None and found.run_id != manifest.run_id:
        manifest.baseline_run = found.run_id
        return found
    return None
