"""The `sluice` command group: lists the commands (each imported only when it runs) and maps
errors to exit codes."""

from __future__ import annotations

import gc
import importlib
import os
import sys
from typing import NoReturn

import click

from engine import __version__

# name -> (module, attribute, first paragraph of its help). `sluice --help` lists commands
# from this table; a command's module (and everything it imports) loads only when it is the
# one invoked. tests/test_cli_startup.py holds the table to the commands themselves.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "validate": (
        "pipelines",
        "validate",
        "Check pipeline files; print every problem as file:line: message.",
    ),
    "graph": ("pipelines", "graph", "Print a pipeline's DAG by level."),
    "schema": ("pipelines", "schema", "Print the JSON Schema of pipeline files (for editors)."),
    "run": ("run", "run", "Run a pipeline now: every step in its own container."),
    "runs": ("runs", "runs", "List recorded runs, newest first, from the results branch."),
    "show": ("runs", "show", "Show one run: its steps, attempts, metrics and outputs."),
    "logs": ("runs", "logs", "Print a step's log from the results branch."),
    "diff": (
        "diff",
        "diff",
        "Compare two runs: params, metrics (with deltas), steps and their cache sources, "
        "output digests that changed, and whether the pipeline file changed.",
    ),
    "report": ("report", "report", "Show PIPELINE's metrics history as a table and a chart."),
    "outputs": (
        "outputs",
        "outputs",
        "Copy a step's outputs from the artifact store, each checked against its sha256.",
    ),
    "retry": (
        "run",
        "retry",
        "Start a new run that reuses RUN_ID's succeeded steps and runs the rest.",
    ),
    "approve": (
        "run",
        "approve",
        "Approve a paused run and continue it here; finished steps are not run again.",
    ),
    "reject": (
        "run",
        "reject",
        "Reject a paused run: it ends as failed (its finally steps still run); exits 0.",
    ),
    "plan": (
        "jobs",
        "plan",
        "Make the run a GitHub event calls for of PIPELINE, without running a step.",
    ),
    "step": ("jobs", "step", "Run one STEP of a planned run here, and record it."),
    "finish": ("jobs", "finish", "Run the finally steps of a planned run, and settle it."),
    "gc": (
        "gc",
        "gc",
        "Remove containers left behind by an engine that was killed outright.",
    ),
    "trigger": (
        "trigger",
        "command",
        "Run the pipelines a GitHub event calls for, one after another.",
    ),
    "tick": (
        "tick",
        "command",
        "Run the cron slots that are due: each slot once, however many runners tick.",
    ),
    "dispatch": (
        "dispatch",
        "command",
        "Send a repository_dispatch event (what a drift monitor outside GitHub calls).",
    ),
    "serve": (
        "serve",
        "command",
        "Receive signed webhooks and run the pipelines that listen to them.",
    ),
    "workflow": (
        "workflow",
        "command",
        "Write, or check, the GitHub workflows that run this repository's pipelines.",
    ),
    "drift": (
        "drift",
        "command",
        "Measure data drift; the metrics it writes can start retraining.",
    ),
    "promote": (
        "production",
        "promote",
        "Make RUN_ID the production run of its pipeline: the baseline of its next runs.",
    ),
    "rollback": (
        "production",
        "rollback",
        "Re-point PIPELINE's production to the run that was production before the current one.",
    ),
}

# engine.cli.common's, spelt here so that `sluice --help` need not load common (a test keeps
# them equal).
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
EXIT_OK, EXIT_INVALID, EXIT_INTERRUPTED = 0, 2, 130
GC_THRESHOLD = 100_000  # allocations between two youngest-generation collections (default 700)


class LazyGroup(click.Group):
    """A group whose commands are imported when invoked (or asked for by name)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attribute, _ = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(f"engine.cli.{module}"), attribute)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of `--help`, as click lays it out, without importing a command."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:  # a stand-in Command shortens the help as the real one would
            command = self.commands.get(name) or click.Command(name, help=COMMANDS[name][2])
            rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
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
    # lazy: State and its helpers load with the command, not for `sluice --help`
    from engine.cli.common import STORE_COMMANDS, State, warn_ephemeral_store

    ctx.obj = State(repo, config)
    if ctx.invoked_subcommand in STORE_COMMANDS:
        warn_ephemeral_store(ctx.obj)


def main(argv: list[str] | None = None) -> NoReturn:
    """Console entry point: never shows a traceback for an error the engine expects."""
    tune_process()
    code = _run(argv)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def tune_process() -> None:
    """Process-wide settings of every `sluice` command (bench_cached_run.py calls it too)."""
    # A command's imports keep some 40,000 new objects (pydantic's schemas above all): at
    # the default threshold the cycle collector would run ~80 times during them, and again
    # over all of them at the end, 15-30 ms of a cached re-run. Cycles are still collected
    # for the rest of the process, in larger batches.
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    # The engine's models are its own: pydantic need not read every installed package's
    # entry points looking for plugins (4-9 ms here, more in a large environment), unless
    # the user asks for them by setting the variable.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def _run(argv: list[str] | None) -> object:
    """The command's exit code (or None for 0), having shown any error the engine expects."""
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
    except KeyboardInterrupt:
        click.echo("sluice: interrupted", err=True)
        code = EXIT_INTERRUPTED
    except Exception as exc:
        found = _engine_error(exc)
        if found is None:
            raise
        code = found
    return code


def _engine_error(exc: Exception) -> int | None:
    """The exit code of an error the engine expects, having shown it; None for any other."""
    from engine.cli.common import annotate, say  # lazy: loaded when something went wrong
    from engine.core.printable import printable  # lazy: ditto
    from engine.errors import PipelineInvalid, SluiceError  # lazy: ditto

    if isinstance(exc, PipelineInvalid):
        for problem in exc.problems:
            say(printable(str(problem)))
        annotate(exc.problems)
        return exc.exit_code
    if isinstance(exc, SluiceError):  # EngineUnavailable: exit 3
        say(f"sluice: error: {exc}")
        return exc.exit_code
    return None
