"""`sluice report PIPELINE`: the metrics history as a table and a chart."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.common import CONTEXT, State, say
from engine.core.suggest import counted


@click.command(context_settings=CONTEXT)
@click.argument("pipeline")
@click.option(
    "--last", type=click.IntRange(1, 1000), default=20, show_default=True, help="How many runs."
)
@click.option("--md", "fmt", flag_value="md", default=True, help="Markdown (the default).")
@click.option("--html", "fmt", flag_value="html", help="One self-contained HTML page.")
@click.option("--metric", metavar="STEP.METRIC", help="The metric to chart (default: the gate's).")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE."
)
@click.option("--fetch", is_flag=True, help="Fetch the results branch from the remote first.")
@click.pass_obj
def report(
    state: State,
    pipeline: str,
    last: int,
    fmt: str,
    metric: str | None,
    output: Path | None,
    fetch: bool,
) -> None:
    """Show PIPELINE's metrics history as a table and a chart.

    Markdown has a mermaid chart (GitHub renders it) of the main metric: the first the
    deployment gate compares, else the first recorded. --html writes one page with inline
    SVG charts of every metric, no script and nothing fetched: publish it with GitHub Pages.

    \b
    Examples:
      sluice report retrain
      sluice report retrain --last 50 --html -o site/index.html
      sluice report retrain --metric evaluate.roc_auc >> "$GITHUB_STEP_SUMMARY"
    """
    from engine import __version__  # lazy: `sluice --help` stays light
    from engine.app.report import report as history_of  # lazy: as above
    from engine.core.report import report_html, report_markdown  # lazy: as above

    with state.reading_store(fetch) as store:
        history = history_of(store, pipeline, last, state.pipeline, metric)
    if fmt == "html":
        text = report_html(history, generator=f"sluice {__version__}")
    else:
        text = report_markdown(history)
    if output is None:
        click.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    say(f"sluice: wrote {output} ({counted(len(history.runs), 'run')} of {history.pipeline})")
