"""`sluice dispatch`: send a repository_dispatch event to a GitHub repository."""

from __future__ import annotations

import os

import click

from engine.errors import UsageError


@click.command("dispatch")
@click.argument("repository", metavar="OWNER/NAME")
@click.option(
    "--event-type", required=True, metavar="T", help="The event type (1 to 100 characters)."
)
@click.option(
    "--payload",
    metavar="JSON",
    help="client_payload: a JSON object of at most 9 top-level keys (Sluice adds sluice_hops).",
)
@click.option(
    "--max-hops",
    type=click.IntRange(1, 100),
    default=3,
    show_default=True,
    help="Refuse when this process descends from this many dispatches.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 600),
    default=30.0,
    show_default=True,
    help="Seconds to wait for GitHub.",
)
def command(
    repository: str, event_type: str, payload: str | None, max_hops: int, timeout: float
) -> None:
    """Send a repository_dispatch event (what a drift monitor outside GitHub calls).

    \b
    The token comes from GITHUB_TOKEN (the `repo` scope, or `contents: write` on the
    repository), the API from GITHUB_API_URL (default https://api.github.com).
    Pipelines with `webhook: {event: T}` run when the repository's workflow
    passes the event to `sluice trigger`.

    \b
    Loop guard: client_payload.sluice_hops counts the dispatches that led here,
    plus one. The count comes from SLUICE_DISPATCH_HOPS and, in a workflow that a
    repository_dispatch started, from that event's client_payload; a process
    already --max-hops dispatches deep is refused (exit 1).

    \b
    Exits 0 once GitHub accepts the event, 1 when GitHub refuses it or cannot be
    reached (or the loop guard holds), 2 on invalid input or a missing token.

    \b
    Examples:
      sluice dispatch octo-org/churn --event-type retrain-churn
      sluice dispatch octo-org/churn --event-type retrain-churn --payload '{"params": {"n_estimators": 200}}'
      sluice dispatch octo-org/churn --event-type sluice-drift --payload '{"monitor": "churn-drift"}'
    """
    from engine.adapters.github_api import (  # lazy: urllib.request, only when sending
        DEFAULT_API,
        current_hops,
        dispatch,
        parse_payload,
        parse_repository,
    )

    parse_repository(repository)  # a typo is reported before a missing token
    given = parse_payload(payload)
    token = os.environ.get("GITHUB_TOKEN", "")
    if not token.strip():
        raise UsageError(
            "GITHUB_TOKEN is not set: a token is needed to send a repository_dispatch",
            hint="in a workflow: env: {GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}} with "
            "permissions: {contents: write}; elsewhere a token with the `repo` scope",
        )
    hops = current_hops(os.environ)
    url = dispatch(
        repository,
        event_type,
        given,
        token=token,
        api_url=os.environ.get("GITHUB_API_URL") or DEFAULT_API,
        hops=hops,
        max_hops=max_hops,
        timeout=timeout,
    )
    click.echo(
        f"sluice: dispatched {event_type!r} to {repository} (hop {hops + 1}): {url}", err=True
    )
