"""`sluice serve`: receive signed webhooks and run the pipelines that listen to them."""

from __future__ import annotations

import os
import signal
import sys
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from engine.cli.common import EXIT_INTERRUPTED, State, exit_with
from engine.errors import UsageError

if TYPE_CHECKING:
    from engine.app.webhooks import Service


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on; 0 picks a free one (the address is logged).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Runs at once; the others wait in the queue.",
)
@click.option(
    "--queue-size",
    type=click.IntRange(1, 100_000),
    default=256,
    show_default=True,
    help="Runs that may wait; a hook beyond that is answered 503.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1, 10_000),
    default=256,
    show_default=True,
    help="Requests served at once; one beyond that is answered 503.",
)
@click.option(
    "--request-timeout",
    type=click.FloatRange(0.1, 3600),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Time for a whole request (line, headers, body); then 408.",
)
@click.pass_obj
def command(
    state: State,
    host: str,
    port: int,
    workers: int,
    queue_size: int,
    max_connections: int,
    request_timeout: float,
) -> None:
    """Receive signed webhooks and run the pipelines that listen to them.

    \b
    POST /hooks/<event>   JSON body = client_payload; params from its "params";
                          runs every pipeline with `webhook: {event: <event>}`.
                          Signed: X-Sluice-Signature-256: sha256=<hex HMAC-SHA256
                          of the body> (GitHub's X-Hub-Signature-256 works too),
                          with the secret in SLUICE_WEBHOOK_SECRET.
                          A repeated X-Sluice-Delivery / X-GitHub-Delivery id
                          starts nothing new and gets the same run ids.
    GET /runs/<run-id>    the run's manifest ({"status": "queued"} before it starts)
    GET /healthz          {"ok": true}

    \b
    Answers, checked in this order: 413 body over 1 MiB (411 without a length),
    401 signature missing or wrong, 404 no pipeline listens to the event,
    400 bad JSON, a lone surrogate, more than 10 top-level keys or bad params,
    503 queue full, else 202 {"run_ids": [...]}. Runs are recorded as usual
    (trigger kind webhook). 400 also on a Content-Length that is not ASCII digits
    or is given twice differently; 408 when a request is not whole within
    --request-timeout; 503 beyond --max-connections requests at once.

    \b
    Pipelines are read at start-up; SIGHUP reads them again (an invalid set is
    logged and the previous one kept). SIGINT/SIGTERM stop accepting, cancel the
    runs in progress (their containers are removed) and exit 130.

    \b
    Examples:
      SLUICE_WEBHOOK_SECRET=... sluice serve --port 8080 --workers 4
      body='{"params": {"n_estimators": 200}}'
      sig=$(printf %s "$body" | openssl dgst -sha256 -hmac "$SLUICE_WEBHOOK_SECRET" | cut -d' ' -f2)
      curl -d "$body" -H "X-Sluice-Signature-256: sha256=$sig" localhost:8080/hooks/retrain-churn
    """
    from engine.adapters.webhook_http import Limits  # lazy: as below
    from engine.app.webhooks import Service  # lazy: `sluice --help` does not load pydantic

    secret = os.environ.get("SLUICE_WEBHOOK_SECRET", "")
    if not secret:
        raise UsageError(
            "SLUICE_WEBHOOK_SECRET is not set: the server will not take unsigned hooks",
            hint="set it to a long random string, e.g. `openssl rand -hex 32`, "
            "and sign each body with it",
        )
    service = Service(
        state.repo,
        state.config,
        secret.encode(),
        host=host,
        port=port,
        workers=workers,
        queue_size=queue_size,
        log=_Log(),
        limits=Limits(request_timeout=request_timeout, max_connections=max_connections),
    )
    _serve_until_stopped(service)
    exit_with(EXIT_INTERRUPTED)


class _Log:
    """One line at a time on stderr, whichever thread writes it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with self._lock:
            sys.stderr.write(f"{now} sluice serve: {line}\n")
            sys.stderr.flush()


def _serve_until_stopped(service: Service) -> None:
    """Serve until SIGINT or SIGTERM; SIGHUP reloads the pipelines.

    Signals are read in the main thread from a wake-up socket, so that shutting down and
    reloading run as ordinary code, not inside a signal handler (where taking a lock
    that the interrupted code holds would deadlock).
    """
    import socket  # lazy: `sluice --help` need not pay for it

    wake_r, wake_w = socket.socketpair()
    wake_w.setblocking(False)
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.getsignal(sig) for sig in signals}
    stops = []

    def handler(signum: int, frame: object) -> None:
        if signum != signal.SIGHUP:
            stops.append(signum)
            if len(stops) >= 3:  # the user insists: stop waiting for runs to record
                os._exit(EXIT_INTERRUPTED)

    old_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    for sig in signals:
        signal.signal(sig, handler)
    try:
        service.start()
        while not any(s != signal.SIGHUP for s in wake_r.recv(64)):
            service.reload()
        service.stop()
    finally:
        signal.set_wakeup_fd(old_fd)
        for sig, was in previous.items():
            signal.signal(sig, was)
        wake_r.close()
        wake_w.close()
