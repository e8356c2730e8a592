"""`sluice runs`, `show`, `logs`: what the results branch recorded."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Mapping
from typing import Any

import click

from engine.cli.common import CONTEXT, State, echo_json, json_out, say, shown
from engine.core.printable import printable

_fetch = click.option(
    "--fetch", is_flag=True, help="Fetch the results branch from the remote first."
)


@click.command(context_settings=CONTEXT)
@click.option("--pipeline", "pipeline_name", metavar="NAME", help="Only this pipeline's runs.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@_fetch
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of manifests on stdout.")
@click.pass_obj
def runs(state: State, pipeline_name: str | None, limit: int, fetch: bool, as_json: bool) -> None:
    """List recorded runs, newest first, from the results branch.

    A run records itself when it ends (or pauses for approval); runs still going on this
    machine are listed from `.sluice/runs/` too.

    \b
    Examples:
      sluice runs
      sluice runs --pipeline churn-retrain --limit 5
      sluice runs --fetch --json | jq '.[0].status'
    """
    from engine.app.reading import unrecorded_here  # lazy: `sluice --help` stays light

    with state.reading_store(fetch) as store:
        found = store.runs(pipeline_name, limit)
    going = unrecorded_here(state.repo, {m.run_id for m in found}, pipeline_name, limit)
    if going:  # on this machine, not recorded yet: merged in by start time
        found = sorted([*found, *going], key=lambda m: m.run_id, reverse=True)[:limit]
    if pipeline_name and not found:
        _known(state, pipeline_name)  # a name no file declares: exit 2, with a did-you-mean
    if as_json:
        echo_json([m.to_dict() for m in found])
        return
    if not found:
        if pipeline_name:
            say(f"sluice: no runs of {pipeline_name} recorded yet: `sluice run {pipeline_name}`")
        else:
            say("sluice: no runs recorded yet: `sluice run PIPELINE` starts one")
        return
    click.echo(f"{'RUN':<24} {'PIPELINE':<24} {'STATUS':<17} {'TRIGGER':<12} {'DURATION':>9}")
    for m in found:
        took = f"{m.duration_s:.1f}s" if m.duration_s is not None else ""
        run, pipeline, kind = (printable(v) for v in (m.run_id, m.pipeline, m.trigger.kind))
        click.echo(shown(f"{run:<24} {pipeline:<24} {m.status.value:<17} {kind:<12} {took:>9}"))


def _known(state: State, name: str) -> None:
    """NotFound (exit 2, with a did-you-mean) unless a pipeline file declares `name`."""
    from engine.errors import PipelineInvalid  # lazy: `sluice --help` stays light

    # An invalid file that declares the name is that pipeline: `validate` says what is wrong.
    with contextlib.suppress(PipelineInvalid):
        state.pipeline(name)


@click.command(context_settings=CONTEXT)
@click.argument("run_id")
@_fetch
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON on stdout.")
@click.pass_obj
def show(state: State, run_id: str, fetch: bool, as_json: bool) -> None:
    """Show one run: its steps, attempts, metrics and outputs.

    \b
    Example:
      sluice show 20261124T100000Z-a1b2c3
    """
    from engine.adapters.github_ci import run_url  # lazy: as above
    from engine.app.orphans import engine_gone  # lazy: as above
    from engine.app.reading import find_run, production_of  # lazy: as above
    from engine.core.run_text import summary_lines  # lazy: `sluice --help` stays light

    with state.reading_store(fetch) as store:
        manifest = find_run(store, run_id)
        if as_json:
            click.echo(json_out(manifest.to_json()))
            return
        production = production_of(store, manifest.pipeline)
    lines = summary_lines(manifest)
    commit = f"commit {manifest.commit}" if manifest.commit else "no commit"
    dirty = " (plus uncommitted changes)" if manifest.dirty else ""
    lines.insert(
        1, f"  trigger {manifest.trigger.kind}, started {manifest.started_at}, {commit}{dirty}"
    )
    lines.insert(2, f"  params: {_pairs(manifest.params) or 'none'}")
    url = run_url(manifest.ci)
    if url:
        lines.insert(2, f"  CI run {url}")
    gone = engine_gone(manifest)
    if gone is not None:
        lines.insert(2, f"  {gone}: `sluice gc` closes the run as cancelled")
    if production is not None and production.run_id == run_id:
        lines.insert(
            2, f"  production of {manifest.pipeline} ({production.action} at {production.at})"
        )
    from engine.core.step_rows import shown_names  # lazy: as above

    for name in shown_names(manifest.steps):  # a large sweep's other instances: in --json
        rec = manifest.steps[name]
        if rec.metrics and rec.instance_of is None:  # an instance's: on its row
            lines.append(f"  {name} metrics: {_pairs(rec.metrics)}")
        for path, pointer in rec.outputs.items():
            lines.append(
                f"  {name} output {path}: {pointer.size} bytes sha256:{pointer.sha256[:12]}"
            )
        if rec.cached_from:
            lines.append(f"  {name} cached from {rec.cached_from}")
    # each line as one line: names with line breaks or escape sequences come out escaped
    click.echo("\n".join(shown(line) for line in lines))


def _pairs(values: Mapping[str, Any]) -> str:
    """`n_estimators=200, strict=true`: values as the pipeline file writes them."""
    from engine.core.suggest import literal  # lazy: `sluice --help` stays light

    return ", ".join(f"{key}={literal(value)}" for key, value in values.items())


@click.command(context_settings=CONTEXT)
@click.argument("run_id")
@click.argument("step")
@click.option("--attempt", type=click.IntRange(1, 1000), help="Attempt number (default: the last).")
@click.option(
    "--full",
    is_flag=True,
    help="The whole log from the artifact store, checked against its sha256 (the results "
    "branch keeps a long log's last 32 KiB).",
)
@_fetch
@click.pass_obj
def logs(
    state: State, run_id: str, step: str, attempt: int | None, full: bool, fetch: bool
) -> None:
    """Print a step's log from the results branch.

    The branch keeps a long log's last 32 KiB (it says so on stderr) and the whole log
    is in the artifact store: `--full` prints it. Inside GitHub Actions (stdout not a
    file) the log comes between ::stop-commands:: and its token, so what the step
    printed issues no workflow command.

    \b
    Examples:
      sluice logs 20261124T100000Z-a1b2c3 train
      sluice logs 20261124T100000Z-a1b2c3 train --attempt 1
      sluice logs 20261124T100000Z-a1b2c3 train --full > train.log
    """
    from engine.app.step_logs import full_log, step_log  # lazy: `sluice --help` stays light
    from engine.errors import NotFound  # lazy: as above

    with state.reading_store(fetch) as store:
        try:
            found = step_log(store, run_id, step, attempt, state.repo)
        except NotFound:
            _fanned_out(store, run_id, step, state)
            raise
    text = full_log(state.config, state.repo, found) if full else found.text
    _print_log(text)
    if found.local is not None:
        say(
            f"sluice: run {run_id} is not on the results branch yet (it records at its end): "
            f"this is {found.local.relative_to(state.repo)}, so far"
        )
    if found.is_tail and not full:
        from engine.local.disk import size_text  # lazy: as above

        whole = size_text(found.size or 0)
        how = (
            f"`sluice logs {run_id} {step} --attempt {found.attempt} --full` prints all of it "
            f"from the artifact store {found.full.store}"
            if found.full is not None
            else found.warning or "the run stored no whole copy of it"
        )
        say(f"sluice: the results branch keeps the end of this log ({whole} in all); {how}")


def _fanned_out(store: Any, run_id: str, step: str, state: State) -> None:
    """NotFound (exit 2) naming the instances, when `step` is a fanned-out step: it runs
    no container of its own, each instance has its log (names quoted for the shell)."""
    import shlex  # lazy: only for this message

    from engine.app.reading import find_run  # lazy: as above
    from engine.errors import NotFound  # lazy: as above

    record = find_run(store, run_id, state.repo).steps.get(step)
    if record is None or not record.instances:
        return
    names = [shlex.quote(printable(n)) for n in record.instances]
    more = f" (and {len(names) - 10} more: `sluice show {run_id}`)" if len(names) > 10 else ""
    raise NotFound(
        f"step {step!r} of run {run_id} is fanned out: it runs no container itself; each of "
        f"its {len(names)} instances has its own log, e.g. `sluice logs {run_id} {names[0]}`. "
        f"Instances: {' '.join(names[:10])}{more}"
    )


def _print_log(text: bytes) -> None:
    """The log on stdout; on a GitHub runner (stdout not a file) between `::stop-commands::T`
    and `::T::`, T a fresh random token, so no line of it is a workflow command."""
    sys.stdout.flush()
    out = sys.stdout.buffer
    try:
        to_file = stat.S_ISREG(os.fstat(out.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):  # not a real file descriptor (a test's buffer)
        to_file = False
    if os.environ.get("GITHUB_ACTIONS") != "true" or to_file:
        out.write(text)
        out.flush()
        return
    import secrets  # lazy: only on a GitHub runner (it loads random and hmac)

    token = secrets.token_hex(16)
    end = b"" if not text or text.endswith(b"\n") else b"\n"
    out.write(f"::stop-commands::{token}\n".encode() + text + end + f"::{token}::\n".encode())
    out.flush()
