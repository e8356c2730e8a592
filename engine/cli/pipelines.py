"""`sluice validate`, `sluice graph`, `sluice schema`: pipeline files, without running them."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.common import CONTEXT, State, echo_json, problems_exit, say
from engine.core.suggest import counted


@click.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON list of {file, line, message} on stdout."
)
@click.pass_obj
def validate(state: State, paths: tuple[str, ...], as_json: bool) -> None:
    """Check pipeline files; print every problem as file:line: message.

    \b
    PATH is a pipeline file or a folder searched recursively for *.yaml / *.yml
    (default: the pipelines folder of sluice.yaml, else pipelines/).
    Exits 0 when every file is valid, 2 otherwise.

    \b
    Examples:
      sluice validate
      sluice validate pipelines/train.yaml --json
    """
    from engine.app import pipelines  # lazy: `sluice --help` does not load pydantic

    targets = [Path(p) for p in paths] or [state.pipelines_dir]
    loaded, problems = pipelines.validate(state.repo, targets)
    if as_json:
        echo_json([p.as_dict() for p in problems])
    if problems:
        problems_exit(problems, "")
    say(f"sluice: {counted(len(loaded), 'pipeline')} valid")


@click.command(context_settings=CONTEXT)
@click.argument("pipeline")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "mermaid", "dot", "json"]),
    default="text",
    show_default=True,
)
@click.option(
    "--expand",
    "expand_steps",
    is_flag=True,
    help="Draw each instance of a fanned-out step (matrix/foreach).",
)
@click.option(
    "-p",
    "--param",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Count instances for this param value instead of its default (repeatable); a list "
    "param takes comma-separated items or a JSON array.",
)
@click.pass_obj
def graph(
    state: State, pipeline: str, fmt: str, expand_steps: bool, pairs: tuple[str, ...]
) -> None:
    """Print a pipeline's DAG by level.

    \b
    PIPELINE is a pipeline name or the path of its file.
    A fanned-out step is one node with its instance count (for the pipeline's
    default params, or those given with -p); --expand draws its instances, in a
    box of their own.

    \b
    Examples:
      sluice graph churn-retrain
      sluice graph pipelines/churn.yaml --format mermaid
      sluice graph churn-retrain --format dot | dot -Tsvg > dag.svg
      sluice graph churn-retrain --expand -p regions=eu,us,ap
    """
    from engine.app import pipelines  # lazy: `sluice --help` does not load pydantic
    from engine.app.runs import params  # lazy: as above

    loaded = state.pipeline(pipeline)
    given = params(loaded, pairs, None) if pairs else None
    drawn = pipelines.graph(loaded, fmt, expand_steps=expand_steps, params=given)
    click.echo(drawn, nl=False)


@click.command(context_settings=CONTEXT)
def schema() -> None:
    """Print the JSON Schema of pipeline files (for editors).

    \b
    Example:
      sluice schema > .sluice-schema.json
      # then, first line of a pipeline file:
      # yaml-language-server: $schema=../.sluice-schema.json
    """
    from engine.app import pipelines  # lazy: `sluice --help` does not load pydantic

    echo_json(pipelines.schema())
