"""`sluice gc --runs`: drop old runs' local data, and the artifacts no kept run still uses.

The results branch is never rewritten: every manifest and log stays in its history. What
goes is `.sluice/runs/<id>/` of the runs not kept, and the objects of the artifact store
that no kept run, and no cache entry a kept run names, points to.

Kept, per pipeline:
- the newest `keep` runs;
- every run production names: the pointer, its lineage and its recorded history (what
  `sluice rollback` walks back through), and the run the succeeded index names;
- runs not finished (running, or waiting for approval: `approve` needs their outputs);
- objects written less than `grace` seconds ago (a run in progress may not have recorded
  them yet); an object whose store reports no time is kept unless `grace` is 0.

A kept run that has finished also loses what only a run in progress needs (its workspace
snapshot and local copies of outputs: one copy, the store's, is kept).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.adapters.artifacts import ArtifactStore
from engine.app import compose
from engine.core import layout
from engine.core.config import RepoConfig
from engine.core.manifest import RunManifest, RunStatus
from engine.ports import ResultsBranch
from engine.run.records import History

UNFINISHED = (RunStatus.running, RunStatus.waiting_approval)


@dataclass
class Collected:
    """What gc removed (or, with `dry_run`, would remove), and what it kept."""

    dry_run: bool
    keep: int
    runs: list[dict[str, Any]] = field(default_factory=list)  # run_id, pipeline, bytes, whole
    artifacts: list[dict[str, Any]] = field(default_factory=list)  # sha256, bytes
    kept_runs: list[str] = field(default_factory=list)
    kept_artifacts: int = 0

    @property
    def bytes_freed(self) -> int:
        return sum(int(r["bytes"]) for r in [*self.runs, *self.artifacts])

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "keep": self.keep,
            "runs": self.runs,
            "artifacts": self.artifacts,
            "bytes_freed": self.bytes_freed,
            "kept_runs": self.kept_runs,
            "kept_artifacts": self.kept_artifacts,
        }


def collect(repo: Path, config: RepoConfig, *, keep: int, grace: float, dry_run: bool) -> Collected:
    """Apply the retention rules (see the module's docstring); `dry_run`: remove nothing."""
    done = Collected(dry_run=dry_run, keep=keep)
    local = _local_runs(repo)
    branch = compose.results_branch(repo, config, push=False)
    manifests: dict[str, RunManifest] = {m.run_id: m for m in local.values() if m is not None}
    protected: set[str] = set()
    cache_outputs: dict[str, set[str]] = {}
    if branch is not None:
        with branch:
            branch.fetch()  # an unreachable remote stops gc: its runs may use these objects
            manifests.update(_branch_runs(branch))
            protected = _production_runs(branch, {m.pipeline for m in manifests.values()})
            kept = _kept(manifests, protected, keep)
            cache_outputs = _cached(History(branch), (manifests[r] for r in kept))
    else:
        kept = _kept(manifests, protected, keep)
    kept |= {run_id for run_id, m in local.items() if m is None}  # unreadable: left alone
    done.kept_runs = sorted(kept)
    for run_id in sorted(set(local) - kept):
        folder = repo / layout.local_run(run_id)
        pipeline = manifests[run_id].pipeline if run_id in manifests else None
        done.runs.append(
            {"run_id": run_id, "pipeline": pipeline, "bytes": _size(folder), "whole": True}
        )
        if not dry_run:
            shutil.rmtree(folder, ignore_errors=True)
    _tidy_kept(repo, [manifests[r] for r in kept if r in manifests and r in local], done)
    used = _used(manifests[r] for r in kept if r in manifests)
    for run_id in kept:
        used |= cache_outputs.get(run_id, set())
    _sweep(compose.artifact_store(config, repo), used, grace, done)
    return done


def _kept(manifests: dict[str, RunManifest], protected: set[str], keep: int) -> set[str]:
    """Run ids kept: the newest `keep` per pipeline, production's, and unfinished ones."""
    by_pipeline: dict[str, list[str]] = {}
    for run_id, manifest in manifests.items():
        by_pipeline.setdefault(manifest.pipeline, []).append(run_id)
    kept = {r for r in protected if r in manifests}
    for ids in by_pipeline.values():
        kept.update(sorted(ids, reverse=True)[:keep])  # run ids sort by their start time
    kept.update(r for r, m in manifests.items() if m.status in UNFINISHED)
    return kept


def _local_runs(repo: Path) -> dict[str, RunManifest | None]:
    """Run folders under `.sluice/runs/`, with their manifest (None: none readable)."""
    root = repo / layout.LOCAL_RUNS
    found: dict[str, RunManifest | None] = {}
    if not root.is_dir():
        return found
    for folder in sorted(root.iterdir()):
        if folder.is_symlink() or not folder.is_dir():
            continue
        try:
            text = (folder / layout.MANIFEST).read_text()
            found[folder.name] = RunManifest.model_validate_json(text)
        except (OSError, ValueError, ValidationError):
            found[folder.name] = None
    for run_id, manifest in list(found.items()):
        if manifest is not None and manifest.run_id != run_id:
            found[run_id] = None  # a folder that does not hold its own run: left alone
    return found


def _branch_runs(branch: ResultsBranch) -> dict[str, RunManifest]:
    """Every run the results branch records, of every pipeline."""
    found: dict[str, RunManifest] = {}
    for pipeline in branch.list_dir(layout.RUNS):
        count = len(branch.list_dir(layout.pipeline_runs(pipeline)))
        found.update({m.run_id: m for m in branch.runs(pipeline, limit=count)})
    return found


def _production_runs(branch: ResultsBranch, pipelines: Iterable[str]) -> set[str]:
    """Runs production names: current, lineage, recorded history, the succeeded index."""
    history = History(branch)
    named: set[str] = set()
    for pipeline in pipelines:
        pointer = history.pointer(pipeline)
        if pointer is not None:
            named.update(pointer.lineage)
            named.add(pointer.run_id)
            for entry in pointer.history:
                named.add(entry.run_id)
                if entry.previous:
                    named.add(entry.previous)
        for step in branch.list_dir(layout.succeeded_steps(pipeline)):
            latest = branch.read(layout.succeeded(pipeline, step))
            if latest and latest.decode(errors="replace").strip():
                named.add(latest.decode(errors="replace").strip())
    return named


def _cached(history: History, kept: Iterable[RunManifest]) -> dict[str, set[str]]:
    """Per kept run: the objects of the cache entries its steps' cache keys name."""
    found: dict[str, set[str]] = {}
    for manifest in kept:
        for record in manifest.steps.values():
            entry = history.cache_entry(record.cache_key) if record.cache_key else None
            if entry is not None:
                found.setdefault(manifest.run_id, set()).update(
                    p.sha256 for p in entry.outputs.values()
                )
    return found


def _used(manifests: Iterable[RunManifest]) -> set[str]:
    """The objects the manifests point to: outputs, checkpoints and whole logs."""
    used: set[str] = set()
    for manifest in manifests:
        for record in manifest.steps.values():
            used.update(p.sha256 for p in record.outputs.values())
            used.update(a.log_full.sha256 for a in record.attempts if a.log_full is not None)
            if record.checkpoints is not None:
                used.add(record.checkpoints.sha256)
    return used


def _tidy_kept(repo: Path, kept: list[RunManifest], done: Collected) -> None:
    """Finished kept runs: their snapshot and local copies go (a run from before they did)."""
    for manifest in kept:
        if manifest.status in UNFINISHED:
            continue
        folder = repo / layout.local_run(manifest.run_id)
        extra = [folder / layout.WORKSPACE_TAR, folder / layout.LOCAL_STEPS]
        size = sum(_size(p) for p in extra)
        if size == 0 and not any(p.exists() for p in extra):
            continue
        done.runs.append(
            {
                "run_id": manifest.run_id,
                "pipeline": manifest.pipeline,
                "bytes": size,
                "whole": False,
            }
        )
        if not done.dry_run:
            (folder / layout.WORKSPACE_TAR).unlink(missing_ok=True)
            shutil.rmtree(folder / layout.LOCAL_STEPS, ignore_errors=True)


def _sweep(store: ArtifactStore, used: set[str], grace: float, done: Collected) -> None:
    """Remove the objects nothing kept uses, older than `grace` seconds."""
    now = time.time()
    for obj in sorted(store.objects()):
        young = grace > 0 and (obj.mtime is None or now - obj.mtime < grace)
        if obj.sha256 in used or young:
            done.kept_artifacts += 1
            continue
        done.artifacts.append({"sha256": obj.sha256, "bytes": obj.size})
        if not done.dry_run:
            store.remove(obj.sha256)


def _size(path: Path) -> int:
    """Bytes of the files at or under `path` (links not followed)."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for base, _, files in os.walk(path):
        total += sum(os.lstat(os.path.join(base, f)).st_size for f in files)
    return total
