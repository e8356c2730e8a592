"""`sluice workflow generate|check`: the GitHub workflow that runs the repository's pipelines."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from engine.cli.common import CONTEXT, EXIT_FAILED, State, exit_with

if TYPE_CHECKING:
    from engine.core.gh_workflow import WorkflowOptions


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


def _target(state: State, output: str | None) -> Path:
    from engine.core.gh_workflow import DEFAULT_PATH

    return Path(output) if output else state.repo / DEFAULT_PATH


def _wanted(state: State, existing: str, uses: str | None, tick: str | None) -> str:
    """The workflow as `generate` writes it, keeping the existing file's `uses:` lines."""
    from engine.adapters.pipeline_files import display_path, find_pipeline_files, load_many
    from engine.core.gh_workflow import WorkflowOptions, keep_uses, render
    from engine.errors import UsageError

    files = find_pipeline_files(state.pipelines_dir)
    loaded = load_many(files, state.repo)  # PipelineInvalid: problems listed, exit 2
    if not loaded:
        folder = display_path(state.pipelines_dir, state.repo)
        raise UsageError(f"no pipelines in {folder}: there is nothing for a workflow to run")
    options = WorkflowOptions(
        pipelines_folder=display_path(state.pipelines_dir, state.repo),
        results_branch=state.config.results.branch,
    )
    options = keep_uses(options, existing)
    options = _override(options, uses, tick)
    return render([(p.file, p.pipeline) for p in loaded], options)


def _override(options: WorkflowOptions, uses: str | None, tick: str | None) -> WorkflowOptions:
    from dataclasses import replace

    from croniter import croniter

    from engine.core.gh_workflow import parse_uses
    from engine.errors import UsageError

    if uses is not None:
        parsed = parse_uses(uses)
        if parsed is None:
            raise UsageError(
                f"--uses {uses!r}: give OWNER/REPO@REF, e.g. 'my-org/sluice@<commit>  # v1.2.0'"
            )
        options = replace(options, action=parsed[0], action_comment=parsed[1])
    if tick is not None:
        if len(tick.split()) != 5 or not croniter.is_valid(tick):
            raise UsageError(f"--tick {tick!r} is not a 5-field cron expression")
        options = replace(options, tick=" ".join(tick.split()))
    return options


def _read(path: Path) -> str | None:
    try:
        return path.read_text("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        from engine.errors import UsageError

        raise UsageError(f"{path}: cannot read: {exc}") from None


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
    path = None if output == "-" else _target(state, output)
    existing = (_read(path) if path else None) or ""
    text = _wanted(state, existing, uses, tick)
    if path is None:
        click.echo(text, nl=False)
        return
    if text == existing:
        click.echo(f"sluice: {path} is up to date", err=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    click.echo(f"sluice: wrote {path}", err=True)


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
    from engine.adapters.pipeline_files import display_path
    from engine.core.gh_workflow import diff

    path = _target(state, output)
    existing = _read(path)
    shown = display_path(path, state.repo)
    if existing is None:
        click.echo(f"sluice: {shown} is missing; run `sluice workflow generate`", err=True)
        exit_with(EXIT_FAILED)
    changes = diff(existing, _wanted(state, existing, uses, tick), shown)
    if changes:
        click.echo(changes, nl=False)
        click.echo(
            f"sluice: {shown} is out of date; run `sluice workflow generate` and commit it",
            err=True,
        )
        exit_with(EXIT_FAILED)
    click.echo(f"sluice: {shown} is up to date", err=True)
