"""Tick: claim the cron slots that are due on the results branch, then run each exactly once."""

from __future__ import annotations

import json
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
from engine.core import layout, names
from engine.core.manifest import RunManifest, RunStatus, Trigger
from engine.core.parse import LoadedPipeline
from engine.core.printable import printable
from engine.core.suggest import counted, suggest
from engine.core.triggers.cron import (
    CLAIMS_KEPT_FOR,
    claim_floor,
    claim_path,
    claim_record,
    due_slots,
    pruned_claims,
    slot_id,
    slot_iso,
    slot_stamp,
)
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
from engine.run.executor import new_run_id


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
    ran: dict[tuple[str, datetime], bytes] = {}
    for loaded in pipelines:
        floor = claim_floor(store.list_dir(layout.cron_floors(loaded.name)))

        def claimed(slot: datetime, name: str = loaded.name, floor: str | None = floor) -> bool:
            if floor is not None and slot_stamp(slot) < floor:
                return True  # its claim, if it had one, was pruned: never run again
            # One lookup of one path: the cost does not grow with the runs recorded.
            claim = store.read(claim_path(name, slot))
            if claim is None:
                return False
            ran[(name, slot)] = claim
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
        log(f"sluice: {counted(len(ran), 'due slot')} already claimed: not run again")
        for (name, slot), claim in sorted(ran.items(), key=lambda item: item[0][1]):
            log(f"sluice: {slot_id(name, slot)}: {held_by(store, name, claim)}")
    return sorted(found.values(), key=lambda d: (d.slot, d.loaded.name))


def held_by(store: ResultsBranch, pipeline: str, claim: bytes) -> str:
    """Which run holds a claimed slot and how it ended, and how to run it again.

    The claim names its run (claims made before they did say who claimed, and when). One
    more read, of that run's manifest: the cost does not grow with the runs recorded.
    """
    try:
        record = json.loads(claim)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return "its claim cannot be read; it stays claimed"
    run_id = record.get("run_id")
    if not isinstance(run_id, str) or names.problem(run_id) is not None:
        by = record.get("claimed_by")
        host = by.get("host") if isinstance(by, dict) else None
        who = f" by {printable(str(host))}" if host else ""
        when = f" at {printable(str(record['claimed_at']))}" if record.get("claimed_at") else ""
        return (
            f"claimed{when}{who}, by a tick that did not record its run "
            f"(`sluice runs --pipeline {pipeline}` lists the runs)"
        )
    shown = printable(run_id)
    raw = store.read(layout.manifest(pipeline, run_id))
    if raw is None:
        return (
            f"held by run {shown}, which has recorded nothing yet: it is still running, or "
            f"its runner stopped first (`sluice gc` closes such a run; `sluice run {pipeline}` "
            "runs the pipeline now)"
        )
    try:
        status = RunManifest.model_validate_json(raw).status
    except ValueError:
        return f"held by run {shown}, whose manifest cannot be read"
    ended = status.value.replace("_", " ")
    if status in (RunStatus.failed, RunStatus.cancelled):
        return f"held by run {shown}, which {ended}: to run it again, `sluice retry {shown}`"
    if status is RunStatus.waiting_approval:
        return f"held by run {shown}, which waits for `sluice approve {shown}`"
    return f"held by run {shown}, which {ended}"


class Ticker(Place):
    """A Place that claims cron slots on its results branch and runs them."""

    claims_kept = CLAIMS_KEPT_FOR  # a tick keeps the claims of its whole window, if longer

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
        self.claims_kept = max(CLAIMS_KEPT_FOR, window)
        try:
            if store.pushes:
                store.fetch()  # see other runners' claims before deciding what is due
            slots = due(store, pipelines, now, window, self.log)
            done.due = len(slots)
            if not slots:
                return
            arm(runs.cancel)
            # One clock per command: `--now` also times the drift cooldowns.
            follower = DriftFollower(
                self.repo, self.config, push=self.push, log=self.log, clock=lambda: now
            )
            for item in slots:
                if runs.interrupted.is_set():
                    break
                self._claim_and_run(store, item, follower, runs, done, now)
        finally:
            store.close()
            done.interrupted = runs.interrupted.is_set()

    def _claim(
        self,
        store: ResultsBranch,
        item: Due,
        now: datetime | None = None,
        run_id: str | None = None,
    ) -> bool:
        """Commit the slot's claim, naming the run that will hold it (give that run this
        `run_id`); False when another runner has it or it may not be ours."""
        name, slot = item.loaded.name, item.slot
        path = claim_path(name, slot)
        record = claim_record(
            name,
            slot,
            schedule=item.schedule,
            timezone=item.timezone,
            host=socket.gethostname(),
            pid=os.getpid(),
            claimed_at=now or datetime.now(UTC),
            run_id=run_id,
        )
        message = f"sluice: claim {name} {slot_iso(slot)}"
        changes: dict[str, bytes | None] = {path: record}
        # Claims older than a week (or the tick's window) leave the tip with this commit, so
        # that a year of a 15-minute schedule is not 35,000 files every checkout downloads.
        old, floor = pruned_claims(
            store.list_dir(layout.cron_claims(name)), now or datetime.now(UTC), self.claims_kept
        )
        changes.update({layout.cron_claim(name, stamp): None for stamp in old})
        if floor is not None:
            floors = layout.cron_floors(name)
            changes.update({f"{floors}/{n}": None for n in store.list_dir(floors) if n < floor})
            changes[f"{floors}/{floor}"] = b""
        try:
            store.commit(changes, message, expect_absent=[path])
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
        now: datetime,
    ) -> None:
        where = slot_id(item.loaded.name, item.slot)
        run_id = new_run_id(datetime.now(UTC))  # ids sort by real start, whatever --now says
        try:
            if not self._claim(store, item, now, run_id):
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
            options.run_id = run_id  # the claim names it
            # The slot's run, then the runs its drift bindings start (a monitor's tick).
            manifests = execute_following(
                item.loaded,
                options,
                follower=follower,
                reporter=lambda: make_reporter(quiet=self.quiet),
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
