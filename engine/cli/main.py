"""The `sluice` command group: registers the commands and maps errors to exit codes."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from engine import __version__
from engine.cli import (
    dispatch,
    drift,
    gc,
    jobs,
    outputs,
    pipelines,
    production,
    run,
    runs,
    serve,
    tick,
    trigger,
    workflow,
)
from engine.cli.common import (
    CONTEXT,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    STORE_COMMANDS,
    State,
    annotate,
    say,
    warn_ephemeral_store,
)
from engine.core.printable import printable
from engine.errors import PipelineInvalid, SluiceError


@click.group(
    context_settings=CONTEXT,
    epilog="""\b
Examples:
  sluice validate                       check every pipeline under pipelines/
  sluice graph churn-retrain --format mermaid
  sluice run churn-retrain -p n_estimators=200
  sluice run pipelines/nightly.yaml --json > manifest.json

Exit codes: 0 success, 1 a run failed, 2 invalid input or usage,
3 the engine could not run (Docker, git or the artifact store unreachable), 130 interrupted.
Docs: docs/pipeline-format.md, docs/cli.md""",
)
@click.option(
    "--repo",
    metavar="DIR",
    help="Repository root (default: the git top level of the current folder).",
)
@click.option(
    "--config", metavar="FILE", help="Settings file (default: sluice.yaml at the repository root)."
)
@click.version_option(__version__, prog_name="sluice")
@click.pass_context
def cli(ctx: click.Context, repo: str | None, config: str | None) -> None:
    """Sluice: pipelines as code; every step in its own container, every run recorded."""
    ctx.obj = State(repo, config)
    if ctx.invoked_subcommand in STORE_COMMANDS:
        warn_ephemeral_store(ctx.obj)


for _command in (
    pipelines.validate,
    pipelines.graph,
    pipelines.schema,
    run.run,
    runs.runs,
    runs.show,
    runs.logs,
    outputs.outputs,
    run.retry,
    run.approve,
    run.reject,
    jobs.plan,
    jobs.step,
    jobs.finish,
    gc.gc,
    trigger.command,
    tick.command,
    dispatch.command,
    serve.command,
    workflow.command,
    drift.command,
    production.promote,
    production.rollback,
):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> NoReturn:
    """Console entry point: never shows a traceback for an error the engine expects."""
    try:
        code = cli.main(args=argv, prog_name="sluice", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        click.echo("sluice: interrupted", err=True)
        code = EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        code = EXIT_INVALID if isinstance(exc, click.UsageError) else exc.exit_code
    except PipelineInvalid as exc:
        for problem in exc.problems:
            say(printable(str(problem)))
        annotate(exc.problems)
        code = exc.exit_code
    except SluiceError as exc:  # EngineUnavailable: exit 3
        say(f"sluice: error: {exc}")
        code = exc.exit_code
    except KeyboardInterrupt:
        click.echo("sluice: interrupted", err=True)
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else EXIT_OK)
