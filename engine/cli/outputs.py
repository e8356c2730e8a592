"""`sluice outputs`: a step's recorded outputs, fetched from the artifact store."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.common import CONTEXT, State, echo_json, say, shown


@click.command(context_settings=CONTEXT)
@click.argument("run_id")
@click.argument("step")
@click.option(
    "--to",
    "dest",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to copy them into (default: ./outputs/STEP; with --json: none, only listed).",
)
@click.option("--fetch", is_flag=True, help="Fetch the results branch from the remote first.")
@click.option("--json", "as_json", is_flag=True, help="List them as JSON on stdout.")
@click.pass_obj
def outputs(
    state: State, run_id: str, step: str, dest: Path | None, fetch: bool, as_json: bool
) -> None:
    """Copy a step's outputs from the artifact store, each checked against its sha256.

    Works from any clone configured with the store the run used (`artifacts:` in
    sluice.yaml): the manifest names each output by store and content key. Exit 2, nothing
    written, when some are not in the store.

    \b
    Examples:
      sluice outputs 20261124T100000Z-a1b2c3 train            # into ./outputs/train
      sluice outputs 20261124T100000Z-a1b2c3 train --to model/
      sluice outputs 20261124T100000Z-a1b2c3 train --json     # list only
    """
    from engine.app import runs as app  # lazy: `sluice --help` does not load pydantic

    if dest is None and not as_json:
        dest = Path("outputs") / step
    with state.reading_store(fetch) as store:
        found = app.outputs(
            app.Place(state.repo, state.config, False, say), store, run_id, step, dest
        )
    if as_json:
        listed = [
            {"path": rel, **pointer.model_dump(mode="json")} for rel, pointer in found.items()
        ]
        echo_json({"run_id": run_id, "step": step, "to": dest and str(dest), "outputs": listed})
        return
    assert dest is not None
    for rel, pointer in found.items():
        click.echo(shown(f"{dest / rel}  {pointer.size} bytes  sha256 {pointer.sha256[:12]}"))
