"""`sluice workflow generate|check`: the GitHub workflow that runs the repository's pipelines."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from engine.cli.common import CONTEXT, EXIT_FAILED, State, exit_with, say

if TYPE_CHECKING:
    from engine.app.workflow import Wanted


_output = click.option(
    "-o",
    "--output",
    metavar="PATH",
    help="The workflow file (default: .github/workflows/sluice.yml in the repository); "
    "with --jobs, the folder of the files (default: .github/workflows).",
)
_uses = click.option(
    "--uses",
    metavar="REF",
    help="The Sluice Action, e.g. 'my-org/sluice@<commit>  # v1.2.0' (pinned, with its version "
    "as a comment) or ./ (default: sluice.yaml's workflow.uses, else what the file already "
    "uses, else a placeholder).",
)
_image = click.option(
    "--image",
    metavar="REF",
    help="A published engine image pinned by digest, e.g. ghcr.io/my-org/sluice@sha256:<digest>: "
    "the engine step becomes `uses: docker://REF` (default: sluice.yaml's workflow.image).",
)
_tick = click.option(
    "--tick",
    metavar="CRON",
    help="How often scheduled pipelines are ticked (default: derived from the pipelines' "
    "cron triggers; docs/github-action.md says what each costs).",
)
_jobs = click.option(
    "--jobs/--single",
    "jobs",
    default=None,
    help="One workflow per pipeline, each step its own job (.github/workflows/sluice-NAME.yml), "
    "or one job for all (default: sluice.yaml's workflow.mode, else single).",
)


@click.group("workflow", context_settings=CONTEXT)
def command() -> None:
    """Write, or check, the GitHub workflows that run this repository's pipelines.

    \b
    The workflow starts on a push of a pipeline file or of a path a push trigger
    watches, on a schedule tick when a pipeline has a cron trigger, by hand
    (workflow_dispatch: pick a pipeline, give params), and on repository_dispatch
    of the pipelines' webhook events, sluice-run and sluice-drift; the job runs
    the Sluice Action, which runs what the event calls for.
    With --jobs (or sluice.yaml `workflow: {mode: jobs}`), each pipeline gets its
    own workflow, and each step its own job on the runner its `runs_on` names.
    Generate again whenever pipelines change; `check` in CI says when to.

    \b
    Examples:
      sluice workflow generate --uses 'my-org/sluice@<commit>  # v1.2.0'
      sluice workflow generate --jobs
      sluice workflow check
    """


def _options(function: Callable[..., None]) -> Callable[..., None]:
    """The options `generate` and `check` share, which say what the files should be."""
    for option in (_jobs, _tick, _image, _uses, _output):
        function = option(function)
    return function


def _wanted(state: State, output: str | None, **given: Any) -> Wanted:
    from engine.app.workflow import Wanted  # lazy: `sluice --help` does not load pydantic

    return Wanted(state.repo, state.config, output, **given)


@command.command("generate", context_settings=CONTEXT)
@_options
@click.pass_obj
def generate(state: State, /, output: str | None, **given: Any) -> None:
    """Write the workflow files (`-o -` prints them instead); remove generated files that
    no pipeline or mode calls for any more.

    \b
    Examples:
      sluice workflow generate
      sluice workflow generate --jobs --image 'ghcr.io/my-org/sluice@sha256:<digest>'
      sluice workflow generate --uses my-org/sluice@v1 -o - | less
    """
    from engine.app import workflow  # lazy: `sluice --help` does not load pydantic

    to_stdout = output == "-"
    files = _wanted(state, None if to_stdout else output, **given).files()
    if to_stdout:
        printed = [f for f in files if f.wanted is not None]
        for file in printed:
            if len(printed) > 1:
                click.echo(f"# --- {file.shown}")
            click.echo(file.wanted, nl=False)
        return
    for file in files:
        if file.wanted is None:
            workflow.remove(file.path)
            say(f"sluice: removed {file.shown}: {file.why_stale}")
        elif file.current:
            say(f"sluice: {file.shown} is up to date")
        else:
            workflow.write(file.path, file.wanted)
            say(f"sluice: wrote {file.shown}")


@command.command("check", context_settings=CONTEXT)
@_options
@click.pass_obj
def check(state: State, /, output: str | None, **given: Any) -> None:
    """Exit 1, printing a diff, when a workflow file is not what `generate` would write
    (missing, out of date, or generated for a pipeline or mode that is gone).

    \b
    Example (in CI):
      sluice workflow check || { echo 'run: sluice workflow generate'; exit 1; }
    """
    failed = False
    for file in _wanted(state, output, **given).files():
        if file.existing is None:
            say(f"sluice: {file.shown} is missing; run `sluice workflow generate`")
        elif file.wanted is None:
            say(
                f"sluice: {file.shown} is stale ({file.why_stale}); "
                "run `sluice workflow generate` (it removes it) or delete it"
            )
        elif not file.current:
            click.echo(file.diff(), nl=False)
            say(
                f"sluice: {file.shown} is out of date; run `sluice workflow generate` and commit it"
            )
        else:
            say(f"sluice: {file.shown} is up to date")
            continue
        failed = True
    if failed:
        exit_with(EXIT_FAILED)
