"""`sluice tick`: claim the cron slots that are due and run each exactly once."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from engine.adapters.git_results import ResultsStore
    from engine.cli.main import State
    from engine.core.manifest import RunManifest
    from engine.core.parse import LoadedPipeline

# engine.cli.main's CONTEXT, repeated: importing engine modules at the top would slow `sluice --help`.
_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@dataclass(frozen=True)
class _Due:
    """One slot of one pipeline to claim and run."""

    slot: datetime
    loaded: LoadedPipeline
    schedule: str
    timezone: str


@click.command("tick", context_settings=_CONTEXT)
@click.option(
    "--now",
    "now_text",
    metavar="ISO",
    help="The time to tick at, ISO 8601 with a zone, e.g. 2026-11-25T02:05:00Z (default: now).",
)
@click.option(
    "--window",
    "window_text",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="How late a slot may still run (GitHub delays schedule events): 90m, 6h, 1d.",
)
@click.option(
    "--pipeline",
    "names",
    multiple=True,
    metavar="NAME",
    help="Only this pipeline (repeatable; default: every pipeline with a cron trigger).",
)
@click.option(
    "--push/--no-push",
    default=None,
    help="Push claims and results (default: when a remote exists).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of manifests on stdout.")
@click.pass_obj
def command(
    state: State,
    now_text: str | None,
    window_text: str,
    names: tuple[str, ...],
    push: bool | None,
    as_json: bool,
) -> None:
    """Run the cron slots that are due: each slot once, however many runners tick.

    \b
    For every cron trigger, the latest slot at or before now that lies within the
    window and has not run is claimed and run (`catchup: latest`; earlier missed
    slots are coalesced into it). With `catchup: all` every missed slot in the
    window runs, oldest first. The slot, not the clock, names the run: a tick at
    04:05 with --window 6h still runs the 02:00 slot, with scheduled_for 02:00.
    A claim is a file claims/cron/<pipeline>/<YYYYMMDDTHHMMZ> committed to the
    results branch; when another runner pushed it first, the slot is skipped.
    Claimed slots run one after another. Exits 0 when nothing was due or every
    run succeeded (or waits for approval), 1 when a run failed, 2 on invalid
    input, 130 when interrupted.

    \b
    Examples:
      sluice tick                                  (in a scheduled workflow)
      sluice tick --window 6h --json
      sluice tick --now 2026-11-25T02:05:00Z --pipeline churn-retrain --no-push
    """
    from engine.adapters.git_results import store_for
    from engine.cli.main import EXIT_FAILED, EXIT_INTERRUPTED, _echo_json, _exit
    from engine.core.manifest import RunStatus
    from engine.errors import UsageError

    now = _parse_now(now_text) if now_text else datetime.now(UTC)
    window = _parse_window(window_text)
    pipelines = _load(state, names)
    store = store_for(state.repo, state.config, push)
    if store is None:
        raise UsageError(
            f"{state.repo} is not a git repository: `sluice tick` claims slots on its results branch"
        )
    manifests: list[RunManifest] = []
    failed = interrupted = False
    try:
        if store.pushes:
            store.fetch()  # see other runners' claims before deciding what is due
        due = _due(store, pipelines, now, window)
        if not due:
            click.echo(f"sluice: nothing due at {_iso(now)} (window {window_text})", err=True)
        else:
            failed, interrupted = _run_due(state, store, due, push, manifests)
    finally:
        store.close()
        if as_json:
            _echo_json([m.to_dict() for m in manifests])
    if interrupted or any(m.status is RunStatus.cancelled for m in manifests):
        _exit(EXIT_INTERRUPTED)
    if failed:
        _exit(EXIT_FAILED)


def _parse_now(text: str) -> datetime:
    from engine.errors import UsageError

    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--now {text!r} is not an ISO 8601 time, e.g. 2026-11-25T02:05:00Z"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise UsageError(f"--now {text!r} has no time zone: add Z or an offset such as +01:00")
    return moment.astimezone(UTC)


def _parse_window(text: str) -> timedelta:
    from engine.core.spec import parse_duration
    from engine.errors import UsageError

    try:
        return timedelta(seconds=parse_duration(text))
    except ValueError as exc:
        raise UsageError(f"--window: {exc}") from None


def _load(state: State, names: tuple[str, ...]) -> list[LoadedPipeline]:
    """Every pipeline of the pipelines folder (all must be valid), or the ones named."""
    from engine.adapters.pipeline_files import display_path, find_pipeline_files, load_many
    from engine.cli.main import EXIT_INVALID, _annotate, _exit
    from engine.core.suggest import suggest
    from engine.errors import NotFound, PipelineInvalid

    folder = state.pipelines_dir
    files = find_pipeline_files(folder)
    try:
        loaded = load_many(files, state.repo)
    except PipelineInvalid as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        _annotate(exc.problems)
        click.echo(
            f"sluice: {len(exc.problems)} problem(s) in {len({p.file for p in exc.problems})} "
            "file(s): nothing run",
            err=True,
        )
        _exit(EXIT_INVALID)
    by_name = {p.name: p for p in loaded}
    for name in names:
        if name not in by_name:
            where = display_path(folder, state.repo)
            raise NotFound(f"no pipeline named {name!r} in {where}/{suggest(name, by_name)}")
    chosen = [by_name[n] for n in dict.fromkeys(names)] if names else loaded
    for pipeline in chosen:
        if names and not any(t.cron_schedule for t in pipeline.pipeline.triggers):
            click.echo(f"sluice: {pipeline.name} has no cron trigger: nothing to tick", err=True)
    return chosen


def _due(
    store: ResultsStore, pipelines: list[LoadedPipeline], now: datetime, window: timedelta
) -> list[_Due]:
    """The unclaimed slots of every cron trigger, oldest first (one per pipeline and slot)."""
    from engine.core.triggers.cron import claim_path, due_slots
    from engine.errors import PipelineInvalid, Problem

    found: dict[tuple[str, datetime], _Due] = {}
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
                due = _Due(slot, loaded, cron.schedule, cron.timezone)
                found.setdefault((loaded.name, slot), due)  # two triggers, one slot: one run
    if ran:
        click.echo(f"sluice: {len(ran)} due slot(s) already claimed: not run again", err=True)
    return sorted(found.values(), key=lambda d: (d.slot, d.loaded.name))


def _run_due(
    state: State,
    store: ResultsStore,
    due: list[_Due],
    push: bool | None,
    manifests: list[RunManifest],
) -> tuple[bool, bool]:
    """Claim and run each slot in turn; returns (a run or claim failed, interrupted)."""
    from engine.adapters.console import make_reporter
    from engine.adapters.git_results import ClaimLost
    from engine.app.launch import DriftFollower, OneAtATime, execute_following, run_options
    from engine.cli.main import _install_signal_handlers
    from engine.core.manifest import RunStatus, Trigger
    from engine.core.triggers.cron import claim_path, claim_record, slot_id, slot_iso
    from engine.errors import EngineUnavailable, SluiceError

    runs = OneAtATime()
    _install_signal_handlers(runs.cancel)
    follower = DriftFollower(
        state.repo, state.config, push=push, log=lambda line: click.echo(line, err=True)
    )
    failed = False
    host, pid = socket.gethostname(), os.getpid()
    for item in due:
        if runs.interrupted.is_set():
            break
        name, slot = item.loaded.name, item.slot
        path = claim_path(name, slot)
        record = claim_record(
            name,
            slot,
            schedule=item.schedule,
            timezone=item.timezone,
            host=host,
            pid=pid,
            claimed_at=datetime.now(UTC),
        )
        try:
            store.commit(
                {path: record}, f"sluice: claim {name} {slot_iso(slot)}", expect_absent=[path]
            )
        except ClaimLost:
            click.echo(f"sluice: {slot_id(name, slot)}: another runner has it; skipped", err=True)
            continue
        except EngineUnavailable as exc:  # not claimed for sure: running could run it twice
            click.echo(
                f"sluice: error: {slot_id(name, slot)} not claimed, not run: {exc}", err=True
            )
            failed = True
            continue
        click.echo(f"sluice: {slot_id(name, slot)}: claimed; running {name}", err=True)
        trigger = Trigger(kind="cron", event=item.schedule, scheduled_for=slot_iso(slot))
        try:
            options = run_options(
                state.repo,
                state.config,
                item.loaded,
                params=dict(item.loaded.pipeline.params),
                trigger=trigger,
                push=push,
            )
            # The slot's run, then the runs its drift bindings start (a monitor's tick).
            done = execute_following(
                item.loaded,
                options,
                follower=follower,
                reporter=make_reporter,
                on_executor=runs.started,
            )
        except SluiceError as exc:  # one slot's engine trouble need not cost the others
            click.echo(f"sluice: error: {slot_id(name, slot)} claimed, run failed: {exc}", err=True)
            failed = True
            continue
        finally:
            runs.finished()
        manifests.extend(done)
        for manifest in done:
            if manifest.status is RunStatus.cancelled:
                runs.interrupted.set()
            failed = failed or manifest.status is RunStatus.failed
    return failed, runs.interrupted.is_set()


def _iso(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
