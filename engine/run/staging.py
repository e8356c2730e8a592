"""Containers made ahead: the next steps' containers, created and filled while their
upstream steps still run, so that only inputs remain to copy when those end."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

from engine.core.manifest import DONE_OK, StepRecord, StepStatus
from engine.core.spec import ImageBuild, ResolvedStep
from engine.run.attempt import AttemptRunner, Staged
from engine.run.prepare import Prepared


def next_up(
    queued: Sequence[str],
    running: set[str],
    order: Sequence[str],
    steps: Mapping[str, ResolvedStep],
    records: Mapping[str, StepRecord],
) -> list[str]:
    """The steps worth a container made now: those queued for a slot, then pending steps
    whose needs all run or succeeded (ready once the running ones succeed), in order.

    Left out: steps that may not run as prepared (`when`, an approval, finally steps) and
    those whose image is built (a build is not started for a step that may not run).
    """
    after: list[str] = []
    if running:
        after = [
            name
            for name in order
            if records[name].status is StepStatus.pending
            and not steps[name].is_group  # (its needs are all its instances)
            and any(dep in running for dep in steps[name].needs)
            and all(dep in running or records[dep].status in DONE_OK for dep in steps[name].needs)
        ]
    return [
        name
        for name in [*queued, *after]
        if name not in running
        and not steps[name].is_finally
        and not steps[name].is_group
        and steps[name].when is None
        and steps[name].approval is not True
        and not isinstance(steps[name].image, ImageBuild)
    ]


class _Making:
    """One container being made on a helper thread; `wait` gives it (None: not made)."""

    def __init__(self, runner: AttemptRunner, prepared: Prepared, number: int) -> None:
        self._runner, self._prepared, self._number = runner, prepared, number
        self._made: Staged | None = None
        self.thread = threading.Thread(
            target=self._make, name=f"sluice-stage-{prepared.step.name}", daemon=True
        )
        self.thread.start()

    def _make(self) -> None:
        try:
            self._made = self._runner.stage(self._prepared, self._number)
        except Exception:  # only a lost head start: the attempt makes its own container
            self._made = None

    def wait(self) -> Staged | None:
        self.thread.join()
        return self._made

    def discard(self) -> None:
        made = self.wait()
        if made is not None:
            self._runner.discard(made)


class Stager:
    """At most `limit` containers made ahead and not started yet, one per step.

    Each one is taken by its step's attempt (`take`), or removed (`drop`: the step ended
    without running, as cached, skipped, upstream failed or cancelled; `close`: the run
    ended). After `close` nothing made here is left.
    """

    def __init__(self, runner: AttemptRunner, limit: int) -> None:
        self._runner, self._limit = runner, limit
        self._waiting: dict[str, _Making] = {}
        self._dropping: list[threading.Thread] = []

    def room(self) -> int:
        return self._limit - len(self._waiting)

    def has(self, name: str) -> bool:
        return name in self._waiting

    def stage(self, name: str, prepared: Prepared, number: int) -> None:
        """Start making attempt `number` of step `name`'s container."""
        self._waiting[name] = _Making(self._runner, prepared, number)

    def take(self, name: str) -> Callable[[], Staged | None] | None:
        """For the attempt starting now: what waits for its container (None: none made)."""
        making = self._waiting.pop(name, None)
        return making.wait if making is not None else None

    def drop(self, name: str) -> None:
        """The step will not run: its container goes (on a helper thread, joined by close)."""
        making = self._waiting.pop(name, None)
        if making is not None:
            thread = threading.Thread(target=making.discard, daemon=True)
            thread.start()
            self._dropping.append(thread)

    def close(self) -> None:
        """Remove every container not taken, and wait until they are gone."""
        for name in list(self._waiting):
            self.drop(name)
        for thread in self._dropping:
            thread.join()
        self._dropping.clear()
