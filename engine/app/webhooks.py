"""A signed-webhook receiver: checks each hook, then runs it on a bounded pool of workers."""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import re
import socket
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.adapters.git_results import ResultsStore
from engine.app.launch import DriftFollower, execute_following, run_options
from engine.core.manifest import RunManifest, Trigger
from engine.core.parse import LoadedPipeline, coerce_params
from engine.errors import InvalidInput, SluiceError, UsageError
from engine.local.workspace import ENGINE_DIR, is_git_repo
from engine.ports import ContainerRuntime
from engine.run.executor import Executor, new_run_id

if TYPE_CHECKING:
    from engine.core.config import RepoConfig

MAX_BODY = 1 << 20  # 1 MiB
LINGER_BYTES = 4 * 1024**2  # drained after a refusal, at most
LINGER_S = 2.0
MAX_PAYLOAD_KEYS = 10  # as GitHub allows in a repository_dispatch client_payload
MAX_RECORDED_BYTES = 8192  # a bigger client_payload is left out of the manifest
MAX_DELIVERY_ID = 200
SIGNATURE_HEADERS = ("x-sluice-signature-256", "x-hub-signature-256")
DELIVERY_HEADERS = ("x-sluice-delivery", "x-github-delivery")
_RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value: `sha256=<hex HMAC-SHA256 of the body>`, as GitHub's."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether `header` is the body's signature; constant-time, whatever the header holds."""
    if not header:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode())


def listens(loaded: LoadedPipeline, event: str) -> bool:
    return any(t.webhook is not None and t.webhook.event == event for t in loaded.pipeline.triggers)


def _bounded(value: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(value))
    if size <= MAX_RECORDED_BYTES:
        return value
    return {"omitted": f"{size} bytes of JSON, over the {MAX_RECORDED_BYTES}-byte record limit"}


def read_hook(
    event: str, body: bytes, targets: Sequence[LoadedPipeline], delivery: str = ""
) -> tuple[list[dict[str, Any]], Trigger]:
    """The body as a client_payload -> params for each target pipeline, and the trigger.

    Shaped as `sluice trigger` records a repository_dispatch of the same event, so a
    pipeline's `${{ trigger.payload.client_payload.x }}` reads alike from both.
    Raises InvalidInput with the reason.
    """
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object (the hook's client_payload)")
    if len(payload) > MAX_PAYLOAD_KEYS:
        raise InvalidInput(
            f"the body has {len(payload)} top-level keys; at most {MAX_PAYLOAD_KEYS}, "
            "as in a repository_dispatch client_payload"
        )
    given = payload.get("params")
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise InvalidInput('params must be a JSON object, e.g. {"params": {"n_estimators": 200}}')
    params = [
        coerce_params(p.pipeline.params, given, source=f"params of {p.name}", from_text=False)
        for p in targets
    ]
    extra = {k: v for k, v in payload.items() if k != "params"}
    recorded: dict[str, Any] = {"event_type": event, "client_payload": _bounded(extra)}
    if delivery:
        recorded["delivery"] = delivery
    return params, Trigger(kind="webhook", event=event, payload=recorded)


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


def _error(status: int, message: str, *headers: tuple[str, str]) -> Reply:
    return Reply(status, {"error": message}, headers)


class Deliveries:
    """Delivery id -> the run ids it started; the oldest id is forgotten first."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, list[str]] = OrderedDict()

    def get(self, delivery: str) -> list[str] | None:
        found = self._ids.get(delivery)
        if found is not None:
            self._ids.move_to_end(delivery)
        return found

    def put(self, delivery: str, run_ids: list[str]) -> None:
        self._ids[delivery] = run_ids
        self._ids.move_to_end(delivery)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


@dataclass(frozen=True)
class _Job:
    run_id: str
    loaded: LoadedPipeline
    params: dict[str, Any]
    trigger: Trigger


class Receiver:
    """What the HTTP layer calls: accepts hooks, runs them on `workers` threads, reports runs."""

    def __init__(
        self,
        repo: Path,
        config: RepoConfig,
        pipelines: Sequence[LoadedPipeline],
        secret: bytes,
        *,
        workers: int = 2,
        queue_size: int = 256,
        runtime: ContainerRuntime | None = None,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.repo, self.config, self.secret = repo, config, secret
        self.pipelines = list(pipelines)
        self.workers, self.queue_size = workers, queue_size
        self.runtime, self.log = runtime, log
        self._queue: queue.Queue[_Job | None] = queue.Queue(queue_size)
        self._lock = threading.Lock()
        self._deliveries = Deliveries()
        self._state: dict[str, str] = {}  # run id -> queued | running
        self._live: dict[str, Executor] = {}
        self._second, self._issued = "", set[str]()  # run ids handed out in this second
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def start(self) -> None:
        if self.runtime is None:
            from engine.adapters.docker_runtime import DockerRuntime

            self.runtime = DockerRuntime()  # one client for every run: its pool is thread-safe
        for n in range(self.workers):
            worker = threading.Thread(target=self._work, name=f"sluice-serve-{n}", daemon=True)
            worker.start()
            self._threads.append(worker)

    def stop(self) -> list[str]:
        """Cancel running runs and wait for them to record; returns queued ids never started."""
        dropped: list[str] = []
        with self._lock:
            self._stopping = True
            for executor in self._live.values():
                executor.cancel()
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    dropped.append(job.run_id)
                    self._state.pop(job.run_id, None)
        for _ in self._threads:
            self._queue.put(None)
        for worker in self._threads:
            worker.join()
        return dropped

    def reload(self, pipelines: Sequence[LoadedPipeline]) -> None:
        self.pipelines = list(pipelines)  # one assignment: a request sees the old or the new list

    def hook(self, event: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """A hook whose length the HTTP layer checked (413/411/400, before reading it).

        Then, each check before the work the next one costs: 401 on the signature, 404
        when no pipeline listens, 400 on the JSON or params, 503 when the queue is full;
        else 202 with run ids allocated now, so that `GET /runs/<id>` can be polled.
        """
        signature = next((headers[h] for h in SIGNATURE_HEADERS if h in headers), None)
        if not verify(self.secret, body, signature):
            return _error(401, "missing or wrong signature (X-Sluice-Signature-256: sha256=<hex>)")
        targets = [p for p in self.pipelines if listens(p, event)]
        if not targets:
            return _error(404, f"no pipeline listens to webhook event {event!r}")
        delivery = next((headers[h].strip() for h in DELIVERY_HEADERS if h in headers), "")
        try:
            if len(delivery) > MAX_DELIVERY_ID:
                raise InvalidInput(f"a delivery id has at most {MAX_DELIVERY_ID} characters")
            params, trigger = read_hook(event, body, targets, delivery)
        except InvalidInput as exc:
            return _error(400, exc.message)
        with self._lock:  # check and enqueue at once: a replay racing its original starts nothing
            started = self._deliveries.get(delivery) if delivery else None
            if started is not None:
                return Reply(202, {"run_ids": started, "duplicate": True})
            if self._stopping:
                return _error(503, "the server is shutting down", ("Retry-After", "30"))
            if self._queue.qsize() + len(targets) > self.queue_size:
                return _error(503, "too many runs waiting; retry later", ("Retry-After", "30"))
            run_ids = [self._new_run_id() for _ in targets]
            for run_id, loaded, given in zip(run_ids, targets, params, strict=True):
                self._state[run_id] = "queued"
                # A trigger each: the manifest holds it, and runs must not share one object.
                self._queue.put_nowait(_Job(run_id, loaded, given, trigger.model_copy(deep=True)))
            if delivery:
                self._deliveries.put(delivery, run_ids)
        return Reply(202, {"run_ids": run_ids})

    def run(self, run_id: str) -> Reply:
        """A run's manifest: the local one while it runs, else the results branch's."""
        if not _RUN_ID.match(run_id):
            return _error(404, f"no run {run_id!r}")
        state = self._state.get(run_id)
        local = self.repo / ENGINE_DIR / "runs" / run_id / "manifest.json"
        if state is not None and not local.is_file():  # not started, or just starting
            return Reply(200, {"run_id": run_id, "status": state})
        if state != "running" and is_git_repo(self.repo):
            settings = self.config.results
            try:
                with ResultsStore(
                    self.repo, branch=settings.branch, remote=settings.remote, push=False
                ) as store:
                    found = store.manifest(run_id)
            except SluiceError as exc:
                return _error(503, f"cannot read the results branch: {exc.message}")
            if found is not None:
                return Reply(200, found.to_dict())
        try:
            return Reply(200, RunManifest.from_json(local.read_bytes()).to_dict())
        except (OSError, ValueError):
            return _error(404, f"no run {run_id!r}")

    def _new_run_id(self) -> str:
        """A fresh id: ids of one second differ only in 6 random hex digits, so clashes are redrawn."""
        while True:
            run_id = new_run_id(datetime.now(UTC))
            second = run_id.partition("-")[0]
            if second != self._second:
                self._second, self._issued = second, set()
            if run_id not in self._issued:
                self._issued.add(run_id)
                return run_id

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            self._run(job)

    def _track(self, executor: Executor) -> None:
        with self._lock:
            self._live[executor.run_id] = executor
            if self._stopping:  # taken off the queue just as the server stopped
                executor.cancel()

    def _untrack(self, manifest: RunManifest) -> None:
        with self._lock:
            self._live.pop(manifest.run_id, None)

    def _run(self, job: _Job) -> None:
        with self._lock:
            self._state[job.run_id] = "running"
        started = time.monotonic()
        try:
            # One ResultsStore per run (made by run_options, closed by execute): its git
            # processes are not shared between runs; commits meet by compare-and-swap.
            options = run_options(
                self.repo, self.config, job.loaded, params=job.params, trigger=job.trigger
            )
            options.run_id = job.run_id
            # The run, then whatever its drift bindings start (a monitor fed by webhook).
            done = execute_following(
                job.loaded,
                options,
                follower=DriftFollower(self.repo, self.config, push=None, log=self.log),
                runtime=self.runtime,
                on_executor=self._track,
                on_finished=self._untrack,
            )
            took = time.monotonic() - started
            self.log(f"run {job.run_id} {job.loaded.name} {done[0].status} in {took:.1f}s")
        except Exception as exc:  # one broken run must not take its worker down
            self.log(f"run {job.run_id} {job.loaded.name} could not run: {exc}")
        finally:
            with self._lock:
                self._live.pop(job.run_id, None)
                self._state.pop(job.run_id, None)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the default 5 drops connections in a burst of deliveries

    def __init__(
        self, address: tuple[str, int], receiver: Receiver, log: Callable[[str], None]
    ) -> None:
        self.receiver, self.log = receiver, log
        super().__init__(address, _Handler)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sluice"
    timeout = 30  # a client that stalls mid-request does not hold its thread for ever
    server: _Server
    _started = 0.0

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        self._started = time.monotonic()
        if self.headers.get("Content-Length", "0").strip() != "0":
            self.close_connection = True  # a body is not read: it must not pass for a request
        if path == "/healthz":
            self._reply(Reply(200, {"ok": True}))
        elif path.startswith("/runs/"):
            self._reply(self.server.receiver.run(path.removeprefix("/runs/")))
        else:
            self._reply(_error(404, f"no such endpoint: GET {path}"))

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        event = urllib.parse.unquote(path.removeprefix("/hooks/"))
        self._started = time.monotonic()
        if not path.startswith("/hooks/") or not event or "/" in event:
            self.close_connection = True  # the body is not read: it must not pass for a request
            self._reply(_error(404, f"no such endpoint: POST {path}"))
            return
        refused = self._length_refused()
        if isinstance(refused, Reply):
            self.close_connection = True
            self._reply(refused)
            self._linger()
            return
        try:
            body = self.rfile.read(refused)
        except OSError as exc:  # the client stalled past `timeout`, or went away
            self.close_connection = True
            self.server.log(f"{self.client_address[0]} POST {path}: body not received: {exc}")
            return
        if len(body) < refused:
            self.close_connection = True
            self._reply(_error(400, f"the body ended after {len(body)} of {refused} bytes"))
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        self._reply(self.server.receiver.hook(event, body, headers))

    def handle_expect_100(self) -> bool:
        """`Expect: 100-continue`: refuse a body by its length before the client sends it."""
        refused = self._length_refused() if self.command == "POST" else 0
        if isinstance(refused, Reply):
            self._started = time.monotonic()
            self.close_connection = True
            self._reply(refused)
            return False
        return super().handle_expect_100()

    def _linger(self) -> None:
        """Read and drop what the client still sends (bounded) before the socket closes.

        A refused body is never read; closing with unread data would reset the connection,
        and a reset can destroy the reply the client has not read yet (a lingering close,
        as nginx does).
        """
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_S)
            drained = 0
            while drained < LINGER_BYTES and (chunk := self.connection.recv(65536)):
                drained += len(chunk)
        except OSError:
            pass  # the client went away first: nothing left to protect

    def _length_refused(self) -> Reply | int:
        """The body's length, or the refusal, from the headers alone (nothing read, nothing hashed)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return _error(411, "send the body with a Content-Length, not chunked")
        raw = self.headers.get("Content-Length")
        if raw is None:
            return _error(411, "a Content-Length header is required")
        if not raw.strip().isdigit():
            return _error(400, f"Content-Length {raw!r} is not a number of bytes")
        length = int(raw)
        if length > MAX_BODY:
            return _error(413, f"the body is {length} bytes; at most {MAX_BODY}")
        return length

    def _reply(self, reply: Reply) -> None:
        data = json.dumps(reply.body).encode() + b"\n"
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client is gone; its log line still says why
        took = (time.monotonic() - self._started) * 1000
        delivery = next((self.headers[h] for h in DELIVERY_HEADERS if h in self.headers), None)
        extra = f" delivery={_printable(delivery)}" if delivery else ""
        if "run_ids" in reply.body:
            extra += " runs=" + ",".join(reply.body["run_ids"])
        elif reply.status >= 400 and reply.status != 404:
            extra += f" ({_printable(reply.body['error'])})"
        path = _printable(urllib.parse.urlsplit(self.path).path)
        self.server.log(
            f"{self.client_address[0]} {self.command} {path} {reply.status} {took:.1f}ms{extra}"
        )

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # `_reply` writes the request's one line

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log(f"{self.client_address[0]} {_printable(format % args)}")


def _printable(text: str, limit: int = 300) -> str:
    """Client-controlled text made safe for a one-line log: no control characters, bounded."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def make_server(
    receiver: Receiver, host: str, port: int, log: Callable[[str], None]
) -> ThreadingHTTPServer:
    """The HTTP server over `receiver`, bound (port 0: a free one) but not serving yet."""
    server_class = _Server6 if ":" in host else _Server
    try:
        return server_class((host, port), receiver, log)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
