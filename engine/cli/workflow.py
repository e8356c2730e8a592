"""`sluice workflow generate|check`: the GitHub workflow that runs the repository's pipelines."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from engine.cli.common import CONTEXT, EXIT_FAILED, State, exit_with, say

if TYPE_CHECKING:
    from engine.app.workflow import Wanted


_output = click.option(
    "-o",
    "--output",
    metavar="PATH",
    help="The workflow file (default: .github/workflows/sluice.yml in the repository).",
)
_uses = click.option(
    "--uses",
    metavar="REF",
    help="The Sluice Action, e.g. 'my-org/sluice@<commit>  # v1.2.0' (pinned, with its version "
    "as a comment) or ./ (default: what the file already uses, else a placeholder).",
)
_tick = click.option(
    "--tick",
    metavar="CRON",
    help="How often scheduled pipelines are ticked (default: */15 * * * *).",
)


@click.group("workflow", context_settings=CONTEXT)
def command() -> None:
    """Write, or check, the GitHub workflow that runs this repository's pipelines.

    \b
    The workflow starts on a push of a pipeline file or of a path a push trigger
    watches, on a schedule tick when a pipeline has a cron trigger, by hand
    (workflow_dispatch: pick a pipeline, give params), and on repository_dispatch
    of the pipelines' webhook events, sluice-run and sluice-drift; the job runs
    the Sluice Action, which runs what the event calls for.
    Generate it again whenever pipelines change; `check` in CI says when to.

    \b
    Examples:
      sluice workflow generate --uses my-org/sluice@v1
      sluice workflow check
    """


def _wanted(state: State, output: str | None, uses: str | None, tick: str | None) -> Wanted:
    from engine.app.workflow import Wanted  # lazy: `sluice --help` does not load pydantic

    return Wanted(state.repo, state.config, output, uses, tick)


@command.command("generate", context_settings=CONTEXT)
@_output
@_uses
@_tick
@click.pass_obj
def generate(state: State, output: str | None, uses: str | None, tick: str | None) -> None:
    """Write the workflow file (`-o -` prints it instead).

    \b
    Examples:
      sluice workflow generate
      sluice workflow generate --uses my-org/sluice@v1 -o - | less
    """
    from engine.app import workflow  # lazy: `sluice --help` does not load pydantic

    wanted = _wanted(state, None if output == "-" else output, uses, tick)
    path = None if output == "-" else wanted.path
    existing = (workflow.read(path) if path else None) or ""
    text = wanted.text(existing)
    if path is None:
        click.echo(text, nl=False)
        return
    if text == existing:
        say(f"sluice: {path} is up to date")
        return
    workflow.write(path, text)
    say(f"sluice: wrote {path}")


@command.command("check", context_settings=CONTEXT)
@_output
@_uses
@_tick
@click.pass_obj
def check(state: State, output: str | None, uses: str | None, tick: str | None) -> None:
    """Exit 1, printing a diff, when the workflow file is not what `generate` would write.

    \b
    Example (in CI):
      sluice workflow check || { echo 'run: sluice workflow generate'; exit 1; }
    """
    from engine.app import workflow  # lazy: `sluice --help` does not load pydantic

    wanted = _wanted(state, output, uses, tick)
    existing, shown = workflow.read(wanted.path), wanted.shown
    if existing is None:
        say(f"sluice: {shown} is missing; run `sluice workflow generate`")
        exit_with(EXIT_FAILED)
    changes = wanted.diff(existing)
    if changes:
        click.echo(changes, nl=False)
        say(f"sluice: {shown} is out of date; run `sluice workflow generate` and commit it")
        exit_with(EXIT_FAILED)
    say(f"sluice: {shown} is up to date")
