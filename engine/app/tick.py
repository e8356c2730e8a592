"""Tick: claim the cron slots that are due on the results branch, then run each exactly once."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine.adapters.console import make_reporter
from engine.adapters.pipeline_files import display_path, find_pipeline_files, load_many
from engine.app import compose, execution
from engine.app.drift_follow import DriftFollower, execute_following
from engine.app.runs import OneAtATime, Place
from engine.core.manifest import RunManifest, RunStatus, Trigger
from engine.core.parse import LoadedPipeline
from engine.core.suggest import suggest
from engine.core.triggers.cron import claim_path, claim_record, due_slots, slot_id, slot_iso
from engine.core.values import parse_duration
from engine.errors import (
    ClaimLost,
    EngineUnavailable,
    NotFound,
    PipelineInvalid,
    Problem,
    SluiceError,
    UsageError,
)
from engine.ports import ResultsBranch


@dataclass(frozen=True)
class Due:
    """One slot of one pipeline to claim and run."""

    slot: datetime
    loaded: LoadedPipeline
    schedule: str
    timezone: str


@dataclass
class Ticked:
    """What a tick did: slots due, the runs' manifests, whether a run or claim failed, and
    whether a signal came."""

    due: int = 0
    manifests: list[RunManifest] = field(default_factory=list)
    failed: bool = False
    interrupted: bool = False
    engine_failed: bool = False  # a claim or a run the engine could not carry out (exit 3)


def parse_now(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--now {text!r} is not an ISO 8601 time, e.g. 2026-11-25T02:05:00Z"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise UsageError(f"--now {text!r} has no time zone: add Z or an offset such as +01:00")
    return moment.astimezone(UTC)


def parse_window(text: str) -> timedelta:
    try:
        return timedelta(seconds=parse_duration(text))
    except ValueError as exc:
        raise UsageError(f"--window: {exc}") from None


def iso(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def load(
    repo: Path, folder: Path, names: tuple[str, ...], log: Callable[[str], None]
) -> list[LoadedPipeline]:
    """Every pipeline of the folder (all must be valid: PipelineInvalid), or the ones named."""
    loaded = load_many(find_pipeline_files(folder), repo)
    by_name = {p.name: p for p in loaded}
    for name in names:
        if name not in by_name:
            where = display_path(folder, repo)
            raise NotFound(f"no pipeline named {name!r} in {where}/{suggest(name, by_name)}")
    chosen = [by_name[n] for n in dict.fromkeys(names)] if names else loaded
    for pipeline in chosen:
        if names and not any(t.cron_schedule for t in pipeline.pipeline.triggers):
            log(f"sluice: {pipeline.name} has no cron trigger: nothing to tick")
    return chosen


def due(
    store: ResultsBranch,
    pipelines: list[LoadedPipeline],
    now: datetime,
    window: timedelta,
    log: Callable[[str], None],
) -> list[Due]:
    """The unclaimed slots of every cron trigger, oldest first (one per pipeline and slot)."""
    found: dict[tuple[str, datetime], Due] = {}
    ran: set[tuple[str, datetime]] = set()
    for loaded in pipelines:

        def claimed(slot: datetime, name: str = loaded.name) -> bool:
            # One lookup of one path: the cost does not grow with the runs recorded.
            if store.read(claim_path(name, slot)) is None:
                return False
            ran.add((name, slot))
            return True

        for index, trigger in enumerate(loaded.pipeline.triggers):
            cron = trigger.cron_schedule
            if cron is None:
                continue
            try:
                slots = due_slots(
                    cron.schedule,
                    cron.timezone,
                    now=now,
                    window=window,
                    catchup=cron.catchup,
                    already=claimed,
                )
            except ValueError as exc:  # loading refuses these first; a gap shows as a problem
                line = loaded.lines.key_line(("triggers", index))
                raise PipelineInvalid([Problem(loaded.file, line, str(exc))]) from None
            for slot in slots:
                item = Due(slot, loaded, cron.schedule, cron.timezone)
                found.setdefault((loaded.name, slot), item)  # two triggers, one slot: one run
    if ran:
        log(f"sluice: {len(ran)} due slot(s) already claimed: not run again")
    return sorted(found.values(), key=lambda d: (d.slot, d.loaded.name))


class Ticker(Place):
    """A Place that claims cron slots on its results branch and runs them."""

    def open(self) -> ResultsBranch:
        """The results branch claims go to; UsageError outside a git repository."""
        store = compose.results_branch(self.repo, self.config, self.push)
        if store is None:
            raise UsageError(
                f"{self.repo} is not a git repository: `sluice tick` claims slots on its "
                "results branch"
            )
        return store

    def tick(
        self,
        store: ResultsBranch,
        pipelines: list[LoadedPipeline],
        now: datetime,
        window: timedelta,
        runs: OneAtATime,
        done: Ticked,
        arm: Callable[[Callable[[], None]], None],
    ) -> None:
        """Claim and run every due slot, one after another, recording into `done` as it goes.

        `arm(runs.cancel)` is called once there is something to run (signal handlers).
        The store is closed at the end.
        """
        try:
            if store.pushes:
                store.fetch()  # see other runners' claims before deciding what is due
            slots = due(store, pipelines, now, window, self.log)
            done.due = len(slots)
            if not slots:
                return
            arm(runs.cancel)
            follower = DriftFollower(self.repo, self.config, push=self.push, log=self.log)
            for item in slots:
                if runs.interrupted.is_set():
                    break
                self._claim_and_run(store, item, follower, runs, done)
        finally:
            store.close()
            done.interrupted = runs.interrupted.is_set()

    def _claim(self, store: ResultsBranch, item: Due) -> bool:
        """Commit the slot's claim; False when another runner has it or it may not be ours."""
        name, slot = item.loaded.name, item.slot
        path = claim_path(name, slot)
        record = claim_record(
            name,
            slot,
            schedule=item.schedule,
            timezone=item.timezone,
            host=socket.gethostname(),
            pid=os.getpid(),
            claimed_at=datetime.now(UTC),
        )
        message = f"sluice: claim {name} {slot_iso(slot)}"
        try:
            store.commit({path: record}, message, expect_absent=[path])
        except ClaimLost:
            self.log(f"sluice: {slot_id(name, slot)}: another runner has it; skipped")
            return False
        self.log(f"sluice: {slot_id(name, slot)}: claimed; running {name}")
        return True

    def _claim_and_run(
        self,
        store: ResultsBranch,
        item: Due,
        follower: DriftFollower,
        runs: OneAtATime,
        done: Ticked,
    ) -> None:
        where = slot_id(item.loaded.name, item.slot)
        try:
            if not self._claim(store, item):
                return
        except EngineUnavailable as exc:  # not claimed for sure: running could run it twice
            self.log(f"sluice: error: {where} not claimed, not run: {exc}")
            done.failed = done.engine_failed = True
            return
        trigger = Trigger(kind="cron", event=item.schedule, scheduled_for=slot_iso(item.slot))
        try:
            options = execution.run_options(
                self.repo, self.config, item.loaded, trigger=trigger, push=self.push
            )
            # The slot's run, then the runs its drift bindings start (a monitor's tick).
            manifests = execute_following(
                item.loaded,
                options,
                follower=follower,
                reporter=make_reporter,
                on_executor=runs.started,
            )
        except SluiceError as exc:  # one slot's engine trouble need not cost the others
            self.log(f"sluice: error: {where} claimed, run failed: {exc}")
            done.failed = True
            done.engine_failed = isinstance(exc, EngineUnavailable) or done.engine_failed
            return
        finally:
            runs.finished()
        done.manifests.extend(manifests)
        for manifest in manifests:
            if manifest.status is RunStatus.cancelled:
                runs.interrupted.set()
            done.failed = done.failed or manifest.status is RunStatus.failed
