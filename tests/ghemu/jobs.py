"""One job on one emulated runner: its folder, its steps in order (each `if:` by GitHub's
rules), file commands, the step summary, its outputs, timeout-minutes and stopping."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .expressions import ExpressionError, Status
from .machine import (
    DockerStep,
    JobFolder,
    Outcome,
    Process,
    checkout,
    parse_file_commands,
    run_container,
    run_script,
    split_args,
)
from .workflow import Job, Step

if TYPE_CHECKING:
    from .emulator import JobRecord, MappedAction, WorkflowRun

CHECKOUT = "actions/checkout@"


class JobRunner:
    def __init__(
        self,
        run: WorkflowRun,
        job: Job,
        record: JobRecord,
        runner: str,
        root: Path,
        combination: dict[str, Any] | None = None,
    ) -> None:
        self.run_ = run
        # a matrix combination's `matrix` and `strategy` contexts (else both empty)
        combination = combination or {}
        self.matrix: dict[str, Any] = dict(combination.get("matrix") or {})
        self.strategy: dict[str, Any] = dict(combination.get("strategy") or {})
        self.job = job
        self.record = record
        self.runner = runner
        self.folder = JobFolder(root, run.options.origin, run.options.runner_uid)
        self.stopped = threading.Event()
        self.process: Process | None = None
        self._lock = threading.Lock()
        record.log = root / "job.log"

    # --- stopping (cancellation, timeout) ------------------------------------------------

    def stop(self, grace: float) -> None:
        with self._lock:
            self.stopped.set()
            process = self.process
        if process is not None:
            process.stop(grace)

    def _timeout(self) -> None:
        self.record.timed_out = True
        self._log(f"##[error]The job has exceeded the maximum execution time ({self.job.id})\n")
        self.stop(self.run_.options.grace)

    # --- running -------------------------------------------------------------------------

    def _log(self, text: str) -> None:
        assert self.record.log is not None
        with self.record.log.open("a") as out:
            out.write(text)

    def _contexts(self, env: dict[str, str], steps: dict[str, Any], status: str) -> dict[str, Any]:
        o = self.run_.options
        return {
            "github": self.run_.github(self.job.id, self.folder.workspace),
            "needs": self.run_._needs(self.job),
            "vars": dict(o.vars),
            "inputs": dict(o.event.get("inputs") or {}),
            "secrets": {**o.secrets, "GITHUB_TOKEN": o.token},
            "env": dict(env),
            "steps": steps,
            "job": {"status": status, "container": {}, "services": {}},
            "runner": {
                "name": self.runner,
                "os": "Linux",
                "arch": "X64",
                "temp": str(self.folder.root / "_temp"),
                "tool_cache": str(self.folder.root / "_tool"),
                "environment": "self-hosted",
            },
            "strategy": dict(self.strategy),
            "matrix": dict(self.matrix),
        }

    def run(self, cancelled: Callable[[], bool]) -> str:
        """The job's steps; returns its result (success, failure, cancelled)."""
        self.folder.root.mkdir(parents=True, exist_ok=True)
        self._log(f"job {self.job.id} on runner {self.runner}\n")
        self.folder.prepare(self.run_.options.event)
        ev = self.run_.evaluator
        timeout = ev.template(self.job.timeout_minutes, self._contexts({}, {}, "success"))
        seconds = float(timeout) * self.run_.options.minute
        timer = threading.Timer(seconds, self._timeout)
        timer.daemon = True
        timer.start()
        try:
            failed = self._set_up()
            failed = self._steps(failed, cancelled)
        finally:
            timer.cancel()
        if self.record.timed_out:
            return "failure"
        if self.stopped.is_set() and cancelled():
            return "cancelled"
        return "failure" if failed else "success"

    def _set_up(self) -> bool:
        """Pull the docker:// images of the job's steps, as the runner's 'Set up job' does."""
        if not self.run_.options.pull:
            return False
        for step in self.job.steps:
            if step.uses and step.uses.startswith("docker://"):
                done = subprocess.run(
                    ["docker", "pull", "-q", step.uses.removeprefix("docker://")],
                    capture_output=True,
                    text=True,
                )
                self._log(f"pull {step.uses}: {done.stdout}{done.stderr}")
                if done.returncode != 0:
                    self.record.error = f"could not pull {step.uses}: {done.stderr.strip()}"
                    return True
        return False

    def _steps(self, failed: bool, cancelled: Callable[[], bool]) -> bool:
        ev = self.run_.evaluator
        env: dict[str, str] = {}
        steps: dict[str, Any] = {}
        base: dict[str, Any] = self._contexts({}, {}, "success")
        for scope in (self.run_.workflow.env, self.job.env):
            for key, value in scope.items():
                env[key] = ev.template(value, {**base, "env": env})
        for step in self.job.steps:
            record = self._step_record(step)
            stop = self.stopped.is_set()
            job_status = "cancelled" if stop else ("failure" if failed else "success")
            contexts = self._contexts(env, steps, job_status)
            status = Status(success=not failed and not stop, failure=failed, cancelled=stop)
            try:
                wanted = ev.condition(step.if_, contexts, status)
                if wanted:
                    step_env = dict(env)
                    for key, value in step.env.items():
                        step_env[key] = ev.template(value, {**contexts, "env": step_env})
                    outcome = self._execute(
                        step, step_env, {**contexts, "env": step_env}, record, stop
                    )
            except (ExpressionError, ValueError, RuntimeError) as exc:
                record.error = str(exc)
                self._log(f"##[error]{step.label}: {exc}\n")
                outcome, wanted = Outcome(1), True
            if not wanted:
                self._log(f"skip {step.label}\n")
                steps[step.id or f"__{step.index}"] = {
                    "outputs": {},
                    "outcome": "skipped",
                    "conclusion": "skipped",
                }
                continue
            record.exit_code = outcome.exit_code
            record.container = outcome.container
            if outcome.exit_code == 0:
                record.outcome = "success"
            else:
                record.outcome = "cancelled" if outcome.stopped else "failure"
                failed = True
            if step.id:
                steps[step.id] = {
                    "outputs": record.outputs,
                    "outcome": record.outcome,
                    "conclusion": record.outcome,
                }
        final = self._contexts(env, steps, "failure" if failed else "success")
        for key, value in self.job.outputs.items():
            try:
                self.record.outputs[key] = ev.template(value, final)
            except ExpressionError as exc:
                self._log(f"##[warning]output {key}: {exc}\n")
        return failed

    def _step_record(self, step: Step) -> Any:
        from .emulator import StepRecord  # lazy: emulator imports this module

        record = StepRecord(step.index, step.id, step.label)
        self.record.steps.append(record)
        return record

    def _execute(
        self, step: Step, env: dict[str, str], contexts: dict[str, Any], record: Any, seen: bool
    ) -> Outcome:
        """Run one step; `seen`: the job was already stopped when its `if` was decided (an
        always() step then runs; one whose `if` was decided before the stop does not)."""
        ev = self.run_.evaluator
        o = self.run_.options
        with_ = {key: ev.template(value, contexts) for key, value in step.with_.items()}
        output = self.folder.new_file("set_output")
        summary = self.folder.new_file("step_summary")
        set_env = self.folder.new_file("set_env")
        process = Process()
        with self._lock:
            if self.stopped.is_set() and not seen:
                return Outcome(1, stopped=True)
            self.process = process
        record.started = time.time()
        self._log(f"run {step.label}\n")
        try:
            if step.uses and step.uses.startswith(CHECKOUT):
                self._log(checkout(self.folder, o.sha, o.ref, with_, o.token, o.server_url))
                outcome = Outcome(0)
            elif step.uses:
                outcome = self._docker(step, with_, env, process, (output, summary, set_env))
            else:
                script = ev.template(step.run, contexts)
                variables = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "HOME": str(self.folder.home),
                    **self._github_env(
                        str(self.folder.workspace),
                        str(self.folder.workflow / "event.json"),
                        {
                            "GITHUB_OUTPUT": output,
                            "GITHUB_STEP_SUMMARY": summary,
                            "GITHUB_ENV": set_env,
                        },
                    ),
                    **env,
                }
                outcome = run_script(process, script, self.folder, variables, self.record.log)
        finally:
            record.ended = time.time()
            with self._lock:
                self.process = None
        record.outputs = parse_file_commands(output.read_text())
        record.summary = summary.read_text()
        self.record.summary += record.summary
        env.update(parse_file_commands(set_env.read_text()))
        return outcome

    def _github_env(
        self, workspace: str, event_path: str, files: dict[str, Path]
    ) -> dict[str, str]:
        o = self.run_.options
        github = self.run_.github(self.job.id)
        return {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_JOB": self.job.id,
            "GITHUB_WORKFLOW": self.run_.workflow.name,
            "GITHUB_REF": o.ref,
            "GITHUB_REF_NAME": github["ref_name"],
            "GITHUB_SHA": o.sha,
            "GITHUB_REPOSITORY": o.repository,
            "GITHUB_REPOSITORY_OWNER": github["repository_owner"],
            "GITHUB_RUN_ID": str(o.run_id),
            "GITHUB_RUN_NUMBER": "1",
            "GITHUB_RUN_ATTEMPT": str(o.run_attempt),
            "GITHUB_ACTOR": "octocat",
            "GITHUB_EVENT_NAME": o.event_name,
            "GITHUB_EVENT_PATH": event_path,
            "GITHUB_SERVER_URL": o.server_url,
            "GITHUB_API_URL": o.api_url,
            "GITHUB_WORKSPACE": workspace,
            "RUNNER_NAME": self.runner,
            "RUNNER_OS": "Linux",
            "RUNNER_ARCH": "X64",
            "RUNNER_ENVIRONMENT": "self-hosted",
            **{key: str(path) for key, path in files.items()},
        }

    def _docker(
        self,
        step: Step,
        with_: dict[str, str],
        env: dict[str, str],
        process: Process,
        files: tuple[Path, Path, Path],
    ) -> Outcome:
        uses = str(step.uses)
        inputs = dict(with_)
        if uses.startswith("docker://"):
            image = uses.removeprefix("docker://")
        else:
            mapped = self._mapped(uses)
            image = mapped.image
            inputs = {**mapped.defaults, **inputs}
        args = split_args(inputs.pop("args", "")) if "args" in inputs else ()
        entrypoint = inputs.pop("entrypoint", None)
        output, summary, set_env = files
        inside = {
            "GITHUB_OUTPUT": Path("/github/file_commands") / output.name,
            "GITHUB_STEP_SUMMARY": Path("/github/file_commands") / summary.name,
            "GITHUB_ENV": Path("/github/file_commands") / set_env.name,
        }
        variables = {
            "HOME": "/github/home",
            **self._github_env("/github/workspace", "/github/workflow/event.json", inside),
            **env,
        }
        docker_step = DockerStep(
            image, inputs, variables, args, entrypoint, self.run_.options.network
        )
        assert self.record.log is not None
        return run_container(process, self.folder, docker_step, self.job.id, self.record.log)

    def _mapped(self, uses: str) -> MappedAction:
        from .emulator import MappedAction  # lazy: emulator imports this module

        name = uses.split("@", 1)[0]
        for key, value in self.run_.options.actions.items():
            if key in (uses, name):
                return value if isinstance(value, MappedAction) else MappedAction(value)
        raise RuntimeError(f"uses: {uses} is not emulated (map it with Options.actions)")
