"""`sluice tick`: claim the cron slots that are due and run each exactly once."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from engine.cli.common import (
    CONTEXT,
    EXIT_ENGINE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    State,
    echo_json,
    exit_with,
    install_signal_handlers,
    problems_exit,
    runs_exit_code,
    say,
)
from engine.cli.run import quiet_option
from engine.errors import PipelineInvalid


@click.command("tick", context_settings=CONTEXT)
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
@quiet_option
@click.pass_obj
def command(
    state: State,
    now_text: str | None,
    window_text: str,
    names: tuple[str, ...],
    push: bool | None,
    as_json: bool,
    quiet: bool,
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
    input, 3 when the engine could not run or push a record, 130 when interrupted.

    \b
    Examples:
      sluice tick                                  (in a scheduled workflow)
      sluice tick --window 6h --json
      sluice tick --now 2026-11-25T02:05:00Z --pipeline churn-retrain --no-push
    """
    from engine.app import tick  # lazy: `sluice --help` does not load pydantic
    from engine.app.runs import OneAtATime, outcome, report_errors  # lazy: as above

    now = tick.parse_now(now_text) if now_text else datetime.now(UTC)
    window = tick.parse_window(window_text)
    try:
        pipelines = tick.load(state.repo, state.pipelines_dir, names, say)
    except PipelineInvalid as exc:
        problems_exit(exc.problems, ": nothing run")
    ticker = tick.Ticker(state.repo, state.config, push, say, quiet)
    store = ticker.open()
    done = tick.Ticked()
    try:
        ticker.tick(store, pipelines, now, window, OneAtATime(), done, install_signal_handlers)
        if not done.due:
            say(f"sluice: nothing due at {tick.iso(now)} (window {window_text})")
    finally:
        if as_json:
            echo_json([m.to_dict() for m in done.manifests])
    report_errors(done.manifests, say)
    if done.interrupted:
        exit_with(EXIT_INTERRUPTED)
    code = runs_exit_code(outcome(m) for m in done.manifests)
    if done.engine_failed:
        exit_with(EXIT_ENGINE)
    exit_with(EXIT_FAILED if code == EXIT_OK and done.failed else code)
