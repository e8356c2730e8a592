"""The logs a record takes to the results branch: each attempt's tail, the whole log in the
artifact store with a pointer on the attempt (core/log_tail.py says why)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from engine.core import log_tail
from engine.core.manifest import Attempt, RunManifest
from engine.errors import SluiceError
from engine.local.disk import size_text
from engine.ports import ArtifactStore


def branch_logs(
    run_dir: Path,
    written: Iterable[str],
    manifest: RunManifest,
    artifacts: ArtifactStore | None,
    note: Callable[[str], None],
) -> dict[str, bytes]:
    """`{<step>.<n>.log: what the branch keeps}` for the logs `written` (run-relative paths,
    as `Attempt.log` names them). A log longer than the tail also goes whole to `artifacts`,
    its pointer into its attempt in `manifest`; when the store cannot take it, the branch
    keeps the tail and the step a warning: a log never fails a run."""
    logs: dict[str, bytes] = {}
    whole: list[tuple[str, Attempt, Path, int]] = []  # (step, attempt, local path, size)
    for rel in written:
        local = run_dir / rel
        if not local.is_file():
            continue
        text = local.read_bytes()
        logs[Path(rel).name] = log_tail.tail(text)
        if log_tail.is_cut(text) and artifacts is not None:
            whole += [
                (name, attempt, local, len(text))
                for name, record in manifest.steps.items()
                for attempt in record.attempts
                if attempt.log == rel and attempt.log_full is None
            ]
    if whole and artifacts is not None:
        _store(artifacts, whole, manifest, note)
    return logs


def _store(
    artifacts: ArtifactStore,
    whole: list[tuple[str, Attempt, Path, int]],
    manifest: RunManifest,
    note: Callable[[str], None],
) -> None:
    """Put the whole logs in the store at once (one batch on S3) and point each attempt at
    its own; when the store cannot take them, a warning on each step instead."""
    try:
        pointers = artifacts.put_files([local for _, _, local, _ in whole])
    except SluiceError as exc:
        kept = size_text(log_tail.TAIL_BYTES)
        for name, attempt, _, size in whole:
            warning = (
                f"the whole log of attempt {attempt.number} ({size_text(size)}) could not go to "
                f"the artifact store, so the results branch keeps only its last {kept}: "
                f"{exc.message}"
            )
            record = manifest.steps[name]
            if warning not in record.warnings:
                record.warnings.append(warning)
                note(f"{name}: {warning}")
        return
    for (_, attempt, _, _), pointer in zip(whole, pointers, strict=True):
        attempt.log_full = pointer
