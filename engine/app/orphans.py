"""Close runs whose engine is provably gone (killed outright: SIGKILL, a lost machine).

Such a run stays `running` under `.sluice/runs/` (a run is recorded on the results branch
only at its end or pause, so the branch usually has nothing of it; a jobs-mode plan, or an
older engine, leaves it `running` there too); `sluice gc` records it as `cancelled`, with
the reason, so that it no longer looks alive. Its finished
steps keep their results: `sluice retry` reuses them. Whether an engine is gone is decided
by engine.local.liveness (same host: pid, boot id and start time; another host: silence
longer than liveness.STALE_AFTER).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from engine.app import compose
from engine.core import layout
from engine.core.config import RepoConfig
from engine.core.manifest import TERMINAL, RunManifest, RunStatus, StepStatus, refusal, utc_iso
from engine.errors import SluiceError, UsageError
from engine.local import liveness
from engine.ports import ResultsBranch

PER_PIPELINE = 100  # the newest runs of each pipeline looked at on the results branch


def last_seen(manifest: RunManifest) -> datetime:
    """The newest time the manifest records: its start, an approval, an attempt's start or end."""
    times = [manifest.started_at, *(a.get("at", "") for a in manifest.approvals)]
    for record in manifest.steps.values():
        for attempt in record.attempts:
            times += [attempt.started_at, attempt.finished_at or ""]
    seen = []
    for text in times:
        with contextlib.suppress(ValueError):
            moment = datetime.fromisoformat(text)
            seen.append(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return max(seen, default=datetime.min.replace(tzinfo=UTC))


def engine_gone(manifest: RunManifest, now: datetime | None = None) -> str | None:
    """Why a `running` run's engine is provably gone (None: it may still be running, or the
    run is not running)."""
    if manifest.status is not RunStatus.running:
        return None
    return liveness.gone(manifest.engine, last_seen(manifest), now or datetime.now(UTC))


def alive_here(manifest: RunManifest) -> int | None:
    """The pid of a `running` run's engine when it runs on this host and is alive (None:
    not running, run elsewhere, or gone)."""
    if manifest.status is not RunStatus.running:
        return None
    pid = manifest.engine.get("pid")
    here = manifest.engine.get("host") == liveness.identity()["host"]
    return pid if here and isinstance(pid, int) and engine_gone(manifest) is None else None


def closed(manifest: RunManifest, reason: str, now: datetime) -> RunManifest:
    """The run recorded as `cancelled`: steps not finished are cancelled with the reason."""
    done = manifest.model_copy(deep=True)
    why = f"closed by sluice gc: {reason}"
    for record in done.steps.values():
        if record.status not in TERMINAL:
            record.status, record.reason = StepStatus.cancelled, why
    done.status, done.error, done.finished_at = RunStatus.cancelled, why, utc_iso(now)
    return done


def _local(repo: Path) -> Iterator[tuple[Path, RunManifest]]:
    folder = repo / layout.LOCAL_RUNS
    for path in sorted(folder.glob("*/manifest.json")) if folder.is_dir() else []:
        try:
            yield path, RunManifest.from_json(path.read_bytes())
        except (OSError, ValueError, ValidationError):
            continue  # a damaged local copy is not ours to judge


def local_manifest(repo: Path, run_id: str) -> RunManifest | None:
    """Run `run_id`'s manifest under `.sluice/runs/` of `repo` (None when there is none): a
    run the results branch does not have yet (it records a run at its end or pause: one
    still running, or whose engine was killed). Exit 2 when the engine refuses it."""
    rel = layout.local_manifest(run_id)
    try:
        data = (repo / rel).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{rel} cannot be read: {exc.strerror or exc}") from None
    try:
        manifest = RunManifest.from_json(data)
    except ValidationError as exc:
        raise UsageError(
            f"{rel} is refused: {refusal(exc)}",
            hint="the run's local record is damaged; `sluice runs` lists the recorded runs",
        ) from None
    if manifest.run_id != run_id:
        raise UsageError(f"{rel} names another run: {manifest.run_id!r}")
    return manifest


def _branch_running(store: ResultsBranch) -> list[RunManifest]:
    found = []
    for pipeline in store.list_dir(layout.RUNS):
        try:
            runs = store.runs(pipeline, PER_PIPELINE)
        except (SluiceError, ValidationError):
            continue
        found += [m for m in runs if m.status is RunStatus.running]
    return found


def close_orphans(
    repo: Path,
    config: RepoConfig,
    *,
    log: Callable[[str], None],
    now: datetime | None = None,
    only: str | None = None,
    push: bool | None = None,
) -> list[RunManifest]:
    """Record as `cancelled` every `running` run whose engine is provably gone (`only`: that
    run, if so); the closed manifests. The results branch is written (and pushed, as `push`
    or sluice.yaml says) like a run's record."""
    now = now or datetime.now(UTC)
    local = {m.run_id: (path, m) for path, m in _local(repo)}
    store = compose.results_branch(repo, config, push)
    with contextlib.ExitStack() as stack:
        running: dict[str, RunManifest] = {}
        if store is not None:
            stack.enter_context(store)
            store.catch_up()
            running = {m.run_id: m for m in _branch_running(store)}
        for run_id, (_, manifest) in local.items():
            if manifest.status is RunStatus.running and run_id not in running:
                on_branch = store.manifest(run_id) if store is not None else None
                if on_branch is None:  # recorded here only (not a git repository)
                    running[run_id] = manifest
        done = []
        for run_id, manifest in sorted(running.items()):
            if only is not None and run_id != only:
                continue
            reason = engine_gone(manifest, now)
            if reason is None:
                continue
            closing = closed(manifest, reason, now)
            if run_id in local:
                local[run_id][0].write_text(closing.to_json())
            if store is not None and run_id in local:
                _record(local[run_id][0].parent, store, closing)
            elif store is not None:  # a record that cannot be pushed stops gc: exit 3
                store.commit(*layout.run_record(closing, {}, {}))
            log(f"sluice: run {run_id} ({manifest.pipeline}) closed as cancelled: {reason}")
            done.append(closing)
    return done


def _record(run_dir: Path, store: ResultsBranch, closing: RunManifest) -> None:
    """Record a closed run as its engine would have: the manifest with the logs of its
    attempts kept under `run_dir` (a run that was never recorded has none on the branch).
    A record that cannot be made or pushed stops gc (exit 3)."""
    from engine.run.recorder import Recorder  # lazy: `sluice show` imports this module
    from engine.run.records import History  # lazy: as above

    recorder = Recorder(
        run_dir, History(store), baseline_step=None, components=lambda _: None, note=_quiet
    )
    for record in closing.steps.values():
        for attempt in record.attempts:
            if attempt.log:
                recorder.log_written(attempt.log)
    recorder.save(closing, record=True, final=True)
    if recorder.unrecorded is not None:
        raise recorder.unrecorded


def _quiet(_: str) -> None:
    """The recorder's note: gc says the failure itself, as its exit."""
