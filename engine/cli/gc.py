"""`sluice gc`: remove containers an engine killed outright left behind; with `--runs`,
old runs' local data and the artifacts no kept run uses."""

from __future__ import annotations

import click

from engine.cli.common import CONTEXT, State, echo_json, say
from engine.core.suggest import counted


@click.command(context_settings=CONTEXT)
@click.option(
    "--all", "everything", is_flag=True, help="Remove every Sluice container, running or not."
)
@click.option(
    "--runs",
    is_flag=True,
    help="Instead: remove old runs' local data and unreferenced artifacts (retention rules).",
)
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="With --runs: runs kept per pipeline, newest first (production's are always kept).",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=86_400,
    show_default=True,
    metavar="SECONDS",
    help="With --runs: artifacts younger than this are kept (a run on another machine records "
    "its outputs when it ends; a day outlasts a GitHub-hosted job's 6 hours).",
)
@click.option("--dry-run", is_flag=True, help="With --runs: list what would go; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --runs: print what went as JSON.")
@click.pass_obj
def gc(
    state: State,
    everything: bool,
    runs: bool,
    keep: int,
    grace: float,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Remove containers left behind by an engine that was killed outright.

    \b
    Without --all: stopped Sluice containers, and running ones whose engine
    process (on this host) is gone. Then runs still `running` whose engine is
    provably gone (this host: its pid, boot id and start time; another host:
    nothing recorded for 7 days) are recorded as `cancelled`, with the reason;
    `sluice retry` reuses their finished steps.

    \b
    With --runs: keep, per pipeline, the newest --keep runs, every run production
    names (current, lineage, history: what rollback needs), and unfinished runs;
    remove the other runs' folders under .sluice/runs/ and every artifact no kept
    run (or cache entry a kept run names) points to. The results branch is never
    rewritten: manifests and logs stay. Without a reachable remote, nothing goes.

    \b
    Examples:
      sluice gc
      sluice gc --runs --keep 5 --dry-run
    """
    _check_options(runs, everything)
    if runs:
        _runs(state, keep, grace, dry_run, as_json)
        return
    from engine.app import compose  # lazy: docker and pydantic, only when gc runs

    removed = compose.docker_runtime().gc(everything=everything)
    for name in removed:
        click.echo(name)
    say(f"sluice: removed {counted(len(removed), 'container')}")
    _orphaned_runs(state)


def _orphaned_runs(state: State) -> None:
    """Record as `cancelled` the `running` runs whose engine is provably gone."""
    from engine.app.orphans import close_orphans  # lazy: pydantic and git, only when gc runs

    closed = close_orphans(state.repo, state.config, log=say)
    say(f"sluice: closed {counted(len(closed), 'run')} whose engine is gone")


def _check_options(runs: bool, everything: bool) -> None:
    """--keep, --grace and --dry-run mean something only with --runs; --all never does."""
    context = click.get_current_context()
    given = [
        f"--{name.replace('_', '-')}"
        for name in ("keep", "grace", "dry_run")
        if context.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
    ]
    if given and not runs:
        raise click.UsageError(f"{', '.join(given)}: only with --runs")
    if runs and everything:
        raise click.UsageError("--all removes containers: it does not go with --runs")


def _runs(state: State, keep: int, grace: float, dry_run: bool, as_json: bool) -> None:
    from engine.app import gc as retention  # lazy: pydantic and fsspec, only when gc runs

    done = retention.collect(state.repo, state.config, keep=keep, grace=grace, dry_run=dry_run)
    if as_json:
        echo_json(done.to_dict())
        return
    verb = "would remove" if dry_run else "removed"
    for run in done.runs:
        what = "run" if run["whole"] else "snapshot and local copies of run"
        click.echo(f"{what} {run['run_id']} ({run['pipeline']}): {run['bytes']} bytes")
    for obj in done.artifacts:
        click.echo(f"artifact {obj['sha256'][:12]}: {obj['bytes']} bytes")
    say(
        f"sluice: {verb} {counted(sum(r['whole'] for r in done.runs), 'run folder')} and "
        f"{counted(len(done.artifacts), 'artifact')}, {counted(done.bytes_freed, 'byte')}; "
        f"kept {counted(len(done.kept_runs), 'run')} and {counted(done.kept_artifacts, 'artifact')}"
    )
