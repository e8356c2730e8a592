"""Jobs mode's parts through the CLI: `sluice plan`, `step`, `finish`, each in its own fresh
clone of a bare origin (as separate GitHub jobs on separate runners), with real Docker
containers and one lasting artifact store. The record they make together is compared with a
single-runner run of the same pipeline. (tests/test_jobs_mode_e2e.py runs the generated
workflow itself, the way GitHub does.)
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import git, make_repo, sluice

pytestmark = pytest.mark.docker

DIAMOND = """
name: diamond
defaults: {image: "sluice-test/busybox:1"}
steps:
  - name: prep
    run: echo prepared > /sluice/outputs/data.txt
  - name: left
    needs: [prep]
    run: |
      cat /sluice/inputs/prep/data.txt > /sluice/outputs/left.txt
      echo '{"score": 0.9}' > /sluice/outputs/metrics.json
  - name: right
    needs: [prep]
    run: FAIL_RIGHT
  - name: join
    needs: [left, right]
    run: cat /sluice/inputs/left/left.txt /sluice/inputs/right/right.txt > /sluice/outputs/all.txt
finally:
  - name: report
    needs: [join]
    cache: false
    run: echo reported > /sluice/outputs/report.txt
"""


class Jobs:
    """A bare origin, a lasting store, and a fresh clone for every part (no shared disk
    between parts but the store, as between GitHub runners)."""

    def __init__(self, root: Path, right: str = "echo right > /sluice/outputs/right.txt") -> None:
        self.root = root
        store = root / "store"
        store.mkdir(parents=True)
        settings = f"artifacts: file://{store}\n"
        text = DIAMOND.replace("FAIL_RIGHT", right)
        self.repo = make_repo(root, {"diamond.yaml": text}, {"sluice.yaml": settings}, origin=True)
        self.origin = root / "origin.git"
        self.count = 0

    def clone(self) -> Path:
        self.count += 1
        where = self.root / f"job{self.count}"
        git(self.root, "clone", "-q", str(self.origin), str(where))
        return where

    def part(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
        """Run one part in its own clone; (exit code, its GITHUB_OUTPUT values)."""
        where = self.clone()
        out = where.parent / f"{where.name}.out"
        out.touch()
        done = sluice(
            *args, repo=where, process=True, env={"GITHUB_OUTPUT": str(out), **(env or {})}
        )
        assert done.returncode in (0, 1), done.stderr
        return done.returncode, outputs(out.read_text())

    def manifest(self, run_id: str) -> dict[str, Any]:
        where = self.clone()
        done = sluice("show", run_id, "--json", "--fetch", repo=where, process=True)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]


def outputs(text: str) -> dict[str, str]:
    values = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line:
            name, delimiter = line.split("<<", 1)
            body = []
            for inner in lines:
                if inner == delimiter:
                    break
                body.append(inner)
            values[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
    return values


def dispatch_event(root: Path) -> Path:
    event = root / "event.json"
    event.write_text(json.dumps({"inputs": {"params": "{}"}, "ref": "refs/heads/main"}))
    return event


def plan(jobs: Jobs) -> tuple[str, dict[str, str]]:
    event = dispatch_event(jobs.root)
    code, out = jobs.part(
        "plan", "diamond", "--event-name", "workflow_dispatch", "--event-path", str(event)
    )
    assert code == 0
    return out["run-id"], json.loads(out["steps"])


def run_steps(jobs: Jobs, run_id: str, names: list[str]) -> dict[str, int]:
    """Run steps at once, each in its own clone (a parallel pair of jobs)."""
    with ThreadPoolExecutor(len(names)) as pool:
        codes = pool.map(lambda n: jobs.part("step", run_id, n)[0], names)
    return dict(zip(names, codes, strict=True))


def single_runner(root: Path, right: str | None = None) -> dict[str, Any]:
    jobs = Jobs(root, right) if right else Jobs(root)
    done = sluice("run", "diamond", "--json", repo=jobs.clone(), process=True)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def shape(manifest: dict[str, Any]) -> dict[str, Any]:
    """What must match between a jobs-mode run and a single-runner one."""
    return {
        "status": manifest["status"],
        "steps": {
            name: (
                rec["status"],
                {rel: p["sha256"] for rel, p in rec["outputs"].items()},
                rec["metrics"],
            )
            for name, rec in manifest["steps"].items()
        },
    }


def test_plan_step_finish_in_separate_clones_make_the_single_runner_record(
    tmp_path: Path, busybox_image: str
) -> None:
    jobs = Jobs(tmp_path / "jobs")
    run_id, decisions = plan(jobs)
    assert decisions == {"prep": "run", "left": "run", "right": "run", "join": "run"}
    planned = jobs.manifest(run_id)
    assert planned["status"] == "running"
    assert {r["status"] for r in planned["steps"].values()} == {"pending"}

    assert run_steps(jobs, run_id, ["prep"]) == {"prep": 0}
    assert run_steps(jobs, run_id, ["left", "right"]) == {"left": 0, "right": 0}
    midway = jobs.manifest(run_id)  # the step jobs' records, laid over the plan's manifest
    assert {n: r["status"] for n, r in midway["steps"].items()} == {
        "prep": "succeeded",
        "left": "succeeded",
        "right": "succeeded",
        "join": "pending",
        "report": "pending",
    }
    assert run_steps(jobs, run_id, ["join"]) == {"join": 0}
    needs = {"plan": {"result": "success"}} | {
        f"step-{n}": {"result": "success"} for n in ("prep", "left", "right", "join")
    }
    code, out = jobs.part("finish", run_id, "--jobs", json.dumps(needs))
    assert code == 0 and out["status"] == "succeeded" and out["run-ids"] == run_id

    recorded = jobs.manifest(run_id)
    assert shape(recorded) == shape(single_runner(tmp_path / "single"))
    origin = jobs.root / "origin.git"
    folder = f"runs/diamond/{run_id}/steps"
    listed = subprocess.run(
        ["git", "ls-tree", "sluice-results", folder + "/"], cwd=origin, capture_output=True
    )
    assert listed.stdout == b"", "finish folds the step records into the manifest"


def test_a_failed_step_fails_its_job_and_finish_settles_the_rest(
    tmp_path: Path, busybox_image: str
) -> None:
    failing = "echo broken >&2; exit 3"
    jobs = Jobs(tmp_path / "jobs", failing)
    run_id, _ = plan(jobs)
    assert run_steps(jobs, run_id, ["prep"]) == {"prep": 0}
    assert run_steps(jobs, run_id, ["left", "right"]) == {"left": 0, "right": 1}
    # GitHub starts no job for `join` (a need failed); finish settles it and runs `report`
    needs = {
        "plan": {"result": "success"},
        "step-prep": {"result": "success"},
        "step-left": {"result": "success"},
        "step-right": {"result": "failure"},
        "step-join": {"result": "skipped"},
    }
    code, out = jobs.part("finish", run_id, "--jobs", json.dumps(needs))
    assert code == 1 and out["status"] == "failed"
    recorded = jobs.manifest(run_id)
    assert recorded["steps"]["join"]["status"] == "upstream_failed"
    assert recorded["steps"]["report"]["status"] == "succeeded"
    assert shape(recorded) == shape(single_runner(tmp_path / "single", failing))


def test_a_step_job_after_a_failed_need_records_upstream_failed_and_exits_0(
    tmp_path: Path, busybox_image: str
) -> None:
    jobs = Jobs(tmp_path / "jobs", "exit 3")
    run_id, _ = plan(jobs)
    run_steps(jobs, run_id, ["prep"])
    run_steps(jobs, run_id, ["left", "right"])
    code, out = jobs.part("step", run_id, "join")
    assert code == 0 and out["status"] == "upstream_failed"
    assert jobs.manifest(run_id)["steps"]["join"]["reason"] == "needs 'right', which failed"


def test_a_cancelled_workflow_ends_the_run_cancelled_without_running_finally(
    tmp_path: Path, busybox_image: str
) -> None:
    jobs = Jobs(tmp_path / "jobs")
    run_id, _ = plan(jobs)
    run_steps(jobs, run_id, ["prep"])
    needs = {
        "plan": {"result": "success"},
        "step-prep": {"result": "success"},
        "step-left": {"result": "cancelled"},
        "step-right": {"result": "cancelled"},
        "step-join": {"result": "cancelled"},
    }
    code, out = jobs.part("finish", run_id, "--jobs", json.dumps(needs))
    assert code == 0 and out["status"] == "cancelled"
    recorded = jobs.manifest(run_id)
    assert recorded["status"] == "cancelled"
    statuses = {n: r["status"] for n, r in recorded["steps"].items()}
    assert statuses["prep"] == "succeeded"
    assert {statuses[n] for n in ("left", "right", "join", "report")} == {"cancelled"}


def test_a_step_whose_job_left_no_record_fails_with_its_job_result(
    tmp_path: Path, busybox_image: str
) -> None:
    jobs = Jobs(tmp_path / "jobs")
    run_id, _ = plan(jobs)
    run_steps(jobs, run_id, ["prep"])
    run_steps(jobs, run_id, ["left"])
    needs = {
        "plan": {"result": "success"},
        "step-prep": {"result": "success"},
        "step-left": {"result": "success"},
        "step-right": {"result": "failure"},  # e.g. the runner was lost
        "step-join": {"result": "skipped"},
    }
    code, _ = jobs.part("finish", run_id, "--jobs", json.dumps(needs))
    assert code == 1
    right = jobs.manifest(run_id)["steps"]["right"]
    assert right["status"] == "failed"
    assert right["reason"] == "its job failure without recording a result"


def test_a_cached_re_plan_decides_every_step_and_starts_no_step_job(
    tmp_path: Path, busybox_image: str
) -> None:
    jobs = Jobs(tmp_path / "jobs")
    first = sluice("run", "diamond", repo=jobs.clone(), process=True)
    assert first.returncode == 0, first.stderr
    git(jobs.root / "job1", "push", "-q", "origin", "sluice-results")
    _, decisions = plan(jobs)
    assert decisions == {"prep": "cached", "left": "cached", "right": "cached", "join": "cached"}


GATED = """
name: gated
defaults: {image: "sluice-test/busybox:1"}
steps:
  - name: train
    run: echo model > /sluice/outputs/model.txt
  - name: deploy
    needs: [train]
    approval: true
    environment: production
    run: cat /sluice/inputs/train/model.txt
"""


def test_an_approval_step_in_an_environment_is_approved_by_its_job_and_says_who(
    tmp_path: Path, busybox_image: str, github: Any
) -> None:
    github.status = 200
    github.reply = [
        {
            "state": "approved",
            "environments": [{"name": "production"}],
            "user": {"login": "octo-reviewer"},
            "comment": "ship it",
        }
    ]
    jobs = Jobs(tmp_path / "jobs")
    (jobs.repo / "pipelines" / "gated.yaml").write_text(GATED)
    git(jobs.repo, "add", "-A")
    git(jobs.repo, "commit", "-q", "-m", "gated")
    git(jobs.repo, "push", "-q", "origin", "main")
    event = dispatch_event(jobs.root)
    code, out = jobs.part(
        "plan", "gated", "--event-name", "workflow_dispatch", "--event-path", str(event)
    )
    run_id = out["run-id"]
    assert json.loads(out["steps"]) == {"train": "run", "deploy": "run"}
    assert jobs.part("step", run_id, "train")[0] == 0
    actions = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_TOKEN": "t0ken",
        "GITHUB_REPOSITORY": "octo/models",
        "GITHUB_RUN_ID": "4242",
        "GITHUB_API_URL": github.url,
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_JOB": "step-deploy",
        "RUNNER_NAME": "runner-7",
    }
    code, out = jobs.part("step", run_id, "deploy", env=actions)
    assert code == 0 and out["status"] == "succeeded"
    assert github.requests[-1].method == "GET"
    assert github.requests[-1].path == "/repos/octo/models/actions/runs/4242/approvals"
    recorded = jobs.manifest(run_id)
    (approval,) = recorded["approvals"]
    assert approval["step"] == "deploy" and approval["by"] == "octo-reviewer"
    assert approval["environment"] == "production"
    assert recorded["steps"]["deploy"]["job"] == {
        "job": "step-deploy",
        "runner": "runner-7",
        "url": "https://github.com/octo/models/actions/runs/4242",
    }


def test_an_approval_step_without_an_environment_pauses_for_sluice_approve(
    tmp_path: Path, busybox_image: str
) -> None:
    jobs = Jobs(tmp_path / "jobs")
    (jobs.repo / "pipelines" / "gated.yaml").write_text(
        GATED.replace("    environment: production\n", "")
    )
    git(jobs.repo, "add", "-A")
    git(jobs.repo, "commit", "-q", "-m", "gated")
    git(jobs.repo, "push", "-q", "origin", "main")
    event = dispatch_event(jobs.root)
    _, out = jobs.part(
        "plan", "gated", "--event-name", "workflow_dispatch", "--event-path", str(event)
    )
    run_id = out["run-id"]
    jobs.part("step", run_id, "train")
    code, out = jobs.part("step", run_id, "deploy")
    assert code == 0 and out["status"] == "waiting_approval"
    needs = {"step-train": {"result": "success"}, "step-deploy": {"result": "success"}}
    code, out = jobs.part("finish", run_id, "--jobs", json.dumps(needs))
    assert code == 0 and out["status"] == "waiting_approval"
    # approved later, on another runner: the rest runs there, as in single-runner mode
    code, _ = jobs.part("approve", run_id, "--by", "alice")
    assert code == 0
    recorded = jobs.manifest(run_id)
    assert recorded["status"] == "succeeded"
    assert recorded["steps"]["deploy"]["status"] == "succeeded"


def test_a_schedule_plans_each_cron_slot_exactly_once_across_runners(
    tmp_path: Path, busybox_image: str
) -> None:
    jobs = Jobs(tmp_path / "jobs")
    text = (jobs.repo / "pipelines" / "diamond.yaml").read_text()
    cron = 'triggers:\n  - cron: {schedule: "0 2 * * *"}\n'
    (jobs.repo / "pipelines" / "diamond.yaml").write_text(cron + text)
    git(jobs.repo, "commit", "-qam", "nightly")
    git(jobs.repo, "push", "-q", "origin", "main")
    event = jobs.root / "schedule.json"
    event.write_text(json.dumps({"schedule": "*/15 * * * *"}))
    argv = ["plan", "diamond", "--event-name", "schedule", "--event-path", str(event)]
    now = ["--now", "2026-11-25T02:10:00Z"]
    with ThreadPoolExecutor(3) as pool:  # three workflow runs of one tick, on three runners
        planned = list(pool.map(lambda _: jobs.part(*argv, *now)[1], range(3)))
    run_ids = [out["run-id"] for out in planned if out["run-id"]]
    assert len(run_ids) == 1, planned
    manifest = jobs.manifest(run_ids[0])
    assert manifest["trigger"]["kind"] == "cron"
    assert manifest["trigger"]["scheduled_for"].startswith("2026-11-25T02:00:00")
    later = jobs.part(*argv, "--now", "2026-11-25T02:40:00Z")[1]
    assert later["run-id"] == "" and later["steps"] == "{}"
