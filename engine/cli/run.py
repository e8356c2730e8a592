"""`sluice run`, `retry`, `approve`, `reject`: start a run (or continue one) here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import click

from engine.cli.common import (
    CONTEXT,
    EXIT_FAILED,
    EXIT_OK,
    State,
    echo_json,
    exit_with,
    install_signal_handlers,
    json_out,
    push_option,
    runs_exit_code,
    say,
)

if TYPE_CHECKING:
    from engine.app.runs import Place
    from engine.core.manifest import RunManifest
    from engine.run.executor import Executor


def _place(state: State, push: bool | None, quiet: bool = False) -> Place:
    from engine.app.runs import Place  # lazy: `sluice --help` does not load pydantic

    return Place(state.repo, state.config, push, say, quiet)


QUIET_HELP = "Do not echo step logs (they are still recorded)."
quiet_option = click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)


def _on_executor(executor: Executor) -> None:
    install_signal_handlers(executor.cancel)


def _finish(manifests: list[RunManifest], as_json: bool) -> int:
    """Print the requested run's manifest (`--json`); the exit code the worst run decides."""
    from engine.app.runs import outcome, report_errors  # lazy: `sluice --help` stays light

    if as_json:
        click.echo(json_out(manifests[0].to_json()))
    report_errors(manifests, say)
    return runs_exit_code(outcome(m) for m in manifests)


@click.command(context_settings=CONTEXT)
@click.argument("pipeline")
@click.option(
    "-p",
    "--param",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a param (repeatable); a list param takes comma-separated items or a JSON array.",
)
@click.option("--params-json", metavar="JSON", help="Override params from a JSON object.")
@click.option("--no-cache", is_flag=True, help="Run every step even when a cached result exists.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Say which steps would be cached and why the others miss; run nothing.",
)
@click.option(
    "--max-parallel",
    type=click.IntRange(1, 256),
    help="Steps running at once (default: CPU count).",
)
@push_option
@click.option("--json", "as_json", is_flag=True, help="Print the run manifest as JSON on stdout.")
@quiet_option
@click.pass_obj
def run(
    state: State,
    pipeline: str,
    pairs: tuple[str, ...],
    params_json: str | None,
    no_cache: bool,
    dry_run: bool,
    max_parallel: int | None,
    push: bool | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Run a pipeline now: every step in its own container.

    \b
    Progress goes to stderr (a live table on a terminal, plain lines elsewhere);
    step logs are prefixed with the step name. The run is recorded on the results
    branch (runs/<pipeline>/<run-id>/: manifest.json and logs), pushed when the
    remote exists, and kept locally under .sluice/runs/<run-id>/. Steps whose
    inputs are unchanged are taken from the cache (status `cached`).
    Exits 0 when the run succeeded (or waits for approval), 1 when it failed,
    2 on invalid input, 3 when the engine could not finish its work (Docker, git
    or the artifact store unreachable, or the run's record not pushed: it stays
    committed locally and the next run pushes it), 130 when interrupted (its
    containers are removed first).

    \b
    Examples:
      sluice run churn-retrain
      sluice run churn-retrain -p n_estimators=200 -p min_accuracy=0.95
      sluice run churn-retrain --dry-run
      sluice run pipelines/churn.yaml --params-json '{"n_estimators": 50}' --json
    """
    from engine.app import runs  # lazy: `sluice --help` does not load pydantic
    from engine.core.manifest import Trigger  # lazy: as above

    place = _place(state, push, quiet)
    loaded = place.pipeline(pipeline)
    given = runs.params(loaded, pairs, params_json)
    trigger = Trigger(kind="manual")
    options = runs.options(place, loaded, params=given, trigger=trigger, max_parallel=max_parallel)
    options.use_cache = not no_cache
    if not dry_run:
        manifests = runs.launch(place, loaded, options, on_executor=_on_executor)
        exit_with(_finish(manifests, as_json))
    verdicts = runs.explain(place, loaded, options)
    if as_json:
        echo_json([{"step": n, "cached": c, "reason": why} for n, c, why in verdicts])
        return
    width = max(len(n) for n, _, _ in verdicts)
    for name, cached, why in verdicts:
        click.echo(f"{name:<{width}}  {'cached' if cached else 'runs  '}  {why}")
    say("(when conditions and approvals are decided during the run)")


@click.command(context_settings=CONTEXT)
@click.argument("run_id")
@click.option("--max-parallel", type=click.IntRange(1, 256), help="Steps running at once.")
@push_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print the new run's manifest as JSON on stdout."
)
@quiet_option
@click.pass_obj
def retry(
    state: State,
    run_id: str,
    max_parallel: int | None,
    push: bool | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Start a new run that reuses RUN_ID's succeeded steps and runs the rest.

    Works after a failure, a cancellation, or an engine that died mid-run. Reused
    outputs are re-verified (sha256) first; checkpoints of failed steps carry over.

    \b
    Example:
      sluice retry 20261124T100000Z-a1b2c3
    """
    from engine.app import runs  # lazy: `sluice --help` does not load pydantic

    place = _place(state, push, quiet)
    manifests = runs.retry(place, run_id, max_parallel=max_parallel, on_executor=_on_executor)
    exit_with(_finish(manifests, as_json))


def _decision(decision: Literal["approve", "reject"], who: str, doc: str) -> click.Command:
    """`sluice approve` or `sluice reject`: continue a paused run with the decision."""

    @click.command(decision, context_settings=CONTEXT, help=doc)
    @click.argument("run_id")
    @click.option("--by", metavar="NAME", help=f"Who {who} (default: $GITHUB_ACTOR, else $USER).")
    @push_option
    @click.option(
        "--json", "as_json", is_flag=True, help="Print the run's manifest as JSON on stdout."
    )
    @quiet_option
    @click.pass_obj
    def command(
        state: State, run_id: str, by: str | None, push: bool | None, as_json: bool, quiet: bool
    ) -> None:
        from engine.app import runs  # lazy: `sluice --help` does not load pydantic

        place = _place(state, push, quiet)
        manifests = runs.decide(place, run_id, decision, by, on_executor=_on_executor)
        code = _finish(manifests, as_json)
        if decision == "approve" or code not in (EXIT_OK, EXIT_FAILED):
            exit_with(code)
        say(f"sluice: run {run_id} rejected")  # failed is what a rejection means: exit 0

    return command


approve = _decision(
    "approve",
    "approves",
    """Approve a paused run and continue it here; finished steps are not run again.

    \b
    Example:
      sluice approve 20261124T100000Z-a1b2c3 --by alice
    """,
)
reject = _decision(
    "reject",
    "rejects",
    """Reject a paused run: it ends as failed (its finally steps still run); exits 0.

    \b
    Example:
      sluice reject 20261124T100000Z-a1b2c3 --by alice
    """,
)
