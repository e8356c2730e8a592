"""Run progress for people: a live table on a terminal, one plain line per change elsewhere."""

from __future__ import annotations

import os
import re
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from engine.core import step_rows
from engine.core.manifest import TERMINAL, RunManifest, StepRecord, StepStatus
from engine.core.printable import inert, printable
from engine.core.run_text import (
    Sweeps,
    approval_lines,
    duration,
    says_why,
    summary_lines,
)
from engine.errors import UsageError
from engine.local.logs import DEFAULT_LOG_CAP
from engine.ports import Reporter

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from engine.core.graph import Dag
    from engine.core.manifest import Attempt


# --- step output on its way to the screen ------------------------------------------------

RELAY_CAP_ENV = "SLUICE_RELAY_CAP"
_COLOUR = re.compile(r"(\x1b\[[0-9;:]*m)")  # SGR sequences: colours and bold, nothing else


def relay_cap(env: Mapping[str, str]) -> int:
    """Bytes of one attempt's output shown on stderr (`SLUICE_RELAY_CAP`; 0: no cap)."""
    raw = env.get(RELAY_CAP_ENV, "").strip()
    if not raw:
        return DEFAULT_LOG_CAP
    if not raw.isascii() or not raw.isdigit():
        raise UsageError(f"{RELAY_CAP_ENV}={raw!r}: give a number of bytes (0: no cap)")
    return int(raw)


def relay_pieces(line: str) -> list[str]:
    """One line of step output as the lines to show. A lone CR ends a line, as GitHub's
    runner reads it (so it can neither hide text on a terminal nor start a command on a
    runner); colours stay, every other control character is escaped.

    >>> relay_pieces("10%\\r20%\\r\\x1b[1mdone\\x1b[0m\\x1b]0;t\\x07\\n")
    ['10%', '20%', '\\x1b[1mdone\\x1b[0m\\\\x1b]0;t\\\\x07']
    """
    pieces = [p.rstrip() for p in line.rstrip("\r\n").split("\r")]
    kept = [p for p in pieces if p] or [""]
    return [
        "".join(part if i % 2 else printable(part, tabs=True) for i, part in enumerate(parts))
        for parts in (_COLOUR.split(piece) for piece in kept)
    ]


@dataclass
class _Held:
    """One attempt's relay: bytes shown from its head, the last lines held back (with their
    sizes), and what was cut between."""

    head: int = 0
    tail: deque[tuple[str, int]] = field(default_factory=deque)
    tail_bytes: int = 0
    cut_bytes: int = 0
    cut_lines: int = 0


class Relay:
    """Step output to show, capped per attempt like the branch log: the head as it comes,
    the cut marked, the tail when the attempt ends. Not thread-safe: the reporter locks."""

    def __init__(self, cap: int = DEFAULT_LOG_CAP) -> None:
        self.cap = cap
        self._half = max(cap // 2, 1)
        self._steps: dict[str, _Held] = {}

    def add(self, step: str, line: str) -> list[str]:
        """The lines to show now for one line of `step`'s output."""
        shown = [f"[{step}] {piece}" for piece in relay_pieces(line)]
        if not self.cap:
            return shown
        held = self._steps.setdefault(step, _Held())
        now: list[str] = []
        for text in shown:
            size = len(text.encode()) + 1  # printable: no surrogates left
            if not held.tail and held.head + size <= self._half:
                held.head += size
                now.append(text)
                continue
            if not held.tail and not held.cut_lines:
                now.append(
                    f"[{step}] [sluice: output past {self._half} bytes is held back; its last "
                    f"{self._half} bytes follow when the attempt ends ({RELAY_CAP_ENV})]"
                )
            held.tail.append((text, size))
            held.tail_bytes += size
            while held.tail_bytes > self._half and len(held.tail) > 1:
                _, dropped = held.tail.popleft()
                held.tail_bytes -= dropped
                held.cut_bytes += dropped
                held.cut_lines += 1
        return now

    def end(self, step: str) -> list[str]:
        """The attempt of `step` ended: the cut marker and the tail it held back."""
        held = self._steps.pop(step, None)
        if held is None or not held.tail:
            return []
        marker = []
        if held.cut_lines:
            marker.append(
                f"[{step}] [sluice: {held.cut_bytes} bytes ({held.cut_lines} lines) of step "
                "output cut here; head and tail kept, the run's log has its own]"
            )
        return [*marker, *(text for text, _ in held.tail)]

    def end_all(self) -> list[str]:
        return [line for step in list(self._steps) for line in self.end(step)]


class PlainReporter:
    """One line per event on a text stream (CI logs, pipes); logs prefixed with the step.

    With `github` (inside GitHub Actions) step output goes between `::stop-commands::T`
    and `::T::`, T a fresh random token the step never sees, so nothing a step prints is
    a workflow command; the engine's own lines, outside, are made `inert`.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        show_logs: bool = True,
        github: bool = False,
        relay_cap: int = DEFAULT_LOG_CAP,
    ) -> None:
        self.stream = stream or sys.stderr
        self.show_logs = show_logs
        self.github = github
        self._relay = Relay(relay_cap)
        self._token: str | None = None  # set while step output is being relayed
        self._lock = threading.Lock()
        self._sweeps = Sweeps()

    def _write(self, lines: list[str], *, output: bool = False) -> None:
        """Write `lines` (the lock held): step `output`, or the engine's own lines."""
        if not lines:
            return
        if output and self.github and self._token is None:
            self._token = secrets.token_hex(16)
            self.stream.write(f"::stop-commands::{self._token}\n")
        elif not output and self._token is not None:
            self.stream.write(f"::{self._token}::\n")
            self._token = None
        self.stream.write("".join(line + "\n" for line in lines))
        self.stream.flush()

    def _say(self, text: str, *, ended: str | None = None) -> None:
        """The engine's lines; `ended`: first the rest of that step's attempt output."""
        lines = [printable(line, tabs=True) for line in text.split("\n")]
        with self._lock:
            if ended is not None:
                self._write(self._relay.end(ended), output=True)
            self._write([inert(line) for line in lines] if self.github else lines)

    def run_started(self, manifest: RunManifest, dag: Dag) -> None:
        self._sweeps = Sweeps(manifest.steps)
        self._say(
            f"sluice: run {manifest.run_id} of {manifest.pipeline} started "
            f"({self._sweeps.counted(len(manifest.steps))})"
        )

    def step_changed(self, name: str, record: StepRecord) -> None:
        if record.status is StepStatus.running:
            return  # attempt_started says it, with the attempt number
        why = record.reason if says_why(record) or record.instances else ""
        took = f" in {duration(record)}" if record.attempts else ""
        progress = self._sweeps.changed(name, record)
        why = f": {printable(why or '')}" if why else ""
        self._say(f"sluice: {name}: {record.status.value}{took}{why}{progress}", ended=name)

    def attempt_started(self, name: str, number: int) -> None:
        self._say(f"sluice: {name}: running (attempt {number})", ended=name)

    def retrying(self, name: str, attempt: Attempt, delay: float) -> None:
        outcome = attempt.outcome.value if attempt.outcome else "ended"
        text = f"sluice: {name}: attempt {attempt.number} {outcome}; retrying in {delay:g}s"
        self._say(text, ended=name)

    def log(self, step: str, line: str) -> None:
        if self.show_logs:
            with self._lock:
                self._write(self._relay.add(step, line), output=True)

    def note(self, text: str) -> None:
        self._say(f"sluice: {text}")

    def run_finished(self, manifest: RunManifest) -> None:
        with self._lock:
            self._write(self._relay.end_all(), output=True)
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


# A run's final status on a terminal: only a failure is red; a paused run waits for someone.
_RUN_STYLE = {
    "succeeded": "green",
    "waiting_approval": "magenta",
    "cancelled": "yellow",
    "failed": "red",
}


_FAILED_SHOWN = 5  # a sweep's failed instances listed in the live table; the rest counted


class LiveReporter:
    """A live-updating table of steps on a terminal (rich); logs scroll above it."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        show_logs: bool = True,
        relay_cap: int = DEFAULT_LOG_CAP,
    ) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.show_logs = show_logs
        self._relay = Relay(relay_cap)
        self._lock = threading.Lock()
        self._records: dict[str, StepRecord] = {}
        self._since: dict[str, float] = {}
        self._live: Live | None = None
        self._title = ""
        self._sweeps = Sweeps()

    def _table(self) -> Table:
        """Steps; a fanned-out step as one row counting its finished instances, beneath it
        only its running instances and its first failed ones (a 64-instance sweep stays a
        few lines)."""
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=self._title, title_justify="left", box=None, pad_edge=False)
        for column in ("step", "status", "attempts", "time"):
            table.add_column(column)
        failed: dict[str | None, int] = {}
        for row in step_rows.rows(self._records, limit=None):
            rec = row.record
            if rec is None:
                continue
            if row.depth and rec.status is StepStatus.failed:
                failed[rec.instance_of] = failed.get(rec.instance_of, 0) + 1
                if failed[rec.instance_of] > _FAILED_SHOWN:
                    continue
            elif row.depth and rec.status is not StepStatus.running:
                continue
            name, status, tries = row.name, rec.status, str(len(rec.attempts) or "")
            elapsed = duration(rec)
            if rec.status is StepStatus.running and name in self._since:
                elapsed = f"{time.monotonic() - self._since[name]:.1f}s"
            if row.is_group:
                tries = self._sweeps.progress(name)
                mine = [self._records[i].status for i in rec.instances if i in self._records]
                if rec.status not in TERMINAL and any(s is not StepStatus.pending for s in mine):
                    status = StepStatus.running
            style = _STYLE.get(status, "")
            shown = escape(("  " * row.depth) + printable(row.shown))
            table.add_row(shown, f"[{style}]{status.value}[/]", escape(tries), elapsed)
        return table

    def run_started(self, manifest: RunManifest, dag: Dag) -> None:
        from rich.live import Live

        self._title = f"{manifest.pipeline} · {manifest.run_id}"
        self._records = {name: rec.model_copy() for name, rec in manifest.steps.items()}
        self._sweeps = Sweeps(manifest.steps)
        self._live = Live(
            get_renderable=self._table, console=self.console, refresh_per_second=4, transient=False
        )
        self._live.start()

    def _show(self, lines: list[str]) -> None:
        for line in lines:
            self.console.print(line, markup=False, highlight=False)

    def _ended(self, name: str) -> None:
        with self._lock:
            self._show(self._relay.end(name))

    def step_changed(self, name: str, record: StepRecord) -> None:
        self._records[name] = record.model_copy()
        self._sweeps.changed(name, record)
        if record.status is not StepStatus.running:
            self._ended(name)

    def attempt_started(self, name: str, number: int) -> None:
        self._ended(name)
        self._since[name] = time.monotonic()

    def retrying(self, name: str, attempt: Attempt, delay: float) -> None:
        self._ended(name)
        outcome = attempt.outcome.value if attempt.outcome else "ended"
        self.console.print(
            f"{name}: attempt {attempt.number} {outcome}; retrying in {delay:g}s", markup=False
        )

    def log(self, step: str, line: str) -> None:
        if self.show_logs:
            with self._lock:
                self._show(self._relay.add(step, line))

    def note(self, text: str) -> None:
        self.console.print(f"sluice: {printable(text, tabs=True)}", markup=False, highlight=False)

    def run_finished(self, manifest: RunManifest) -> None:
        with self._lock:
            self._show(self._relay.end_all())
        self._records = {name: rec.model_copy() for name, rec in manifest.steps.items()}
        self._sweeps = Sweeps(manifest.steps)
        if self._live is not None:
            self._live.stop()
        colour = _RUN_STYLE.get(manifest.status.value, "red")
        from rich.markup import escape

        pipeline, run_id = escape(printable(manifest.pipeline)), escape(printable(manifest.run_id))
        self.console.print(f"[{colour}]{pipeline}: {manifest.status.value}[/] ({run_id})")
        for name, rec in manifest.steps.items():
            for text in rec.warnings:
                self.console.print(
                    f"warning: {printable(name)}: {printable(text)}", markup=False, style="yellow"
                )
        if manifest.error:
            self.console.print(f"error: {printable(manifest.error)}", markup=False)
        for line in approval_lines(manifest):
            self.console.print(line, markup=False, highlight=False)


def make_reporter(*, quiet: bool = False, env: Mapping[str, str] | None = None) -> Reporter:
    """Live on a terminal, plain lines elsewhere (NO_COLOR is honoured by rich); always
    plain inside GitHub Actions (FORCE_COLOR would make rich take its log for a terminal)."""
    env = os.environ if env is None else env
    cap = relay_cap(env)
    github = env.get("GITHUB_ACTIONS") == "true"
    plain = PlainReporter(sys.stderr, show_logs=not quiet, github=github, relay_cap=cap)
    if github or not (_isatty(sys.stderr) or env.get("FORCE_COLOR") or env.get("TTY_COMPATIBLE")):
        return plain  # decided before rich loads: scripts and CI never import it
    from rich.console import Console  # lazy: ~20 ms, for a terminal only

    console = Console(stderr=True)
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveReporter(console, show_logs=not quiet, relay_cap=cap)
    return plain


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


__all__ = ["LiveReporter", "PlainReporter", "Relay", "make_reporter", "summary_lines"]
