"""`sluice promote` and `sluice rollback`: re-point a pipeline's production run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from engine.cli.common import CONTEXT, State, echo_json, push_option, shown

if TYPE_CHECKING:
    from engine.core.production import Production

_BY = "Who does it (default: $GITHUB_ACTOR, else git's user.name, else the OS user)."
_JSON = "Print {pipeline, changed, previous, production, entry} as JSON on stdout."


@click.command("promote", context_settings=CONTEXT)
@click.argument("run_id")
@click.option("--by", metavar="NAME", help=_BY)
@push_option
@click.option("--json", "as_json", is_flag=True, help=_JSON)
@click.pass_obj
def promote(state: State, run_id: str, by: str | None, push: bool | None, as_json: bool) -> None:
    """Make RUN_ID the production run of its pipeline: the baseline of its next runs.

    \b
    The run's baseline step (`baseline: {step: ...}` in its pipeline) must have
    succeeded in it. Recorded on the results branch (who, when, the run it replaces);
    promoting the run that already is production records nothing.
    Exits 0 once recorded, 2 when the run cannot be promoted (the message says why).

    \b
    Examples:
      sluice promote 20261124T100000Z-a1b2c3
      sluice promote 20261124T100000Z-a1b2c3 --by alice --json
    """
    from engine.app import production  # lazy: `sluice --help` does not load pydantic

    _report(*production.promote(state.repo, state.config, run_id, by, push), as_json)


@click.command("rollback", context_settings=CONTEXT)
@click.argument("pipeline")
@click.option(
    "--to", "to", metavar="RUN_ID", help="Re-point to this run (checked as `promote` checks)."
)
@click.option("--by", metavar="NAME", help=_BY)
@push_option
@click.option("--json", "as_json", is_flag=True, help=_JSON)
@click.pass_obj
def rollback(
    state: State, pipeline: str, to: str | None, by: str | None, push: bool | None, as_json: bool
) -> None:
    """Re-point PIPELINE's production to the run that was production before the current one.

    \b
    Each rollback goes one step further back: runs rolled back from are left out,
    so two rollbacks in a row undo the last two deploys or promotions. With --to,
    production goes to that run instead. Recorded on the results branch.
    Exits 0 once recorded, 2 when there is nothing earlier (or --to cannot be used).

    \b
    Examples:
      sluice rollback churn-retrain
      sluice rollback churn-retrain --to 20261124T100000Z-a1b2c3 --by alice
    """
    from engine.app import production  # lazy: `sluice --help` does not load pydantic

    _report(*production.rollback(state.repo, state.config, pipeline, to, by, push), as_json)


def _report(
    pipeline: str, before: Production | None, after: Production | None, as_json: bool
) -> None:
    changed = after is not before
    old = before.run_id if before else None
    new = after.run_id if after else None
    if as_json:
        entry = after.entry().model_dump() if changed and after else None
        echo_json(
            {
                "pipeline": pipeline,
                "changed": changed,
                "previous": old,
                "production": new,
                "entry": entry,
            }
        )
        return
    if not changed or after is None:
        click.echo(
            shown(f"{pipeline}: production stays {new} (already production; nothing recorded)")
        )
        return
    click.echo(shown(f"{pipeline}: production {old or '(none)'} -> {new}"))
    # who and when, as recorded on the branch: untrusted text, shown on one line
    click.echo(
        shown(f"  {after.action} #{after.seq} by {after.by} at {after.at} (step {after.step})")
    )
