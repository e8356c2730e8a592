"""The scheduling loop: attempts on worker threads, at most `max_parallel` at once, retries timed."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Literal, Protocol

from engine.errors import EngineUnavailable
from engine.run.attempt import AttemptReport

LOOP_TICK_S = 0.25  # how often the loop looks at the stop flags while it waits

Job = Callable[[], AttemptReport]  # one attempt, run on a worker thread; never raises
Verdict = Literal["start", "wait", "drop"]  # Plan.may_start


class Plan(Protocol):
    """The decisions the loop applies (the executor's): which steps run, and what a report means."""

    def stopping(self) -> bool:
        """Whether the run is cancelled or the engine failed: no further step may start."""
        ...

    def stop(self, running: set[str]) -> None:
        """Close every step that will not start now (`running` ones end on their own)."""
        ...

    def ready(self, busy: set[str]) -> list[str]:
        """Steps to run now, besides `busy` (settling every step decided without running)."""
        ...

    def may_start(self, name: str, running: set[str]) -> Verdict:
        """Whether a step waiting for a slot starts now besides `running`: `wait` (a limit of
        its own, e.g. its fan-out group's max_parallel), or `drop` (it was decided meanwhile,
        e.g. cancelled by fail_fast: it never starts)."""
        ...

    def start(self, name: str, number: int) -> Job:
        """Mark attempt `number` of `name` as started; the job that runs it."""
        ...

    def apply(self, report: AttemptReport, stopping: bool) -> float | None:
        """Record a finished attempt; seconds until the next attempt, None for no retry."""
        ...

    def engine_failed(self, exc: EngineUnavailable, step: str | None) -> None:
        """The engine itself failed between attempts: the run stops."""
        ...

    def lookahead(self, queued: list[str], running: set[str]) -> None:
        """Prepare what will start next (`queued`: waiting for a slot), off the critical path."""
        ...


def run_loop(plan: Plan, attempts: dict[str, int], max_parallel: int) -> None:
    """Start ready steps, wait for reports, retry when told, until nothing is left to do.

    `attempts`: step -> attempts made so far (a resumed run continues the count).
    """
    reports: queue.Queue[AttemptReport] = queue.Queue()
    ready: list[str] = []  # decided to run, waiting for a free slot
    retry_at: dict[str, float] = {}  # step -> monotonic time its next attempt may start
    running: set[str] = set()
    stopping = False
    while True:
        if not stopping and plan.stopping():
            stopping = True
            plan.stop(running)
            ready.clear()
            retry_at.clear()
        if not stopping:
            try:
                ready += plan.ready({*ready, *running})
                now = time.monotonic()
                for name in [n for n, at in retry_at.items() if at <= now]:
                    del retry_at[name]
                    ready.append(name)
                ready[:] = _start(plan, ready, running, attempts, max_parallel, reports)
                plan.lookahead(ready, running)
            except EngineUnavailable as exc:
                plan.engine_failed(exc, None)
                continue
        if not running and not ready and not retry_at:
            return
        timeout = LOOP_TICK_S
        if retry_at and not ready:
            timeout = max(0.0, min(timeout, min(retry_at.values()) - time.monotonic()))
        try:
            report = reports.get(timeout=timeout)
        except queue.Empty:
            continue
        running.discard(report.step)
        delay = plan.apply(report, stopping)
        if delay is not None:
            retry_at[report.step] = time.monotonic() + delay


def _start(
    plan: Plan,
    ready: list[str],
    running: set[str],
    attempts: dict[str, int],
    max_parallel: int,
    reports: queue.Queue[AttemptReport],
) -> list[str]:
    """Start what fits, in order; the steps still waiting for a slot."""
    waiting: list[str] = []
    for name in ready:
        if len(running) >= max_parallel:
            waiting.append(name)
            continue
        verdict = plan.may_start(name, running)
        if verdict == "wait":
            waiting.append(name)
        elif verdict == "start":
            _spawn(plan.start(name, attempts[name] + 1), name, attempts[name] + 1, reports)
            attempts[name] += 1
            running.add(name)
    return waiting


def _spawn(job: Job, name: str, number: int, reports: queue.Queue[AttemptReport]) -> None:
    thread = threading.Thread(
        target=lambda: reports.put(job()), name=f"sluice-{name}-{number}", daemon=True
    )
    thread.start()
