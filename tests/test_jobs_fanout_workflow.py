"""The generated jobs-mode workflow of a sweep, run job by job the way GitHub would: each
job's `if:`, its matrix, its `with:` inputs and its `outputs:` evaluated by GitHub's own
expression evaluator (tests/ghemu), the inputs turned into the engine's command as the Action
does (engine.cli.action_inputs), every job (and every instance of a matrix) in its own fresh
clone of a bare origin, with real Docker. The emulator itself (tests/test_jobs_mode_e2e.py)
has no matrix; this drives the same file through the same evaluator.

A matrix job's result is GitHub's: `failure` when any instance failed, else `success`.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import git, sluice
from ghemu import Evaluator, Status, Workflow, load
from test_jobs_cli import shape
from test_jobs_fanout import TRAIN, Sweep

from engine.cli.action_inputs import Inputs, command_argv

pytestmark = pytest.mark.docker


class Driver:
    """Runs a jobs-mode workflow's jobs in `needs` order, as GitHub decides them."""

    def __init__(self, sweep: Sweep, workflow: Workflow, evaluator: Evaluator) -> None:
        self.sweep, self.workflow, self.evaluator = sweep, workflow, evaluator
        self.results: dict[str, str] = {}
        self.outputs: dict[str, dict[str, str]] = {}
        self.instances: dict[str, list[str]] = {}  # matrix job -> the instances it ran
        event = sweep.root / "dispatch.json"
        event.write_text(json.dumps({"inputs": {"params": "{}"}, "ref": "refs/heads/main"}))
        self.env = {"GITHUB_EVENT_NAME": "workflow_dispatch", "GITHUB_EVENT_PATH": str(event)}

    def run(self) -> dict[str, str]:
        todo = list(self.workflow.jobs)
        while todo:
            job = next(
                j for j in todo if all(n in self.results for n in self.workflow.jobs[j].needs)
            )
            todo.remove(job)
            self.results[job] = self._job(job)
        return self.results

    def _job(self, job_id: str) -> str:
        job = self.workflow.jobs[job_id]
        needs = {
            n: {"result": self.results[n], "outputs": self.outputs.get(n, {})} for n in job.needs
        }
        contexts: dict[str, Any] = {"needs": needs}
        status = Status(
            success=all(self.results[n] == "success" for n in job.needs),
            failure=any(self.results[n] == "failure" for n in self.workflow.ancestors(job_id)),
        )
        if not self.evaluator.condition(job.if_, contexts, status):
            return "skipped"
        strategy = self.workflow.raw["jobs"][job_id].get("strategy")
        values: list[Any] = [None]
        if strategy is not None:
            vector = strategy["matrix"]["instance"]
            values = self.evaluator.evaluate(vector.strip()[3:-2].strip(), contexts).value
            assert isinstance(values, list) and values, f"{job_id}: an empty matrix: {values!r}"
            self.instances[job_id] = values
        with ThreadPoolExecutor(len(values)) as pool:
            done = list(pool.map(lambda v: self._instance(job_id, contexts, v), values))
        if strategy is None:
            step = job.steps[-1]
            seen = {**contexts, "steps": {step.id: {"outputs": done[0][1]}}}
            self.outputs[job_id] = {
                k: self.evaluator.template(v, seen) for k, v in job.outputs.items()
            }
        return "failure" if any(code != 0 for code, _ in done) else "success"

    def _instance(
        self, job_id: str, contexts: dict[str, Any], value: Any
    ) -> tuple[int, dict[str, str]]:
        step = self.workflow.jobs[job_id].steps[-1]
        seen = {**contexts, "matrix": {"instance": value} if value is not None else {}}
        given = {
            k.replace("-", "_"): self.evaluator.template(v, seen) for k, v in step.with_.items()
        }
        argv = command_argv(Inputs(**given))
        code, out, err = self.sweep.part(*argv, env=self.env)
        assert code in (0, 1), f"{job_id} {value}: {err}"
        return code, out


def driven(root: Path, evaluator: Evaluator, broken: str = "none") -> tuple[Sweep, Driver]:
    sweep = Sweep(root, broken=broken)
    done = sluice("workflow", "generate", "--jobs", repo=sweep.repo)
    assert done.returncode == 0, done.stderr
    git(sweep.repo, "add", "-A")
    git(sweep.repo, "commit", "-q", "-m", "workflow")
    git(sweep.repo, "push", "-q", "origin", "main")
    workflow = load(sweep.repo / ".github" / "workflows" / "sluice-sweep.yml")
    return sweep, Driver(sweep, workflow, evaluator)


def test_the_generated_sweep_workflow_runs_each_instance_as_a_matrix_job(
    tmp_path: Path, busybox_image: str, gh_evaluator: Evaluator
) -> None:
    sweep, driver = driven(tmp_path / "jobs", gh_evaluator)
    results = driver.run()
    assert set(results.values()) == {"success"}, results
    assert driver.instances == {"step-train": TRAIN, "step-score": ["score[eu]", "score[us]"]}
    run_id = driver.outputs["plan"]["run-id"]
    recorded = sweep.manifest(run_id)
    assert recorded["status"] == "succeeded"
    assert recorded["steps"]["train"]["status"] == "succeeded"
    single = Sweep(tmp_path / "single").single_runner()
    assert shape(recorded) == shape(single)

    # the same event again: every instance is cached, no matrix job starts
    again = Driver(sweep, driver.workflow, gh_evaluator)
    results = again.run()
    assert results["step-train"] == results["step-score"] == "skipped"
    assert again.instances == {}
    assert sweep.manifest(again.outputs["plan"]["run-id"])["steps"]["train"]["status"] == "cached"


def test_a_failed_instance_fails_its_matrix_job_and_the_fan_in_runs_within_allow_failures(
    tmp_path: Path, busybox_image: str, gh_evaluator: Evaluator
) -> None:
    sweep, driver = driven(tmp_path / "jobs", gh_evaluator, broken="2x4")
    results = driver.run()
    assert results["step-train"] == "failure"  # GitHub's view of the matrix
    assert results["step-select"] == "success"  # started anyway; the engine decided
    run_id = driver.outputs["plan"]["run-id"]
    recorded = sweep.manifest(run_id)
    assert recorded["steps"][TRAIN[3]]["status"] == "failed"
    assert recorded["steps"]["train"]["status"] == "succeeded"
    assert recorded["steps"]["select"]["status"] == "succeeded"
    single = Sweep(tmp_path / "single", broken="2x4").single_runner()
    assert shape(recorded) == shape(single)
