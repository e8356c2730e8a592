"""`sluice gc`: remove containers an engine killed outright left behind."""

from __future__ import annotations

import click

from engine.cli.common import CONTEXT, say


@click.command(context_settings=CONTEXT)
@click.option(
    "--all", "everything", is_flag=True, help="Remove every Sluice container, running or not."
)
def gc(everything: bool) -> None:
    """Remove containers left behind by an engine that was killed outright.

    \b
    Without --all: stopped Sluice containers, and running ones whose engine
    process (on this host) is gone.

    \b
    Example:
      sluice gc
    """
    from engine.app import compose  # lazy: docker and pydantic, only when gc runs

    removed = compose.docker_runtime().gc(everything=everything)
    for name in removed:
        click.echo(name)
    say(f"sluice: removed {len(removed)} container(s)")
