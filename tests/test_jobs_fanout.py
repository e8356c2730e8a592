"""Jobs mode for fan-out steps (issue 18): a fanned-out step is one GitHub job with a
`strategy.matrix` of the instances the plan says must run; each instance runs the engine with
its own name and records on the results branch; the group settles in the job that needs it,
or in `finish`.

The workflow is checked by GitHub's own parser and the other validators, its `if:`s and
matrix by GitHub's own expression evaluator (tests/ghemu); the parts run through the CLI.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import make_repo, sluice
from ghemu import Evaluator, Status
from workflow_validators import validate_workflow

from engine.core import gh_fanout
from engine.core.expand import expand
from engine.core.fanout import MAX_INSTANCES
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
