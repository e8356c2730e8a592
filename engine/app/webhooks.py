"""Webhooks: check each hook (signature, listeners, payload), then run it on a pool of workers.

The HTTP side (lengths, connections, the one log line a request) is engine.adapters.webhook_http.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.adapters.pipeline_files import find_pipeline_files, load_many
from engine.adapters.webhook_http import DELIVERY_HEADERS, Limits, Reply, error, make_server
from engine.app import compose, execution
from engine.app.drift_follow import DriftFollower, execute_following
from engine.core import layout
from engine.core.config import RepoConfig
from engine.core.manifest import RunManifest, Trigger
from engine.core.params import coerce_params
from engine.core.parse import LoadedPipeline
from engine.core.payloads import check_payload
from engine.core.suggest import counted
from engine.errors import InvalidInput, PipelineInvalid, SluiceError
from engine.local.workspace import is_git_repo
from engine.ports import ContainerRuntime
from engine.run.executor import Executor, new_run_id

MAX_PAYLOAD_KEYS = 10  # as GitHub allows in a repository_dispatch client_payload
MAX_RECORDED_BYTES = 8192  # a bigger client_payload is left out of the manifest
MAX_DELIVERY_ID = 200
SIGNATURE_HEADERS = ("x-sluice-signature-256", "x-hub-signature-256")
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
    check_payload(payload, "the body")  # before the 202: a run could not record it
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
            self.runtime = compose.docker_runtime()  # one client for every run: thread-safe pool
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
            return error(401, "missing or wrong signature (X-Sluice-Signature-256: sha256=<hex>)")
        targets = [p for p in self.pipelines if listens(p, event)]
        if not targets:
            return error(404, f"no pipeline listens to webhook event {event!r}")
        delivery = next((headers[h].strip() for h in DELIVERY_HEADERS if h in headers), "")
        try:
            if len(delivery) > MAX_DELIVERY_ID:
                raise InvalidInput(f"a delivery id has at most {MAX_DELIVERY_ID} characters")
            params, trigger = read_hook(event, body, targets, delivery)
        except InvalidInput as exc:
            return error(400, exc.message)
        with self._lock:  # check and enqueue at once: a replay racing its original starts nothing
            started = self._deliveries.get(delivery) if delivery else None
            if started is not None:
                return Reply(202, {"run_ids": started, "duplicate": True})
            if self._stopping:
                return error(503, "the server is shutting down", ("Retry-After", "30"))
            if self._queue.qsize() + len(targets) > self.queue_size:
                return error(503, "too many runs waiting; retry later", ("Retry-After", "30"))
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
            return error(404, f"no run {run_id!r}")
        state = self._state.get(run_id)
        local = self.repo / layout.local_manifest(run_id)
        if state is not None and not local.is_file():  # not started, or just starting
            return Reply(200, {"run_id": run_id, "status": state})
        if state != "running" and is_git_repo(self.repo):
            try:
                with compose.reading_branch(self.repo, self.config) as store:
                    found = store.manifest(run_id)
            except SluiceError as exc:
                return error(503, f"cannot read the results branch: {exc.message}")
            if found is not None:
                return Reply(200, found.to_dict())
        try:
            return Reply(200, RunManifest.from_json(local.read_bytes()).to_dict())
        except (OSError, ValueError):
            return error(404, f"no run {run_id!r}")

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
            # One results store per run (made by run_options, closed by execute): its git
            # processes are not shared between runs; commits meet by compare-and-swap.
            options = execution.run_options(
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


class Service:
    """`sluice serve`: the pipelines of the repository, a Receiver over them, its HTTP server."""

    def __init__(
        self,
        repo: Path,
        config: RepoConfig,
        secret: bytes,
        *,
        host: str,
        port: int,
        workers: int,
        queue_size: int,
        log: Callable[[str], None],
        limits: Limits | None = None,
    ) -> None:
        self.repo, self.folder, self.log = repo, repo / config.pipelines, log
        self.receiver = Receiver(
            repo,
            config,
            self._load(),  # invalid pipelines: exit 2 with every problem, before listening
            secret,
            workers=workers,
            queue_size=queue_size,
            log=log,
        )
        self.server = make_server(self.receiver, host, port, log, limits)
        self._thread: threading.Thread | None = None

    def _load(self) -> list[LoadedPipeline]:
        return load_many(find_pipeline_files(self.folder), self.repo)

    def start(self) -> None:
        """Start the workers and serve in a thread; log where it listens."""
        self.receiver.start()
        # A daemon: should the main thread fail, the process ends instead of serving on.
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="sluice-http", daemon=True
        )
        self._thread.start()
        host, port = str(self.server.server_address[0]), int(self.server.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        events = sorted(
            {
                t.webhook.event
                for p in self.receiver.pipelines
                for t in p.pipeline.triggers
                if t.webhook
            }
        )
        self.log(
            f"listening on http://{shown}:{port} (workers: {self.receiver.workers}; events: "
            f"{', '.join(events) or 'none yet'})"
        )
        if host not in ("127.0.0.1", "::1"):
            self.log("plain HTTP: put a TLS-terminating proxy in front of it")

    def reload(self) -> None:
        """The pipelines as the files now say; an invalid set keeps the previous one."""
        try:
            pipelines = self._load()
        except PipelineInvalid as exc:
            for problem in exc.problems:
                self.log(f"reload: {problem}")
            self.log("reload: kept the previous pipelines")
            return
        except SluiceError as exc:
            self.log(f"reload failed, kept the previous pipelines: {exc}")
            return
        self.receiver.reload(pipelines)
        self.log(f"reloaded {counted(len(pipelines), 'pipeline')}")

    def stop(self) -> None:
        """Accept no more hooks, cancel the runs in progress, wait for them to record."""
        self.log("stopping: no new hooks; cancelling the runs in progress")
        self.server.shutdown()
        if self._thread is not None:
            self._thread.join()
        self.server.server_close()
        dropped = self.receiver.stop()
        if dropped:
            self.log(f"{counted(len(dropped), 'queued run')} never started: {', '.join(dropped)}")
        self.log("stopped")
