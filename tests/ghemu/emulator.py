"""A workflow run as GitHub runs it: jobs as soon as their needs are done, each `if:` by
GitHub's rules, each job on a free runner of its `runs-on` pool, in its own fresh clone of
the bare origin; a matrix job as one job per combination (ghemu.matrix: fail-fast,
max-parallel); environments gated by a reviewer; cancellation; timeout-minutes."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import matrix
from .expressions import Evaluator, ExpressionError, Status
from .jobs import JobRunner
from .workflow import Job, Workflow

RESULTS = ("success", "failure", "cancelled", "skipped")


@dataclass(frozen=True)
class Decision:
    """A reviewer's answer to an environment's protection rule."""

    approve: bool
    by: str = "reviewer"


Reviewer = Callable[[str, str], Decision]  # (job id, environment name) -> decision


@dataclass(frozen=True)
class MappedAction:
    """`uses: OWNER/REPO@REF` run as a local Docker image (no build), with the defaults of
    its action.yml inputs (the runner sets INPUT_* for those too)."""

    image: str
    defaults: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_action_yml(cls, path: Path, image: str) -> MappedAction:
        """The action whose metadata is `path` (its inputs' defaults), run as `image`."""
        import yaml  # lazy: only callers that map an action read its metadata

        meta = yaml.safe_load(path.read_text("utf-8"))
        inputs = meta.get("inputs") or {}
        defaults = {
            name: str(spec["default"]).lower()
            if isinstance(spec["default"], bool)
            else str(spec["default"])
            for name, spec in inputs.items()
            if isinstance(spec, dict) and "default" in spec
        }
        return cls(image, defaults)


@dataclass
class Options:
    origin: Path  # the bare repository every job clones (and the engine pushes to)
    work: Path  # where each job gets its own folder
    event_name: str = "workflow_dispatch"
    event: Mapping[str, Any] = field(default_factory=dict)
    sha: str = ""  # default: the origin's commit at `ref`
    ref: str = "refs/heads/main"
    repository: str = "o/r"
    server_url: str = "https://github.com"
    api_url: str = "http://127.0.0.1:9"  # nothing answers: no traffic leaves loopback
    run_id: int = field(default_factory=lambda: 1000 + secrets.randbelow(10**9))
    run_attempt: int = 1
    token: str = field(default_factory=lambda: "ghs_emu" + secrets.token_hex(16))
    secrets: Mapping[str, str] = field(default_factory=dict)
    vars: Mapping[str, str] = field(default_factory=dict)
    pools: Mapping[str | tuple[str, ...], int] = field(default_factory=dict)
    default_pool_size: int = 1
    actions: Mapping[str, MappedAction | str] = field(default_factory=dict)
    reviewer: Reviewer | None = None
    minute: float = 60.0  # seconds in one timeout-minute (tests shrink it)
    grace: float = 10.0  # between SIGTERM and SIGKILL when a job is stopped
    network: str = "host"  # Docker actions' network: reach loopback servers
    pull: bool = True  # pull docker:// images when a job sets up, as the runner does
    # `run:` steps' user, owner of the job's folder (e.g. 1001, a hosted runner's); None:
    # this process's own (a self-hosted runner's); every folder above `work` must let it in
    runner_uid: int | None = None

    # runners shared with other runs (several runs of a workflow at once); default: this
    # run's own, sized by `pools` and `default_pool_size`
    runners: Runners | None = None
    api: Any = None  # a ghemu.api.GitHubApi: records environment reviews, answers the engine


@dataclass
class StepRecord:
    index: int
    id: str | None
    label: str
    outcome: str = "skipped"  # success, failure, cancelled, skipped
    outputs: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None
    started: float | None = None
    ended: float | None = None
    container: dict[str, float] = field(default_factory=dict)  # a Docker action's own times
    summary: str = ""
    error: str = ""


@dataclass
class JobRecord:
    """A job; for a matrix job, the job as its dependents see it (its result, its outputs:
    the last combination's to finish win, no runner of its own) with one record per
    combination in `instances` (each with its `name`, `matrix` and runner)."""

    id: str
    result: str = "pending"
    outputs: dict[str, str] = field(default_factory=dict)
    runner: str | None = None
    pool: tuple[str, ...] = ()
    queued: float | None = None  # its `if` passed: it waits for a reviewer or a runner
    started: float | None = None  # a runner took it
    ended: float | None = None  # the runner is free again
    summary: str = ""
    steps: list[StepRecord] = field(default_factory=list)
    environment: str | None = None
    decided_by: str | None = None
    timed_out: bool = False
    error: str = ""
    log: Path | None = None
    name: str = ""  # the display name (a combination's: GitHub's `<name> (<values>)`)
    matrix: dict[str, Any] | None = None  # a combination's values
    instances: list[JobRecord] = field(default_factory=list)  # a matrix job's combinations

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""


@dataclass
class RunRecord:
    jobs: dict[str, JobRecord]
    cancelled: bool = False

    @property
    def result(self) -> str:
        if self.cancelled:
            return "cancelled"
        if any(job.result == "failure" for job in self.jobs.values()):
            return "failure"
        return "success"

    def results(self) -> dict[str, str]:
        return {name: job.result for name, job in self.jobs.items()}

    def every(self) -> list[JobRecord]:
        """Every job that could take a runner: plain jobs and matrix combinations."""
        return [i for job in self.jobs.values() for i in (job.instances or [job])]

    def describe(self) -> str:
        lines = [f"run {self.result}"]
        for job in self.jobs.values():
            lines.append(f"-- {job.id}: {job.result} on {job.runner} {job.error}")
            lines.append(job.text()[-3000:])
            for one in job.instances:
                lines.append(f"-- {one.name}: {one.result} on {one.runner} {one.error}")
                lines.append(one.text()[-3000:])
        return "\n".join(lines)


def max_overlap(jobs: list[JobRecord]) -> int:
    """The most of `jobs` holding a runner at one moment (from their recorded intervals)."""
    edges = sorted(
        [(j.started, 1) for j in jobs if j.started is not None]
        + [(j.ended, -1) for j in jobs if j.ended is not None],
        key=lambda edge: (edge[0], edge[1]),  # an end before a start at the same instant
    )
    most = now = 0
    for _, delta in edges:
        now += delta
        most = max(most, now)
    return most


class Pool:
    """The emulated runners of one `runs-on` label set."""

    def __init__(self, labels: tuple[str, ...], size: int) -> None:
        self.labels = labels
        self.free = [f"{'-'.join(labels)}-{i}" for i in range(1, size + 1)]
        self.cond = threading.Condition()

    def acquire(self, give_up: Callable[[], bool]) -> str | None:
        with self.cond:
            while not self.free:
                if give_up():
                    return None
                self.cond.wait(0.05)
            return self.free.pop(0)

    def release(self, name: str) -> None:
        with self.cond:
            self.free.append(name)
            self.cond.notify()


class Runners:
    """The emulated runners: a pool per `runs-on` label set; `pools` sizes some sets
    (a label, or a tuple of labels in any order), the others get `default` runners."""

    def __init__(self, pools: Mapping[str | tuple[str, ...], int] | None = None, default: int = 1):
        self.sizes = {
            tuple(sorted([key] if isinstance(key, str) else key)): size
            for key, size in (pools or {}).items()
        }
        self.default = default
        self._pools: dict[tuple[str, ...], Pool] = {}
        self._lock = threading.Lock()

    def pool(self, labels: tuple[str, ...]) -> Pool:
        with self._lock:
            if labels not in self._pools:
                self._pools[labels] = Pool(labels, self.sizes.get(labels, self.default))
            return self._pools[labels]


class WorkflowRun:
    """One run of `workflow`: `start()`, then `wait()` (or `run()` for both); `cancel()`."""

    def __init__(self, workflow: Workflow, evaluator: Evaluator, options: Options) -> None:
        self.workflow = workflow
        self.evaluator = evaluator
        self.options = options
        if not options.sha:
            from .machine import _git  # lazy: only when the caller gave no sha

            options.sha = _git(options.origin, "rev-parse", options.ref)
        if options.api is not None and options.api_url == Options.api_url:
            options.api_url = options.api.url
        self.record = RunRecord({name: JobRecord(name) for name in workflow.jobs})
        self.folder = options.work / f"run-{options.run_id}"
        self._cond = threading.Condition()
        self._cancelled = threading.Event()
        self._active: dict[str, JobRunner] = {}
        self.runners = options.runners or Runners(options.pools, options.default_pool_size)
        self._threads: list[threading.Thread] = []

    # --- the caller's side ---------------------------------------------------------------

    def start(self) -> WorkflowRun:
        for job in self.workflow.jobs.values():
            thread = threading.Thread(target=self._job, args=(job,), name=f"ghemu-{job.id}")
            thread.daemon = True
            self._threads.append(thread)
        for thread in self._threads:
            thread.start()
        return self

    def wait(self, timeout: float = 600) -> RunRecord:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            self.cancel()
            for thread in self._threads:
                thread.join(60)
            raise AssertionError(f"the run took over {timeout}s:\n{self.record.describe()}")
        return self.record

    def run(self, timeout: float = 600) -> RunRecord:
        return self.start().wait(timeout)

    def cancel(self) -> None:
        """Cancel the run, as the Cancel button does: running jobs are stopped (SIGTERM,
        then SIGKILL after the grace), jobs not started are cancelled unless their `if`
        still holds (always()), and those still run."""
        with self._cond:
            self._cancelled.set()
            self.record.cancelled = True
            active = list(self._active.values())
            self._cond.notify_all()
        for runner in active:
            runner.stop(self.options.grace)

    def result_of(self, job: str) -> str:
        with self._cond:
            return self.record.jobs[job].result

    def wait_for(self, predicate: Callable[[RunRecord], bool], timeout: float) -> None:
        """Block until `predicate(record)` holds (checked under the run's lock)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.record):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out after {timeout}s:\n{self.record.describe()}"
                self._cond.wait(min(left, 0.05))

    # --- one job -------------------------------------------------------------------------

    def _settle(self, record: JobRecord, result: str) -> None:
        with self._cond:
            record.result = result
            self._cond.notify_all()

    def _status(self, job: Job) -> Status:
        with self._cond:
            results = self.record.results()
        cancelled = self._cancelled.is_set()
        return Status(
            success=not cancelled and all(results[n] == "success" for n in job.needs),
            failure=any(results[n] == "failure" for n in self.workflow.ancestors(job.id)),
            cancelled=cancelled,
        )

    def _needs(self, job: Job) -> dict[str, Any]:
        with self._cond:
            return {
                n: {"result": self.record.jobs[n].result, "outputs": self.record.jobs[n].outputs}
                for n in job.needs
            }

    def github(self, job: str, workspace: Path | None = None) -> dict[str, Any]:
        o = self.options
        return {
            "event_name": o.event_name,
            "event": dict(o.event),
            "sha": o.sha,
            "ref": o.ref,
            "ref_name": o.ref.rsplit("/", 1)[-1],
            "repository": o.repository,
            "repository_owner": o.repository.split("/")[0],
            "run_id": str(o.run_id),
            "run_number": "1",
            "run_attempt": str(o.run_attempt),
            "server_url": o.server_url,
            "api_url": o.api_url,
            "workspace": str(workspace or ""),
            "token": o.token,
            "actor": "octocat",
            "job": job,
            "workflow": self.workflow.name,
            "action": "",
        }

    def _job_contexts(self, job: Job) -> dict[str, Any]:
        inputs = self.options.event.get("inputs") if self.options.event_name else None
        return {
            "github": self.github(job.id),
            "needs": self._needs(job),
            "vars": dict(self.options.vars),
            "inputs": dict(inputs or {}),
        }

    def _wanted(self, job: Job) -> bool:
        contexts = self._job_contexts(job)
        return self.evaluator.condition(job.if_, contexts, self._status(job), matrix.JOB_LEVEL)

    def _job(self, job: Job) -> None:
        record = self.record.jobs[job.id]
        record.pool = job.pool
        record.environment = job.environment
        result = "failure"
        try:
            with self._cond:
                while any(self.record.jobs[n].result in ("pending", "running") for n in job.needs):
                    self._cond.wait()
            result = self._decide(job, record)
        except ExpressionError as exc:
            record.error = f"jobs.{job.id}: {exc}"
        except Exception as exc:  # the harness's own failure: shown in the record
            record.error = f"jobs.{job.id}: {type(exc).__name__}: {exc}"
        finally:
            self._settle(record, result)

    def _decide(self, job: Job, record: JobRecord) -> str:
        if not self._wanted(job):
            return "cancelled" if self._cancelled.is_set() else "skipped"
        record.queued = time.time()
        if job.strategy is not None:
            return self._matrix(job, record)
        return self._on_runner(job, record, job.id, self.folder / job.id)

    def _on_runner(
        self,
        job: Job,
        record: JobRecord,
        key: str,
        folder: Path,
        contexts: dict[str, Any] | None = None,
        halted: Callable[[], bool] = lambda: False,
    ) -> str:
        """The job (or one combination of a matrix job: its `contexts` hold its `matrix`
        and `strategy`; `halted`: fail-fast cancelled the rest) reviewed, then on a runner."""
        if job.environment is not None:
            decision = self._review(job)
            if decision is None:
                return "cancelled"
            record.decided_by = decision.by
            if self.options.api is not None:
                self.options.api.review(self.options.run_id, job.environment, decision)
            if not decision.approve:
                record.error = f"rejected in environment {job.environment} by {decision.by}"
                return "failure"
        memo: list[bool] = []

        def give_up() -> bool:  # cancelled while queued: still wanted only by always()
            if halted():
                return True
            if not self._cancelled.is_set():
                return False
            if not memo:
                memo.append(not self._wanted(job))
            return memo[0]

        if give_up():  # cancelled before it was queued for a runner
            return "cancelled"
        pool = self.runners.pool(record.pool)
        name = pool.acquire(give_up)
        if name is None:
            return "cancelled"
        runner = JobRunner(self, job, record, name, folder, contexts)
        try:
            with self._cond:
                record.runner, record.started, record.result = name, time.time(), "running"
                self._active[key] = runner
                self._cond.notify_all()
            if halted() or (self._cancelled.is_set() and give_up()):
                return "cancelled"
            return runner.run(cancelled=lambda: self._cancelled.is_set() or halted())
        finally:
            with self._cond:
                self._active.pop(key, None)
                record.ended = time.time()
            pool.release(name)

    # --- a matrix job --------------------------------------------------------------------

    def _matrix(self, job: Job, record: JobRecord) -> str:
        """One job per combination, in order, at most max-parallel at once; fail-fast: the
        first failure cancels the combinations running (stopped) and those not started."""
        assert job.strategy is not None
        contexts = self._job_contexts(job)
        try:
            strategy = matrix.expand(self.evaluator, job.id, job.strategy, contexts)
        except matrix.MatrixError as exc:
            record.error = str(exc)
            return "failure"
        halt = threading.Event()
        slots = threading.Semaphore(strategy.max_parallel)
        children: list[tuple[JobRecord, dict[str, Any]]] = []
        for index, values in enumerate(strategy.combinations):
            own = {**contexts, "matrix": values, "strategy": strategy.context(index)}
            child = JobRecord(
                job.id, name=matrix.display_name(self.evaluator, job.id, job.name, own)
            )
            child.matrix, child.environment, child.queued = values, job.environment, time.time()
            child.pool = self._labels(job, own)
            children.append((child, own))
        with self._cond:
            record.instances = [child for child, _ in children]
            record.result = "running"
            self._cond.notify_all()

        def one(index: int, child: JobRecord, own: dict[str, Any]) -> None:
            result = "failure"
            try:
                folder = self.folder / f"{job.id}.{index + 1}"
                result = self._on_runner(job, child, f"{job.id}#{index}", folder, own, halt.is_set)
            except Exception as exc:  # the harness's own failure: shown in the record
                child.error = f"jobs.{job.id} {child.name}: {type(exc).__name__}: {exc}"
            finally:
                with self._cond:
                    child.result = result
                    record.outputs.update({k: v for k, v in child.outputs.items() if v})
                    self._cond.notify_all()
                slots.release()
                if result == "failure" and strategy.fail_fast and not halt.is_set():
                    self._fail_fast(job, halt)

        threads = []
        for index, (child, own) in enumerate(children):
            while not slots.acquire(timeout=0.05):  # poll: a free slot, or fail-fast
                if halt.is_set():
                    break
            if halt.is_set():
                with self._cond:
                    child.result = "cancelled"  # never started: fail-fast cancelled it
                    self._cond.notify_all()
                continue
            thread = threading.Thread(
                target=one, args=(index, child, own), name=f"ghemu-{job.id}-{index + 1}"
            )
            thread.daemon = True
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
        return matrix.result([child.result for child, _ in children])

    def _fail_fast(self, job: Job, halt: threading.Event) -> None:
        with self._cond:
            halt.set()
            running = [r for key, r in self._active.items() if key.startswith(f"{job.id}#")]
        for runner in running:
            runner.stop(self.options.grace)

    def _labels(self, job: Job, contexts: dict[str, Any]) -> tuple[str, ...]:
        """A combination's runner labels (`runs-on` may read `matrix`)."""
        labels = [self.evaluator.template(label, contexts) for label in job.runs_on]
        return tuple(sorted(labels))

    def _review(self, job: Job) -> Decision | None:
        """Ask the reviewer (in its own thread: a cancel must not wait for it)."""
        reviewer = self.options.reviewer
        if reviewer is None:
            raise RuntimeError(f"job {job.id} waits for environment {job.environment}: no reviewer")
        answer: list[Decision | BaseException] = []

        def ask() -> None:
            try:
                answer.append(reviewer(job.id, str(job.environment)))
            except BaseException as exc:  # shown as the job's error
                answer.append(exc)

        threading.Thread(target=ask, daemon=True, name=f"review-{job.id}").start()
        while not answer:
            if self._cancelled.is_set():
                return None
            time.sleep(0.02)  # poll: the reviewer's answer or a cancel
        if isinstance(answer[0], BaseException):
            raise answer[0]
        return answer[0]
