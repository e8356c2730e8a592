"""A run's manifest: made or resumed, saved on disk at each change, recorded once at the end.

Only the final record (the run's end, or its pause for approval; in jobs mode, the end of
each part) is committed to the results branch: one commit per run, plus one per pause.
Every change before it is written to `.sluice/runs/<id>/manifest.json` only, which is what
crash recovery reads (`sluice gc` closes such a run, `sluice retry` reuses its steps).
"""

from __future__ import annotations

import secrets as random_hex
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from engine import __version__
from engine.core.manifest import RunManifest, RunStatus, StepRecord, StepStatus, Trigger, utc_iso
from engine.core.parse import LoadedPipeline
from engine.errors import SluiceError
from engine.local import liveness
from engine.ports import ArtifactStore
from engine.run import fanin
from engine.run.branch_logs import branch_logs
from engine.run.options import JobRole
from engine.run.records import History


def new_run_id(moment: datetime) -> str:
    """`YYYYMMDDTHHMMSSZ-xxxxxx`: UTC start time and 6 random hex digits, so ids sort by time."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + random_hex.token_hex(3)


def new_manifest(
    loaded: LoadedPipeline,
    *,
    run_id: str | None,
    trigger: Trigger,
    params: dict[str, Any],
    started: datetime,
    ci: dict[str, Any] | None = None,
) -> RunManifest:
    """The manifest of a run about to start: every step pending."""
    return RunManifest(
        run_id=run_id or new_run_id(started),
        pipeline=loaded.name,
        pipeline_file=loaded.file,
        pipeline_sha256=loaded.sha256,
        trigger=trigger,
        params=params,
        started_at=utc_iso(started),
        engine={"version": __version__, **liveness.identity()},
        ci=ci,
        steps={
            step.name: StepRecord(
                type=step.type.value,
                image=step.image if isinstance(step.image, str) else "build",
                needs=list(step.needs),
                is_finally=step.is_finally,
                **fanin.record_fields(step),  # an instance's group and values, a group's instances
            )
            for step in loaded.steps
        },
    )


def resumed(
    paused: RunManifest,
    decision: Literal["approve", "reject"] | None,
    by: str,
    now: datetime,
    ci_run: str | None = None,
) -> RunManifest:
    """A paused or crashed run, ready to continue: approved steps and unfinished ones pend.

    `ci_run`: the CI run that decides (its URL), recorded with the decision."""
    manifest = paused.model_copy(deep=True)
    manifest.engine = {**manifest.engine, "version": __version__, **liveness.identity()}
    manifest.status = RunStatus.running
    manifest.finished_at = None
    manifest.error = None
    decisions = list(manifest.approvals)
    for name, rec in manifest.steps.items():
        if rec.status is StepStatus.waiting_approval and decision is not None:
            by = by or "someone"
            entry = {"step": name, "decision": decision, "by": by, "at": utc_iso(now)}
            decisions.append({**entry, "ci_run": ci_run} if ci_run else entry)
            if decision == "approve":
                rec.status, rec.reason = StepStatus.pending, None
            else:
                rec.status, rec.reason = StepStatus.failed, f"rejected by {by}"
        elif rec.status is StepStatus.running:
            rec.status = StepStatus.pending
    manifest.approvals = decisions
    return manifest


Components = Callable[[str], Mapping[str, Any] | None]


class Recorder:
    """Writes the manifest under the run's folder at every change; at the final record
    (`final`: the run's end or its pause), also commits it, with the logs and cache
    components of every step finished since the last record that went through, to the
    results branch, when there is one.

    A record that fails is said (`note`); one committed here but not pushed goes out with
    the next push from this clone. `unrecorded` is the last record's failure (None once one
    went through): after the final record, a run whose record did not reach the results
    branch (or its remote).
    """

    def __init__(
        self,
        run_dir: Path,
        history: History | None,
        *,
        baseline_step: str | None,
        components: Components,
        note: Callable[[str], None],
        artifacts: ArtifactStore | None = None,
    ) -> None:
        self.run_dir, self.history, self.baseline_step = run_dir, history, baseline_step
        self.components, self.note = components, note
        self.artifacts = artifacts  # where a log longer than the branch keeps goes
        self.dry = False  # `explain`: nothing is written
        # jobs mode: the steps whose own files this process writes (None: the manifest), and
        # whether the step files the manifest absorbs go
        self.steps_only: frozenset[str] | None = None
        self.absorbs = False
        self._logs: list[str] = []  # run-relative paths of logs not yet recorded
        self._newly_done: set[str] = set()
        self.unrecorded: SluiceError | None = None

    def log_written(self, rel: str) -> None:
        self._logs.append(rel)

    def step_done(self, name: str) -> None:
        self._newly_done.add(name)

    def for_role(self, role: JobRole | None, finally_steps: Sequence[str]) -> None:
        """Record as jobs mode's `role` does: `plan` commits the manifest; `step` commits its
        step's own file; `finish` commits the manifest with every step file folded in (the
        files go). Each once, at its end."""
        if role is None:
            return
        if role.part == "step" and role.step is not None:
            self.steps_only = frozenset([role.step])
        self.absorbs = role.part == "finish"

    def save(self, manifest: RunManifest, *, record: bool = False, final: bool = False) -> None:
        """Write the manifest under the run's folder; with `record` and `final` (the run's
        end or pause, the end of a jobs-mode part), commit it too. A `record` that is not
        final stays on disk: the final record carries what it held."""
        if self.dry:
            return
        path = self.run_dir / "manifest.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(manifest.to_json())
        tmp.replace(path)
        if not (record and final) or self.history is None:
            return
        self._record(self.history, manifest)

    def _record(self, history: History, manifest: RunManifest) -> None:
        logs = branch_logs(self.run_dir, self._logs, manifest, self.artifacts, self.note)
        components = {}
        for name in self._newly_done:
            parts = self.components(name)
            if parts is not None:
                components[name] = parts
        try:
            history.record(
                manifest,
                logs=logs,
                components=components,
                baseline_step=self.baseline_step,
                newly_done=set(self._newly_done),
                steps_only=self.steps_only,
                absorb=self.absorbs,
            )
        except SluiceError as exc:
            self.note(f"results branch: {exc}")
            self.unrecorded = exc
            return
        self.unrecorded = None
        self._logs.clear()
        self._newly_done.clear()
