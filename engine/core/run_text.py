"""A run in plain text for people: the end-of-run table (`sluice run`, `sluice show`), the
lines that say who must approve, and the progress of fanned-out steps while they run.

A fanned-out step shows as one row with its tally, its instances indented beneath by their
values (engine.core.step_rows); a large sweep lists those that did not end well and counts
the rest.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.core import step_rows
from engine.core.cache import MISSED
from engine.core.manifest import TERMINAL, RunManifest, StepRecord, StepStatus
from engine.core.printable import printable
from engine.core.suggest import counted


def duration(record: StepRecord) -> str:
    total = sum(a.duration_s or 0.0 for a in record.attempts)
    return f"{total:.1f}s" if record.attempts else ""


def says_why(record: StepRecord) -> bool:
    """A reason worth a line: why a step did not succeed, or why a succeeded one missed the
    cache (`not cached: workspace files changed ...`); never an approval's stale `waits for`."""
    if not record.reason:
        return False
    return record.status is not StepStatus.succeeded or record.reason.startswith(MISSED)


def summary_lines(manifest: RunManifest) -> list[str]:
    """A plain table of steps, for the end of a run (names and reasons made printable); a
    fanned-out step's instances indented beneath it by their values, with their metrics
    (a large sweep: those that did not end well, and a count of the rest)."""
    shown = step_rows.rows(manifest.steps)
    names = [("  " * row.depth) + printable(row.shown) for row in shown]
    width = max((len(n) for n, row in zip(names, shown, strict=True) if row.record), default=4)
    run = f"{printable(manifest.run_id)} ({printable(manifest.pipeline)})"
    lines = [f"run {run}: {manifest.status.value}"]
    for name, row in zip(names, shown, strict=True):
        rec = row.record
        if rec is None:
            lines.append(f"    {step_rows.rest_text(row)}")
            continue
        tries = (
            f"{len(rec.attempts)} attempt{'s' if len(rec.attempts) != 1 else ''}"
            if rec.attempts
            else ""
        )
        why = rec.reason if says_why(rec) or (row.is_group and rec.reason) else ""
        got = metrics_text(rec.metrics) if row.depth else ""
        note = "".join(f"  {printable(text)}" for text in (got, why) if text)
        lines.append(
            f"  {name:<{width}}  {rec.status.value:<16} {tries:<11} {duration(rec):>7}{note}"
        )
    for key, rec in manifest.steps.items():
        lines.extend(f"  warning: {printable(key)}: {printable(text)}" for text in rec.warnings)
    if manifest.error:
        lines.append(f"  error: {printable(manifest.error)}")
    return lines + approval_lines(manifest)


def metrics_text(metrics: Mapping[str, float | int | bool]) -> str:
    """`roc_auc=0.81, n=120`: metrics as one short text (numbers to 4 significant digits).

    >>> metrics_text({"roc_auc": 0.812345, "ok": True})
    'roc_auc=0.8123, ok=true'
    """

    def value(v: float | int | bool) -> str:
        return (
            str(v).lower()
            if isinstance(v, bool)
            else f"{v:.4g}"
            if isinstance(v, float)
            else str(v)
        )

    return ", ".join(f"{k}={value(v)}" for k, v in metrics.items())


def approval_lines(manifest: RunManifest) -> list[str]:
    """For a paused run: which steps wait, and the two commands that decide, to copy."""
    if manifest.status.value != "waiting_approval":
        return []
    waiting = [
        printable(n) for n, r in manifest.steps.items() if r.status is StepStatus.waiting_approval
    ]
    run_id = printable(manifest.run_id)
    return [
        f"  {', '.join(waiting) or 'a step'} waits for approval; to decide, run one of:",
        f"    sluice approve {run_id}",
        f"    sluice reject {run_id}",
    ]


class Sweeps:
    """Which instances each fanned-out step has, and how many have finished: progress for
    the live reporters (`train: 12/64 done, 1 failed`)."""

    def __init__(self, steps: Mapping[str, StepRecord] | None = None) -> None:
        steps = steps or {}
        self.groups = {n: [i for i in r.instances if i in steps] for n, r in steps.items()}
        self.groups = {n: names for n, names in self.groups.items() if names}
        self.owner = {i: g for g, names in self.groups.items() for i in names}
        self.status = {n: r.status for n, r in steps.items() if n in self.owner}

    def counted(self, steps: int) -> str:
        """`3 steps` or, with fan-out, `3 steps, 64 of them instances of train`."""
        if not self.owner:
            return counted(steps, "step")
        names = ", ".join(self.groups)
        return f"{counted(steps, 'step')}, {len(self.owner)} of them instances of {names}"

    def changed(self, name: str, record: StepRecord) -> str:
        """An instance's new status noted; ` (train: 3/4 done)` once it has finished."""
        group = self.owner.get(name)
        if group is None:
            return ""
        self.status[name] = record.status
        return f" ({group}: {self.progress(group)})" if record.status in TERMINAL else ""

    def progress(self, group: str) -> str:
        mine = [self.status[i] for i in self.groups[group]]
        done = sum(1 for s in mine if s in TERMINAL)
        failed = sum(1 for s in mine if s is StepStatus.failed)
        return f"{done}/{len(mine)} done" + (f", {failed} failed" if failed else "")
