"""Reading what the results branch recorded: one run, a pipeline's production pointer.

Kept light (no executor, no pipeline parser, no Docker): `sluice show`, `diff` and `report`
read records without loading what starts a run.
"""

from __future__ import annotations

from pathlib import Path

from engine.app.orphans import local_manifest
from engine.core import layout, names
from engine.core.manifest import RunManifest, RunStatus
from engine.core.production import Production
from engine.errors import NotFound, UsageError
from engine.ports import ResultsBranch
from engine.run.records import History, refused_manifest


def find_run(store: ResultsBranch, run_id: str, repo: Path | None = None) -> RunManifest:
    """Run `run_id`'s manifest; exit 2 naming the field when the branch holds one the engine
    refuses (a hostile name: the branch is untrusted), or when there is no such run.

    A run the branch does not have yet (it records a run at its end or pause: one still
    running, or whose engine was killed) is read from `.sluice/runs/` of `repo` (default:
    the results branch's repository), checked the same way."""
    names.checked(run_id, "run id")
    manifest = store.manifest(run_id)
    if manifest is None:
        refused = refused_manifest(store, run_id)
        if refused is not None:
            raise UsageError(refused, hint="the results branch holds a damaged or hostile record")
        where = repo if repo is not None else getattr(store, "repo", None)
        manifest = local_manifest(where, run_id) if isinstance(where, Path) else None
    if manifest is None:
        raise NotFound(
            f"no run {run_id!r} on the results branch",
            hint="`sluice runs` lists runs; `--fetch` gets the remote's results first",
        )
    if manifest.run_id != run_id:
        raise UsageError(f"run {run_id}'s manifest names another run: {manifest.run_id!r}")
    return manifest


def production_of(store: ResultsBranch, pipeline: str) -> Production | None:
    """The pipeline's production pointer, as `sluice show` mentions it."""
    return History(store).pointer(pipeline)


def unrecorded_here(
    repo: Path, recorded: set[str], pipeline: str | None, limit: int
) -> list[RunManifest]:
    """The newest runs under `.sluice/runs/` still going (or killed: `sluice gc` closes
    those) and not in `recorded`: a run reaches the results branch at its end or pause, so
    `sluice runs` on the machine that runs one shows it from here. Only the newest `limit`
    folders are read (run ids sort by start time); a damaged one is left out."""
    folder = repo / layout.LOCAL_RUNS
    try:
        ids = sorted((p.name for p in folder.iterdir() if p.name not in recorded), reverse=True)
    except OSError:
        return []
    found = []
    for run_id in ids[: limit * 2]:
        if names.problem(run_id) is not None:
            continue
        try:
            manifest = local_manifest(repo, run_id)
        except UsageError:
            continue
        if (
            manifest is None
            or manifest.status is not RunStatus.running
            or manifest.run_id != run_id
        ):
            continue
        if pipeline is None or manifest.pipeline == pipeline:
            found.append(manifest)
    return found[:limit]
