"""Run progress for people: a live table on a terminal, one plain line per change elsewhere."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from engine.core.manifest import RunManifest, StepRecord, StepStatus
from engine.ports import Reporter

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from engine.core.graph import Dag
    from engine.core.manifest import Attempt


def _duration(record: StepRecord) -> str:
    total = sum(a.duration_s or 0.0 for a in record.attempts)
    return f"{total:.1f}s" if record.attempts else ""


def summary_lines(manifest: RunManifest) -> list[str]:
    """A plain table of steps, for the end of a run."""
    width = max((len(n) for n in manifest.steps), default=4)
    lines = [f"run {manifest.run_id} ({manifest.pipeline}): {manifest.status.value}"]
    for name, rec in manifest.steps.items():
        tries = (
            f"{len(rec.attempts)} attempt{'s' if len(rec.attempts) != 1 else ''}"
            if rec.attempts
            else ""
        )
        why = f"  {rec.reason}" if rec.reason and rec.status is not StepStatus.succeeded else ""
        lines.append(
            f"  {name:<{width}}  {rec.status.value:<16} {tries:<11} {_duration(rec):>7}{why}"
        )
    if manifest.error:
        lines.append(f"  error: {manifest.error}")
    return lines


class PlainReporter:
    """One line per event on a text stream (CI logs, pipes); logs prefixed with the step."""

    def __init__(self, stream: TextIO | None = None, *, show_logs: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.show_logs = show_logs
        self._lock = threading.Lock()

    def _say(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def run_started(self, manifest: RunManifest, dag: Dag) -> None:
        count = len(manifest.steps)
        self._say(f"sluice: run {manifest.run_id} of {manifest.pipeline} started ({count} steps)")

    def step_changed(self, name: str, record: StepRecord) -> None:
        if record.status is StepStatus.running:
            return  # attempt_started says it, with the attempt number
        why = (
            f": {record.reason}"
            if record.reason and record.status is not StepStatus.succeeded
            else ""
        )
        took = f" in {_duration(record)}" if record.attempts else ""
        self._say(f"sluice: {name}: {record.status.value}{took}{why}")

    def attempt_started(self, name: str, number: int) -> None:
        self._say(f"sluice: {name}: running (attempt {number})")

    def retrying(self, name: str, attempt: Attempt, delay: float) -> None:
        outcome = attempt.outcome.value if attempt.outcome else "ended"
        self._say(f"sluice: {name}: attempt {attempt.number} {outcome}; retrying in {delay:g}s")

    def log(self, step: str, line: str) -> None:
        if self.show_logs:
            self._say(f"[{step}] {line.rstrip()}")

    def note(self, text: str) -> None:
        self._say(f"sluice: {text}")

    def run_finished(self, manifest: RunManifest) -> None:
        self._say("\n".join(summary_lines(manifest)))


_STYLE = {
    StepStatus.pending: "dim",
    StepStatus.running: "yellow",
    StepStatus.succeeded: "green",
    StepStatus.cached: "cyan",
    StepStatus.failed: "red",
    StepStatus.upstream_failed: "red",
    StepStatus.skipped: "dim",
    StepStatus.waiting_approval: "magenta",
    StepStatus.cancelled: "dim",
}


class LiveReporter:
    """A live-updating table of steps on a terminal (rich); logs scroll above it."""

    def __init__(self, console: Console | None = None, *, show_logs: bool = True) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.show_logs = show_logs
        self._records: dict[str, StepRecord] = {}
        self._since: dict[str, float] = {}
        self._live: Live | None = None
        self._title = ""

    def _table(self) -> Table:
        from rich.table import Table

        table = Table(title=self._title, title_justify="left", box=None, pad_edge=False)
        for column in ("step", "status", "attempts", "time"):
            table.add_column(column)
        for name, rec in self._records.items():
            elapsed = _duration(rec)
            if rec.status is StepStatus.running and name in self._since:
                elapsed = f"{time.monotonic() - self._since[name]:.1f}s"
            style = _STYLE.get(rec.status, "")
            table.add_row(
                name, f"[{style}]{rec.status.value}[/]", str(len(rec.attempts) or ""), elapsed
            )
        return table

    def run_started(self, manifest: RunManifest, dag: Dag) -> None:
        from rich.live import Live

        self._title = f"{manifest.pipeline} · {manifest.run_id}"
        self._records = {name: rec.model_copy() for name, rec in manifest.steps.items()}
        self._live = Live(
            get_renderable=self._table, console=self.console, refresh_per_second=4, transient=False
        )
        self._live.start()

    def step_changed(self, name: str, record: StepRecord) -> None:
        self._records[name] = record.model_copy()

    def attempt_started(self, name: str, number: int) -> None:
        self._since[name] = time.monotonic()

    def retrying(self, name: str, attempt: Attempt, delay: float) -> None:
        outcome = attempt.outcome.value if attempt.outcome else "ended"
        self.console.print(
            f"{name}: attempt {attempt.number} {outcome}; retrying in {delay:g}s", markup=False
        )

    def log(self, step: str, line: str) -> None:
        if self.show_logs:
            self.console.print(f"[{step}] {line.rstrip()}", markup=False, highlight=False)

    def note(self, text: str) -> None:
        self.console.print(f"sluice: {text}", markup=False, highlight=False)

    def run_finished(self, manifest: RunManifest) -> None:
        self._records = {name: rec.model_copy() for name, rec in manifest.steps.items()}
        if self._live is not None:
            self._live.stop()
        colour = "green" if manifest.status.value == "succeeded" else "red"
        self.console.print(
            f"[{colour}]{manifest.pipeline}: {manifest.status.value}[/] ({manifest.run_id})"
        )
        if manifest.error:
            self.console.print(f"error: {manifest.error}", markup=False)


def make_reporter(*, quiet: bool = False) -> Reporter:
    """Live on a terminal, plain lines elsewhere (NO_COLOR is honoured by rich)."""
    from rich.console import Console

    console = Console(stderr=True)
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveReporter(console, show_logs=not quiet)
    return PlainReporter(sys.stderr, show_logs=not quiet)
