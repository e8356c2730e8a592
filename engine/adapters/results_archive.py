"""The bounded tip of the results branch: old runs move to `archive/`, readable at a commit.

Every adapter of the results branch (git, memory) shares this code; it only uses the
ResultsBranch reads, so both keep one behaviour (tests/test_results_branch_contract.py).

Moving out (`plan`, after a record of a pipeline was committed, and pushed when the branch
pushes): when a pipeline's folder holds more than `keep + batch` runs, the oldest `batch`
finished runs that production does not name leave the tip. Their folders are deleted, and
`archive/<pipeline>/<YYYYMM>/<newest id>.json` maps each run id to the commit `holder`
that still has them: a commit already pushed, so it stays reachable from the remote
whatever later pushes re-apply onto. Each index is a claim (it must be absent): two
writers archiving the same batch at once record it once.

Cache entries go with them: the entries the moved runs' steps wrote or reused, unless a
run still at the tip used the same key (so an entry lives while its last user is among the
newest `keep`); a later lookup is then a clean miss and the step runs again. An entry
kept that way still names its (archived) run in `cached_from`, which `show` finds here.

Reading back (`find`): a run missing at the tip is looked up in its month's indexes, then
read at the commit they name (a shallow clone fetches that one commit on demand).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from engine.core import layout
from engine.core.manifest import RunManifest, RunStatus
from engine.core.payloads import json_or_none
from engine.errors import ClaimLost, EngineUnavailable

if TYPE_CHECKING:  # for annotations only: recording never loads the ports
    from engine.ports import Changes, ResultsBranch

BATCH = 50  # runs moved per maintenance commit: one extra commit per BATCH records
_PASSES = 20  # batches moved after one record, at most
_UNFINISHED = (RunStatus.running, RunStatus.waiting_approval)


def _manifest(data: bytes | None) -> RunManifest | None:
    if data is None:
        return None
    try:
        return RunManifest.from_json(data)
    except (ValidationError, ValueError):
        return None


def recorded_pipelines(changes: Iterable[tuple[str, bytes | None]]) -> set[str]:
    """The pipelines whose manifest a commit wrote (those a maintenance pass looks at)."""
    found = set()
    for path, data in changes:
        names = path.strip("/").split("/")
        if (
            data is not None
            and len(names) == 4
            and (names[0], names[3])
            == (
                layout.RUNS,
                layout.MANIFEST,
            )
        ):
            found.add(names[1])
    return found


def maintain(branch: ResultsBranch, changes: Changes, holder: str, keep: int, batch: int) -> None:
    """After a commit `holder` (pushed, when the branch pushes) that recorded runs: move the
    oldest runs of their pipelines off the tip, a batch per commit, until at most
    `keep + batch` are left (a writer catching up after a pause moves several batches).
    Best effort: a writer that archived the same batch first (ClaimLost), or a refused
    push, leaves the rest for the next record."""
    for pipeline in recorded_pipelines(changes.items()):
        for _ in range(_PASSES):
            planned = plan(branch, pipeline, holder, keep=keep, batch=batch)
            if planned is None:
                break
            moved, claims = planned
            message = f"sluice: archive {len(claims)} index(es) of {pipeline} runs at {holder[:12]}"
            try:
                branch.commit(moved, message, expect_absent=claims)
            except (ClaimLost, EngineUnavailable):
                break


def protected(branch: ResultsBranch, pipeline: str) -> set[str]:
    """Runs production names (pointer, lineage, history, the succeeded index): they stay at
    the tip, so that `sluice gc` keeps their outputs and rollback needs no archive."""
    named: set[str] = set()
    pointer = json_or_none(branch.read(layout.production(pipeline)))
    if isinstance(pointer, dict):
        for key in ("run_id", "previous"):
            if isinstance(pointer.get(key), str):
                named.add(pointer[key])
        named.update(r for r in pointer.get("lineage") or [] if isinstance(r, str))
        for entry in pointer.get("history") or []:
            if isinstance(entry, dict):
                named.update(
                    entry[k] for k in ("run_id", "previous") if isinstance(entry.get(k), str)
                )
    for step in branch.list_dir(layout.succeeded_steps(pipeline)):
        latest = branch.read(layout.succeeded(pipeline, step))
        if latest:
            named.add(latest.decode(errors="replace").strip())
    return named


def plan(
    branch: ResultsBranch, pipeline: str, holder: str, *, keep: int, batch: int = BATCH
) -> tuple[dict[str, bytes | None], list[str]] | None:
    """(changes, claims) that move the oldest `batch` runs of `pipeline` off the tip, naming
    commit `holder` (which has them) in the archive; None while the folder is small enough."""
    ids = sorted(branch.list_dir(layout.pipeline_runs(pipeline)))
    if len(ids) <= keep + batch:
        return None
    named = protected(branch, pipeline)
    picked: dict[str, RunManifest] = {}
    for run_id in ids[: len(ids) - keep]:
        if run_id in named:
            continue
        data = branch.read(layout.manifest(pipeline, run_id), at=holder)
        if data is None:
            continue  # not in `holder` (recorded since, by another writer of this clone)
        manifest = _manifest(data)
        if manifest is not None and manifest.status in _UNFINISHED:
            continue  # it will be recorded again: it stays where its next record goes
        picked[run_id] = manifest  # type: ignore[assignment]  # None: a damaged one moves too
        if len(picked) == batch:
            break
    if len(picked) < batch:
        return None
    changes: dict[str, bytes | None] = {layout.run(pipeline, r): None for r in picked}
    months: dict[str, dict[str, Any]] = {}
    for run_id, manifest in picked.items():
        about = {} if manifest is None else {
            "status": str(manifest.status), "started_at": manifest.started_at
        }  # fmt: skip
        months.setdefault(layout.run_month(run_id), {})[run_id] = about
    claims = []
    for month, runs in months.items():
        path = layout.archive_index(pipeline, month, max(runs))
        index = {"pipeline": pipeline, "commit": holder, "runs": runs}
        changes[path] = json.dumps(index, indent=1, sort_keys=True).encode() + b"\n"
        claims.append(path)
    changes.update(_evicted(branch, pipeline, picked, [r for r in ids if r not in picked]))
    return changes, claims


def _keys(manifest: RunManifest | None) -> set[str]:
    if manifest is None:
        return set()
    return {s.cache_key for s in manifest.steps.values() if s.cache_key}


def _evicted(
    branch: ResultsBranch,
    pipeline: str,
    picked: dict[str, RunManifest],
    staying: list[str],
) -> dict[str, bytes | None]:
    """Deletions of the cache entries only the moved runs used."""
    keys = set().union(*map(_keys, picked.values()))
    if not keys:
        return {}
    for run_id in staying:
        keys -= _keys(_manifest(branch.read(layout.manifest(pipeline, run_id))))
        if not keys:
            return {}
    gone: dict[str, bytes | None] = {}
    for key in sorted(keys):
        for path in (layout.cache_entry(key), layout.old_cache_entry(key)):
            entry = json_or_none(branch.read(path))
            if isinstance(entry, dict) and entry.get("pipeline") == pipeline:
                gone[path] = None
    return gone


def find(branch: ResultsBranch, run_id: str) -> tuple[str, str] | None:
    """(pipeline, holding commit) of an archived run; None when no index names it."""
    if "/" in run_id or not run_id:
        return None
    month = layout.run_month(run_id)
    for pipeline in branch.list_dir(layout.archive_pipelines()):
        for name in branch.list_dir(layout.archive_month(pipeline, month)):
            if name.removesuffix(".json") < run_id:
                continue
            index = json_or_none(branch.read(f"{layout.archive_month(pipeline, month)}/{name}"))
            if not isinstance(index, dict) or not isinstance(index.get("commit"), str):
                continue
            if run_id in (index.get("runs") or {}):
                return pipeline, index["commit"]
    return None


def newest(branch: ResultsBranch, pipeline: str, want: int) -> Iterator[tuple[str, str]]:
    """(run id, holding commit) of `pipeline`'s archived runs, newest first (at most `want`
    plus the rest of the last index read)."""
    given = 0
    months = sorted(branch.list_dir(f"{layout.ARCHIVE}/{pipeline}"), reverse=True)
    for month in months:
        folder = layout.archive_month(pipeline, month)
        for name in sorted(branch.list_dir(folder), reverse=True):
            index = json_or_none(branch.read(f"{folder}/{name}"))
            if not isinstance(index, dict) or not isinstance(index.get("commit"), str):
                continue
            for run_id in sorted(index.get("runs") or {}, reverse=True):
                yield run_id, index["commit"]
                given += 1
            if given >= want:
                return


def split_run_path(path: str) -> tuple[str, str, str] | None:
    """(pipeline, run id, rest) of a path inside a run's folder, else None."""
    names = path.strip("/").split("/", 3)
    if len(names) < 3 or names[0] != layout.RUNS:
        return None
    return names[1], names[2], names[3] if len(names) == 4 else ""
