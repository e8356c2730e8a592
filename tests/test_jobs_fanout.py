"""Jobs mode for fan-out steps (issue 18): a fanned-out step is one GitHub job with a
`strategy.matrix` of the instances the plan says must run; each instance runs the engine with
its own name and records on the results branch; the group settles in the job that needs it,
or in `finish`.

The workflow is checked by GitHub's own parser and the other validators, its `if:`s and
matrix by GitHub's own expression evaluator (tests/ghemu); the parts run through the CLI.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import git, make_repo, sluice
from ghemu import Evaluator, Status
from test_jobs_cli import outputs, shape
from workflow_validators import validate_workflow

from engine.core import gh_fanout, gh_jobs
from engine.core.expand import expand
from engine.core.fanout import MAX_INSTANCES, MAX_NAME
from engine.core.parse import load_text
from engine.core.planner import Action, Decision
from engine.core.spec import ResolvedStep
from engine.errors import InvalidInput
from engine.run import roles
from engine.run.options import JobRole

# A retraining pipeline with a sweep: train over n_estimators x max_depth (2x2), select
# fans in, evaluate and deploy after it; score fans out over a list param.
RETRAIN = """
    name: retrain
    params:
      regions: [eu, us]
    defaults: {image: "sluice-test/busybox:1"}
    steps:
      - name: ingest
        run: echo ingested
      - name: validate-data
        needs: [ingest]
        run: echo valid
      - name: train
        needs: [ingest, validate-data]
        matrix:
          n_estimators: [50, 100]
          max_depth: [3, 5]
        fail_fast: true
        max_parallel: 2
        timeout: 10m
        retries: {limit: 1, backoff: 10s}
        run: echo ${{ matrix.n_estimators }} ${{ matrix.max_depth }}
      - name: select
        needs: [train]
        run: echo best
      - name: score
        needs: [select]
        foreach: "${{ params.regions }}"
        allow_failures: 1
        run: echo ${{ matrix.item }}
      - name: evaluate
        needs: [ingest, score]
        run: echo evaluated
      - name: deploy
        needs: [evaluate]
        run: echo deployed
    finally:
      - name: notify
        needs: [deploy]
        run: echo done
"""


def generate(tmp_path: Path, text: str = RETRAIN, name: str = "retrain") -> tuple[int, str, Path]:
    repo = make_repo(tmp_path, {f"{name}.yaml": text})
    done = sluice("workflow", "generate", "--jobs", repo=repo)
    return done.returncode, done.stdout + done.stderr, repo


def jobs_of(repo: Path, name: str = "retrain") -> dict[str, Any]:
    path = repo / ".github" / "workflows" / f"sluice-{name}.yml"
    data: dict[Any, Any] = yaml.safe_load(path.read_text())
    return data["jobs"]  # type: ignore[no-any-return]


# --- the workflow ---------------------------------------------------------------------------


def test_a_2x2_sweep_is_one_matrix_job_with_its_fail_fast_and_max_parallel(
    tmp_path: Path,
) -> None:
    code, out, repo = generate(tmp_path)
    assert code == 0, out
    jobs = jobs_of(repo)
    assert list(jobs) == [
        "plan",
        *(f"step-{s}" for s in ("ingest", "validate-data", "train", "select", "score")),
        "step-evaluate",
        "step-deploy",
        "finish",
    ]  # one job per step: instances are the matrix's, not jobs of their own
    assert jobs["plan"]["outputs"]["fanout"] == "${{ steps.plan.outputs.fanout }}"

    train = jobs["step-train"]
    assert train["name"] == "${{ matrix.instance }}"  # each instance's job shows its name
    assert train["strategy"] == {
        "matrix": {"instance": "${{ fromJSON(needs.plan.outputs.fanout)['train'] }}"},
        "fail-fast": True,
        "max-parallel": 2,
    }
    assert train["needs"] == ["plan", "step-ingest", "step-validate-data"]
    assert train["timeout-minutes"] == 2 * 10 + 1 + 20  # per instance: 2 attempts + backoff
    engine = train["steps"][-1]
    assert engine["with"] == {
        "command": "step",
        "run-id": "${{ needs.plan.outputs.run-id }}",
        "step": "${{ matrix.instance }}",
    }
    assert "outputs" not in train  # one value for all instances: they report on the branch

    score = jobs["step-score"]
    assert score["strategy"] == {
        "matrix": {"instance": "${{ fromJSON(needs.plan.outputs.fanout)['score'] }}"},
        "fail-fast": False,
    }
    # the fan-in starts whatever the matrix job's result (the engine decides from the
    # branch); a plain need that failed still holds a job back
    assert "needs.step-train.result" not in jobs["step-select"]["if"]
    assert "!contains(needs.*.result, 'failure')" not in jobs["step-select"]["if"]
    assert "needs.step-ingest.result != 'failure'" in jobs["step-evaluate"]["if"]
    assert "!contains(needs.*.result, 'failure')" in jobs["step-deploy"]["if"]
    assert jobs["finish"]["needs"] == [
        "plan",
        *(
            f"step-{s}"
            for s in ("ingest", "validate-data", "train", "select", "score", "evaluate", "deploy")
        ),
    ]


def test_the_sweep_workflow_passes_githubs_parser_and_the_validators(tmp_path: Path) -> None:
    code, out, repo = generate(tmp_path)
    assert code == 0, out
    assert validate_workflow(repo / ".github/workflows/sluice-retrain.yml") == []


def test_fail_fast_with_allowed_failures_leaves_githubs_off_and_says_why(tmp_path: Path) -> None:
    text = RETRAIN.replace("fail_fast: true", "fail_fast: true\n        allow_failures: 1")
    code, out, repo = generate(tmp_path, text)
    assert code == 0, out
    assert jobs_of(repo)["step-train"]["strategy"]["fail-fast"] is False
    written = (repo / ".github/workflows/sluice-retrain.yml").read_text()
    assert "fail-fast: false  # fail_fast with allow_failures" in written


def _contexts(steps: dict[str, str], fanout: dict[str, list[str]], results: dict[str, str]) -> Any:
    plan = {
        "result": "success",
        "outputs": {"run-id": "r1", "steps": json.dumps(steps), "fanout": json.dumps(fanout)},
    }
    return {
        "needs": {"plan": plan, **{j: {"result": r, "outputs": {}} for j, r in results.items()}}
    }


def test_githubs_evaluator_starts_the_fan_in_after_a_failed_instance_and_gives_the_matrix(
    tmp_path: Path, gh_evaluator: Evaluator
) -> None:
    code, out, repo = generate(tmp_path)
    assert code == 0, out
    jobs = jobs_of(repo)
    steps = {s: "run" for s in ("ingest", "validate-data", "train", "select", "score")}
    steps |= {"evaluate": "run", "deploy": "run"}
    fanout = {
        "train": ["train[n_estimators=50,max_depth=3]", "train[n_estimators=100,max_depth=5]"]
    }
    fanout["score"] = ["score[eu]", "score[us]"]
    failed = Status(success=False, failure=True)  # a need failed: GitHub's status functions

    # the matrix: the plan's instances of this step, in order
    matrix = jobs["step-train"]["strategy"]["matrix"]["instance"]
    value = gh_evaluator.evaluate(matrix[3:-2].strip(), _contexts(steps, fanout, {}))
    assert value.value == fanout["train"]

    # one instance of train failed: GitHub marks the matrix job failed; select still starts
    ctx = _contexts(steps, fanout, {"step-train": "failure"})
    assert gh_evaluator.condition(jobs["step-select"]["if"], ctx, failed) is True
    # ... but not when the plan took select from the cache, nor when the workflow is cancelled
    cached = _contexts({**steps, "select": "cached"}, fanout, {"step-train": "failure"})
    assert gh_evaluator.condition(jobs["step-select"]["if"], cached, failed) is False
    stopped = Status(success=False, failure=True, cancelled=True)
    assert gh_evaluator.condition(jobs["step-select"]["if"], ctx, stopped) is False

    # evaluate needs a plain step (ingest) and a fan-out (score): ingest's failure holds it
    both = {"step-ingest": "success", "step-score": "failure"}
    assert gh_evaluator.condition(
        jobs["step-evaluate"]["if"], _contexts(steps, fanout, both), failed
    )
    broken = {"step-ingest": "failure", "step-score": "success"}
    assert not gh_evaluator.condition(
        jobs["step-evaluate"]["if"], _contexts(steps, fanout, broken), failed
    )
    # a sweep the cache had whole: the plan says so, and its matrix job never starts
    assert not gh_evaluator.condition(
        jobs["step-train"]["if"],
        _contexts({**steps, "train": "cached"}, {"train": [], "score": []}, {}),
        Status(),
    )


def test_a_sweep_past_githubs_jobs_limit_is_refused_at_its_line(tmp_path: Path) -> None:
    values = ", ".join(str(i) for i in range(16))
    text = f"""
        name: wide
        defaults: {{image: x}}
        steps:
          - name: prep
            run: "true"
          - name: sweep
            needs: [prep]
            matrix:
              a: [{values}]
              b: [{values}]
            run: "true"
    """
    code, out, repo = generate(tmp_path, text, "wide")
    assert code == 2, out
    assert "pipelines/wide.yaml:9" in out and "steps.sweep.matrix" in out, out
    assert "259 GitHub jobs" in out and "sweep 256 instances" in out and "at most 256" in out
    assert "single" in out  # the way out: the single-job mode
    assert not (repo / ".github").exists()
    code, out, _ = generate(tmp_path / "fits", text.replace(f"b: [{values}]", "b: [0, 1]"), "wide")
    assert code == 0, out


def test_the_plan_checks_the_runs_own_sweep_against_the_limit(tmp_path: Path) -> None:
    loaded = load_text(textwrap.dedent(RETRAIN), "pipelines/retrain.yaml")
    jobs, counted = gh_fanout.run_jobs(expand(loaded, {"regions": ["eu", "us"]}).steps)
    assert (jobs, counted) == (2 + 5 + 4 + 2, [("train", 4), ("score", 2)])
    regions = [f"r{i}" for i in range(MAX_INSTANCES - 12)]  # 244 + 4 + 5 + 2 = 255
    gh_fanout.check_run(expand(loaded, {"regions": regions}).steps)
    with pytest.raises(InvalidInput, match=r"257 GitHub jobs .*score 246 instances.*at most 256"):
        gh_fanout.check_run(expand(loaded, {"regions": [*regions, "x", "y"]}).steps)


def test_the_fanout_output_at_githubs_most_jobs_fits_the_outputs_budget() -> None:
    """254 instances (256 jobs less plan and finish) of the longest names (MAX_NAME): the
    plan's output, and finish's toJSON(needs) holding it again, escaped."""
    loaded = load_text(textwrap.dedent(RETRAIN), "pipelines/retrain.yaml")
    main = [s for s in loaded.steps if not s.is_finally]
    bound = gh_fanout.output_bytes(main, loaded.pipeline.params)
    room = gh_fanout.MAX_JOBS - 2 - 5  # five plain steps
    longest = {"train": [], "score": ["s" * MAX_NAME] * room}
    written = json.dumps(longest, separators=(",", ":"))
    assert len(written) <= bound
    needs = json.dumps({"plan": {"outputs": {"fanout": written}}}, indent=2)
    assert 2 * bound < gh_jobs.OUTPUTS_BUDGET and len(needs) < gh_jobs.OUTPUTS_BUDGET
    assert gh_jobs.OUTPUTS_BUDGET < 128 * 1024  # an action input is one environment string


# --- which part takes which decision ----------------------------------------------------------


def _steps() -> dict[str, ResolvedStep]:
    loaded = load_text(textwrap.dedent(RETRAIN), "pipelines/retrain.yaml")
    return {s.name: s for s in expand(loaded, {"regions": ["eu", "us"]}).steps}


def test_every_part_settles_a_group_and_finish_fails_an_instance_its_matrix_job_left() -> None:
    steps = _steps()
    group = steps["train"]
    settle = Decision("train", Action.settle, "4 instances: 4 succeeded")
    for role in (JobRole("plan"), JobRole("step", step="select"), JobRole("finish")):
        assert roles.taken(role, settle, group) == settle

    name = "train[n_estimators=100,max_depth=5]"
    run = Decision(name, Action.run)
    assert roles.taken(JobRole("plan"), run, steps[name]) == roles.CACHE_ONLY
    assert roles.taken(JobRole("step", step=name), run, steps[name]) == run
    assert (
        roles.taken(JobRole("step", step="train[n_estimators=50,max_depth=3]"), run, steps[name])
        is None
    )
    finish = JobRole("finish", results={"train": "failure"})
    taken = roles.taken(finish, run, steps[name])
    assert isinstance(taken, Decision) and taken.action is Action.fail
    assert taken.reason == (
        "its matrix job (step-train) ended failure; this instance recorded no result"
    )
    taken = roles.taken(JobRole("finish"), run, steps[name])
    assert isinstance(taken, Decision) and taken.reason == "its matrix job (step-train) did not run"


# --- the parts through the CLI, with real Docker (as tests/test_jobs_cli.py) ------------------

SWEEP = """
name: sweep
params:
  regions: [eu, us]
defaults: {image: "sluice-test/busybox:1"}
steps:
  - name: prep
    run: echo data > /sluice/outputs/data.txt
  - name: train
    needs: [prep]
    matrix:
      lr: [1, 2]
      depth: [3, 4]
    allow_failures: 1
    run: |
      test ${{ matrix.lr }}x${{ matrix.depth }} != BROKEN || exit 3
      cat /sluice/inputs/prep/data.txt > /sluice/outputs/model.txt
      echo '{"score": '$(( ${{ matrix.lr }} * ${{ matrix.depth }} ))'}' > /sluice/outputs/metrics.json
  - name: select
    needs: [train]
    run: |
      cp /sluice/inputs/train/index.json /sluice/outputs/index.json
      ls /sluice/inputs/train > /sluice/outputs/folders.txt
  - name: score
    needs: [prep]
    foreach: "${{ params.regions }}"
    run: echo ${{ matrix.item }} > /sluice/outputs/region.txt
finally:
  - name: report
    needs: [select, score]
    cache: false
    run: echo reported
"""
TRAIN = [f"train[lr={lr},depth={depth}]" for lr in (1, 2) for depth in (3, 4)]


class Sweep:
    """A bare origin, a lasting store, and a fresh clone for every part (as GitHub runners)."""

    def __init__(self, root: Path, broken: str = "none") -> None:
        self.root = root
        store = root / "store"
        store.mkdir(parents=True)
        settings = {"sluice.yaml": f"artifacts: file://{store}\n"}
        text = SWEEP.replace("BROKEN", broken)
        self.repo = make_repo(root, {"sweep.yaml": text}, settings, origin=True)
        self.origin = root / "origin.git"
        self.count = 0

    def clone(self) -> Path:
        self.count += 1
        where = self.root / f"job{self.count}"
        git(self.root, "clone", "-q", str(self.origin), str(where))
        return where

    def part(
        self, *args: str, env: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        """One part in its own clone: exit code, its GITHUB_OUTPUT values, its stderr."""
        where = self.clone()
        out = where.parent / f"{where.name}.out"
        out.touch()
        done = sluice(
            *args, repo=where, process=True, env={"GITHUB_OUTPUT": str(out), **(env or {})}
        )
        return done.returncode, outputs(out.read_text()), done.stderr

    def plan(self, params: dict[str, Any] | None = None) -> tuple[str, dict[str, Any], Any]:
        event = self.root / "event.json"
        inputs = {"params": json.dumps(params or {})}
        event.write_text(json.dumps({"inputs": inputs, "ref": "refs/heads/main"}))
        argv = ["plan", "sweep", "--event-name", "workflow_dispatch", "--event-path", str(event)]
        code, out, err = self.part(*argv)
        assert code == 0, err
        return out["run-id"], json.loads(out["steps"]), json.loads(out["fanout"])

    def steps(
        self, run_id: str, names: list[str], env: dict[str, str] | None = None
    ) -> dict[str, int]:
        """Step jobs at once, each in its own clone (a matrix's instances, or parallel jobs)."""
        with ThreadPoolExecutor(len(names)) as pool:
            done = list(pool.map(lambda n: self.part("step", run_id, n, env=env), names))
        for code, _, err in done:
            assert code in (0, 1), err
        return {name: code for name, (code, _, _) in zip(names, done, strict=True)}

    def finish(self, run_id: str, results: dict[str, str]) -> tuple[int, dict[str, str]]:
        needs = {"plan": {"result": "success"}}
        needs |= {f"step-{job}": {"result": result} for job, result in results.items()}
        code, out, err = self.part("finish", run_id, "--jobs", json.dumps(needs))
        assert code in (0, 1), err
        return code, out

    def manifest(self, run_id: str) -> dict[str, Any]:
        done = sluice("show", run_id, "--json", "--fetch", repo=self.clone(), process=True)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def branch_files(self, run_id: str) -> list[str]:
        listed = subprocess.run(
            ["git", "ls-tree", "-r", "--name-only", "sluice-results", f"runs/sweep/{run_id}/"],
            cwd=self.origin,
            capture_output=True,
            text=True,
            check=True,
        )
        return [line.rsplit("/", 1)[-1] for line in listed.stdout.splitlines()]

    def single_runner(self) -> dict[str, Any]:
        done = sluice("run", "sweep", "--json", repo=self.clone(), process=True)
        assert done.returncode in (0, 1), done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]


ALL_OK = {"prep": "success", "train": "success", "select": "success", "score": "success"}


@pytest.mark.docker
def test_a_sweep_runs_one_job_per_instance_and_makes_the_single_runner_record(
    tmp_path: Path, busybox_image: str
) -> None:
    jobs = Sweep(tmp_path / "jobs")
    run_id, steps, fanout = jobs.plan()
    assert steps == {"prep": "run", "train": "run", "select": "run", "score": "run"}
    assert fanout == {"train": TRAIN, "score": ["score[eu]", "score[us]"]}

    code, _, err = jobs.part("step", run_id, "train")  # the group itself: not a job's to run
    assert code == 2, err
    assert "'train' is a fan-out of 4 instances" in err
    assert "pass an instance's name, e.g. 'train[lr=1,depth=3]'" in err
    code, _, err = jobs.part("step", run_id, "train[lr=9,depth=9]")  # no such instance
    assert code == 2 and f"instances of train: {', '.join(TRAIN)}" in err, err

    assert jobs.steps(run_id, ["prep"]) == {"prep": 0}
    sweep = fanout["train"] + fanout["score"]
    assert jobs.steps(run_id, sweep) == dict.fromkeys(sweep, 0)
    # one record file per instance on the branch, named as the instance
    on_branch = jobs.branch_files(run_id)
    assert {f"{name}.json" for name in sweep} <= set(on_branch), on_branch

    assert jobs.steps(run_id, ["select"]) == {"select": 0}  # settles train, then fans in
    code, out = jobs.finish(run_id, ALL_OK)
    assert code == 0 and out["status"] == "succeeded"
    recorded = jobs.manifest(run_id)
    train = recorded["steps"]["train"]
    assert train["status"] == "succeeded" and train["instances"] == TRAIN
    assert recorded["steps"][TRAIN[3]]["matrix"] == {"lr": 2, "depth": 4}
    assert recorded["steps"][TRAIN[3]]["metrics"] == {"score": 8}
    assert shape(recorded) == shape(Sweep(tmp_path / "single").single_runner())


@pytest.mark.docker
def test_an_allowed_failure_fails_the_matrix_job_and_the_fan_in_still_runs(
    tmp_path: Path, busybox_image: str
) -> None:
    jobs = Sweep(tmp_path / "jobs", broken="2x4")
    run_id, _, fanout = jobs.plan()
    jobs.steps(run_id, ["prep"])
    codes = jobs.steps(run_id, fanout["train"])
    assert codes == {**dict.fromkeys(TRAIN, 0), TRAIN[3]: 1}  # GitHub: the matrix job failed
    jobs.steps(run_id, fanout["score"])
    # select's job starts although step-train failed (its `if:` does not look): the engine
    # settles train from the branch, within allow_failures, and runs select
    assert jobs.steps(run_id, ["select"]) == {"select": 0}
    code, out = jobs.finish(run_id, {**ALL_OK, "train": "failure"})
    recorded = jobs.manifest(run_id)
    assert recorded["steps"]["train"]["status"] == "succeeded"
    assert recorded["steps"][TRAIN[3]]["status"] == "failed"
    assert recorded["steps"]["select"]["status"] == "succeeded"
    single = Sweep(tmp_path / "single", broken="2x4").single_runner()
    assert shape(recorded) == shape(single)
    assert (code, out["status"]) == (
        (0, "succeeded") if single["status"] == "succeeded" else (1, single["status"])
    )


@pytest.mark.docker
def test_an_instance_its_matrix_job_left_unrecorded_fails_and_the_group_settles(
    tmp_path: Path, busybox_image: str
) -> None:
    jobs = Sweep(tmp_path / "jobs")
    run_id, _, fanout = jobs.plan()
    jobs.steps(run_id, ["prep"])
    jobs.steps(run_id, fanout["train"][:3] + fanout["score"])  # the 4th one's runner was lost
    # in GitHub, select starts only once every instance job ended: the lost one failed
    actions = {"GITHUB_ACTIONS": "true"}
    assert jobs.steps(run_id, ["select"], env=actions) == {"select": 0}
    jobs.finish(run_id, {**ALL_OK, "train": "failure"})
    recorded = jobs.manifest(run_id)
    lost = recorded["steps"][TRAIN[3]]
    assert lost["status"] == "failed"
    assert (
        lost["reason"]
        == "its matrix job (step-train) ended failure; this instance recorded no result"
    )
    assert recorded["steps"]["train"]["status"] == "succeeded"  # 1 failure allowed
    assert recorded["steps"]["select"]["status"] == "succeeded"


@pytest.mark.docker
def test_a_re_plan_lists_only_the_instances_the_cache_does_not_have(
    tmp_path: Path, busybox_image: str
) -> None:
    jobs = Sweep(tmp_path / "jobs")
    first = jobs.clone()
    done = sluice("run", "sweep", repo=first, process=True)
    assert done.returncode == 0, done.stderr
    git(first, "push", "-q", "origin", "sluice-results")
    run_id, steps, fanout = jobs.plan({"regions": ["eu", "us", "asia"]})
    assert fanout == {"train": [], "score": ["score[asia]"]}
    assert steps == {"prep": "cached", "train": "cached", "select": "cached", "score": "run"}
    assert jobs.steps(run_id, ["score[asia]"]) == {"score[asia]": 0}
    code, out = jobs.finish(run_id, {"score": "success"})
    assert code == 0 and out["status"] == "succeeded"
    score = jobs.manifest(run_id)["steps"]["score"]
    assert score["status"] == "succeeded" and score["instances"] == [
        "score[eu]",
        "score[us]",
        "score[asia]",
    ]


@pytest.mark.docker
def test_githubs_fail_fast_cancelling_a_sweep_fails_it_and_does_not_cancel_the_run(
    tmp_path: Path, busybox_image: str
) -> None:
    jobs = Sweep(tmp_path / "jobs", broken="1x4")
    run_id, _, fanout = jobs.plan()
    jobs.steps(run_id, ["prep"])
    # one instance succeeded, one failed; GitHub cancelled the two others before they recorded
    assert jobs.steps(run_id, [TRAIN[0], TRAIN[1]]) == {TRAIN[0]: 0, TRAIN[1]: 1}
    jobs.steps(run_id, fanout["score"])
    code, out = jobs.finish(
        run_id, {"prep": "success", "train": "cancelled", "select": "success", "score": "success"}
    )
    assert code == 1 and out["status"] == "failed"  # not cancelled: the sweep failed
    recorded = jobs.manifest(run_id)
    assert recorded["status"] == "failed"
    for name in TRAIN[2:]:
        assert recorded["steps"][name]["status"] == "failed"
        assert recorded["steps"][name]["reason"] == (
            "its matrix job (step-train) ended cancelled; this instance recorded no result"
        )
    assert recorded["steps"]["train"]["status"] == "failed"  # 3 failed, 1 allowed
    assert recorded["steps"]["select"]["status"] == "upstream_failed"
    assert recorded["steps"]["report"]["status"] == "succeeded"  # finally: whatever happened
