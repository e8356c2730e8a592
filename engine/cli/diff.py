"""`sluice diff RUN_A RUN_B`: what changed between two recorded runs."""

from __future__ import annotations

import click

from engine.cli.common import CONTEXT, State, echo_json, shown


@click.command(context_settings=CONTEXT)
@click.argument("run_a")
@click.argument("run_b")
@click.option("--json", "fmt", flag_value="json", help="Print the diff as JSON on stdout.")
@click.option("--md", "fmt", flag_value="md", help="Print the diff as markdown tables.")
@click.option("--fetch", is_flag=True, help="Fetch the results branch from the remote first.")
@click.pass_obj
def diff(state: State, run_a: str, run_b: str, fmt: str | None, fetch: bool) -> None:
    """Compare two runs: params, metrics (with deltas), steps and their cache sources,
    output digests that changed, and whether the pipeline file changed.

    Deltas read RUN_B - RUN_A. ▲/▼ is the sign; better or worse comes from the metric's
    preferred direction: the pipeline's `when` gates (`metrics.auc >= ...` means higher
    is better), or none, and then only the sign is shown.

    \b
    Examples:
      sluice diff 20261124T100000Z-a1b2c3 20261125T100000Z-d4e5f6
      sluice diff RUN_A RUN_B --md >> "$GITHUB_STEP_SUMMARY"
      sluice diff RUN_A RUN_B --json | jq '.metrics[] | select(.verdict == "worse")'
    """
    from engine.app.report import diff as diff_of  # lazy: `sluice --help` stays light
    from engine.core.diff_views import diff_markdown, diff_text  # lazy: as above

    with state.reading_store(fetch) as store:
        found = diff_of(store, run_a, run_b, state.pipeline)
    if fmt == "json":
        echo_json(found.to_dict())
    elif fmt == "md":
        click.echo(diff_markdown(found), nl=False)
    else:
        click.echo("\n".join(shown(line) for line in diff_text(found).split("\n")))
