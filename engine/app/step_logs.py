"""`sluice logs`: a step's log from the results branch (its tail, when the log is long), and
the whole log from the artifact store, checked against the sha256 the run recorded."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from engine.adapters.artifacts import CorruptArtifact, store_name
from engine.app import compose
from engine.app.reading import find_run
from engine.core import layout, log_tail
from engine.core.config import RepoConfig
from engine.core.manifest import ArtifactPointer
from engine.errors import NotFound
from engine.local.disk import size_text
from engine.ports import ResultsBranch


@dataclass(frozen=True)
class StepLog:
    """One attempt's log as the results branch holds it."""

    run_id: str
    step: str
    attempt: int
    text: bytes  # the whole log, or (`size` set) its tail after a marker line
    size: int | None  # the whole log's bytes when the branch keeps only a tail
    full: ArtifactPointer | None  # where the whole log is (None: not stored, or not needed)
    warning: str | None  # why the whole log is not in the store, as the run said
    local: Path | None = None  # read from the run's folder: the branch does not hold it yet

    @property
    def is_tail(self) -> bool:
        return self.size is not None


def step_log(
    store: ResultsBranch, run_id: str, step: str, attempt: int | None, repo: Path | None = None
) -> StepLog:
    """A step's log (default: its last attempt) from the results branch; for a run the
    branch does not hold yet (it records a run at its end), from `.sluice/runs/` of `repo`."""
    manifest = find_run(store, run_id, repo)
    record = manifest.steps.get(step)
    if record is None:
        raise NotFound(f"run {run_id} has no step {step!r}; steps: {', '.join(manifest.steps)}")
    if not record.attempts:
        raise NotFound(f"step {step!r} of run {run_id} never ran ({record.status.value})")
    number = attempt or record.attempts[-1].number
    text, local = store.log(run_id, step, number), None
    if text is None and repo is not None:
        path = repo / layout.local_run(run_id) / layout.LOGS / layout.log_name(step, number)
        if path.is_file():
            text, local = path.read_bytes(), path
    if text is None:
        raise NotFound(f"no log for {step} attempt {number} of run {run_id}")
    recorded = next((a for a in record.attempts if a.number == number), None)
    full = recorded.log_full if recorded is not None else None
    size = full.size if full is not None else log_tail.cut_size(text)
    prefix = f"the whole log of attempt {number} "
    warning = next((w for w in record.warnings if w.startswith(prefix)), None)
    if local is not None:  # the whole log, as the step printed it so far
        return StepLog(run_id, step, number, text, None, None, None, local)
    return StepLog(run_id, step, number, text, size, full, warning)


def full_log(config: RepoConfig, repo: Path, log: StepLog) -> bytes:
    """The whole log from the configured artifact store, its bytes checked against the
    sha256 the run recorded. NotFound (exit 2) when the run stored none or the store does
    not hold it; CorruptArtifact (exit 1) when its bytes do not match; EngineUnavailable
    (exit 3, naming the store) when the store does not answer."""
    if not log.is_tail:
        return log.text  # the branch holds it whole
    which = f"{log.step} attempt {log.attempt} of run {log.run_id}"
    tail = f"`sluice logs {log.run_id} {log.step} --attempt {log.attempt}` prints its tail"
    pointer = log.full
    if pointer is None:
        why = log.warning or "the run recorded no copy of it in the artifact store"
        raise NotFound(f"no whole log of {which}: {why}", hint=tail)
    artifacts = compose.artifact_store(config, repo)
    configured = store_name(config.artifacts, repo)
    with tempfile.TemporaryDirectory(prefix="sluice-log-") as scratch:
        dest = Path(scratch) / "log"
        try:
            if not artifacts.has(pointer):
                raise NotFound(
                    f"the whole log of {which} (sha256 {pointer.sha256[:12]}, "
                    f"{size_text(pointer.size)}, recorded in {pointer.store}) is not in the "
                    f"artifact store {configured}",
                    hint=_where(configured, pointer.store) + "; " + tail,
                )
            artifacts.get_file(pointer, dest)
        except CorruptArtifact as exc:
            raise CorruptArtifact(
                f"refused the whole log of {which}: {exc.message}; the store's copy or the "
                "run's record was changed",
                hint=tail,
            ) from None
        return dest.read_bytes()


def _where(configured: str, used: str) -> str:
    """Why the store may lack the object, and what to do."""
    if used != configured:
        return f"configure the store the run used ({used}) as `artifacts:` in sluice.yaml"
    if configured.startswith("file://"):
        return (
            f"{configured} is a folder on the machine that ran the run: run the command "
            "there, or give runs a store every runner reaches (`artifacts: s3://...`); on "
            "that machine, `sluice gc --runs` may have removed it, or the run's record names "
            "an object the store never held"
        )
    return (
        "`sluice gc --runs` may have removed it, or the run's record points at an object "
        "the store never held"
    )
