"""`sluice drift signals`: what drift signals did, read from the results branch."""

from __future__ import annotations

import click

from engine.cli.common import CONTEXT, State, echo_json, shown


@click.command("signals", context_settings=CONTEXT)
@click.option("--pipeline", metavar="NAME", help="Only signals for this bound pipeline.")
@click.option("--monitor", metavar="NAME", help="Only signals from this monitor.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--fetch", is_flag=True, help="Fetch the results branch from the remote first.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of records on stdout.")
@click.pass_obj
def command(
    state: State,
    pipeline: str | None,
    monitor: str | None,
    limit: int,
    fetch: bool,
    as_json: bool,
) -> None:
    """List drift signals, newest first: which started a run, which a cooldown suppressed.

    Every signal whose `when` held is recorded on the results branch, whether it came
    from a monitor run or a `sluice-drift` dispatch (docs/triggers.md).

    \b
    Examples:
      sluice drift signals
      sluice drift signals --pipeline churn-retrain --limit 5
      sluice drift signals --fetch --json | jq '.[] | select(.decision == "suppressed")'
    """
    from engine.app.drift_ledger import DriftLedger  # lazy: `sluice --help` skips pydantic

    with state.reading_store(fetch) as store:
        found = DriftLedger(store).signals(pipeline, monitor, limit)
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("sluice: no drift signals recorded", err=True)
        return
    click.echo(f"{'AT':<25} {'MONITOR -> PIPELINE':<40} {'DECISION':<11} DETAIL")
    for record in found:
        route = f"{record.get('monitor') or '?'} -> {record.get('pipeline') or '?'}"
        if record.get("decision") == "fired":
            detail = f"run {record.get('run_id') or '(none)'}"
        else:
            detail = f"until {record.get('cooldown_until') or '(no cooldown)'}"
        line = f"{record.get('at', ''):<25} {route:<40} {record.get('decision', ''):<11} {detail}"
        click.echo(shown(line))  # read from the results branch: one line, inert
