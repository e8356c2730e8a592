"""The workflow emulator (tests/ghemu) itself: GitHub's expression semantics, needs/if/outputs,
runner pools, Docker actions run with the runner's conventions, environments, cancellation,
timeouts, and the loopback image registry."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import BUSYBOX, git, make_repo, poll
from ghemu import (
    Decision,
    Evaluator,
    ExpressionError,
    MappedAction,
    Options,
    RunRecord,
    Status,
    WorkflowRun,
    max_overlap,
    parse,
    parse_file_commands,
)
from ghemu.expressions import split_template
from ghemu.registry import Registry

CHECKOUT = "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683"
NEEDS = {
    "plan": {"result": "success", "outputs": {"steps": '{"train": "run", "eval": "cached"}'}},
    "prep": {"result": "skipped", "outputs": {}},
}


# --- expressions, by GitHub's own evaluator ---------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "needs", "expected"),
    [
        ("fromJSON(needs.plan.outputs.steps)['train'] == 'run'", NEEDS, True),
        ("fromJSON(needs.plan.outputs.steps)['eval'] == 'run'", NEEDS, False),
        ("fromJSON(needs.plan.outputs.steps)['nope'] == 'run'", NEEDS, False),
        ("contains(needs.*.result, 'failure')", NEEDS, False),
        ("contains(needs.*.result, 'failure')", {**NEEDS, "x": {"result": "failure"}}, True),
        ("contains(needs.*.result, 'skipped')", NEEDS, True),
        ("needs.plan.outputs.run-id != ''", NEEDS, False),  # missing is null, == ''
        ("'RUN' == 'run'", NEEDS, True),  # GitHub compares strings ignoring case
        ("needs.plan.result == 'success' && 1 == '1'", NEEDS, True),
    ],
)
def test_expressions_follow_github_semantics(
    gh_evaluator: Evaluator, expr: str, needs: dict[str, Any], expected: bool
) -> None:
    assert gh_evaluator.evaluate(expr, {"needs": needs}).value is expected


def test_to_json_is_github_s_pretty_json_and_templates_fill_strings(
    gh_evaluator: Evaluator,
) -> None:
    text = gh_evaluator.template("${{ toJSON(needs) }}", {"needs": {"a": {"result": "success"}}})
    assert text == '{\n  "a": {\n    "result": "success"\n  }\n}'
    contexts = {"github": {"run_id": "7"}, "needs": {}}
    assert gh_evaluator.template("id-${{ github.run_id }}-${{ '}}' }}", contexts) == "id-7-}}"
    assert gh_evaluator.template(True, {}) == "true" and gh_evaluator.template(5, {}) == "5"
    assert split_template("a ${{ x }} b") == [("a ", None), ("", "x"), (" b", None)]
    with pytest.raises(ExpressionError, match="mapping was not expected"):
        gh_evaluator.template("${{ needs }}", {"needs": {}})
    with pytest.raises(ExpressionError, match="Unrecognized named-value: 'nope'"):
        gh_evaluator.evaluate("nope.x", {})


@pytest.mark.parametrize(
    ("condition", "status", "expected"),
    [
        (None, Status(), True),
        (None, Status(success=False, failure=True), False),
        ("always()", Status(success=False, cancelled=True), True),
        ("${{ always() }}", Status(success=False, failure=True), True),
        ("needs.prep.result == 'skipped'", Status(success=False), False),  # success() && (...)
        ("!cancelled() && needs.prep.result == 'skipped'", Status(success=False), True),
        ("!cancelled() && true", Status(success=False, cancelled=True), False),
        ("failure()", Status(success=False, failure=True), True),
        ("failure()", Status(), False),
        ("success() || failure()", Status(success=False, cancelled=True), False),
    ],
)
def test_conditions_wrap_success_unless_they_use_a_status_function(
    gh_evaluator: Evaluator, condition: str | None, status: Status, expected: bool
) -> None:
    assert gh_evaluator.condition(condition, {"needs": NEEDS}, status) is expected


def test_file_commands_read_both_forms() -> None:
    text = "a=1\nb<<ghadelimiter_x\nline=1\n\nc<<d\nghadelimiter_x\nd=\ne=x=y\n"
    assert parse_file_commands(text) == {"a": "1", "b": "line=1\n\nc<<d", "d": "", "e": "x=y"}
    with pytest.raises(ValueError, match="never ends"):
        parse_file_commands("a<<EOF\nno end\n")


# --- workflows run by the emulator -----------------------------------------------------------


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    make_repo(tmp_path, files={"README.md": "hello\n"}, origin=True)
    return tmp_path / "origin.git"


def _sync(tmp_path: Path) -> Path:
    """A folder the test's own steps use to meet (the jobs share nothing else)."""
    sync = tmp_path / "sync"
    sync.mkdir(mode=0o777)
    os.chmod(sync, 0o777)
    return sync


def _run(workflow: str, gh_evaluator: Evaluator, origin: Path, **options: Any) -> WorkflowRun:
    opts = Options(origin=origin, work=origin.parent / "runners", **options)
    return WorkflowRun(parse(textwrap.dedent(workflow)), gh_evaluator, opts)


MEET = """\
          touch "${{ vars.SYNC }}/$JOB_NAME"
          for _ in $(seq 1 400); do [ -e "${{ vars.SYNC }}/$OTHER" ] && exit 0; sleep 0.05; done
          exit 1  # the other job never ran alongside
"""

GRAPH = f"""\
name: selftest
on: workflow_dispatch
env: {{GREETING: hi}}
jobs:
  plan:
    runs-on: ubuntu-latest
    outputs:
      steps: ${{{{ steps.p.outputs.steps }}}}
      note: ${{{{ steps.p.outputs.note }}}}
    steps:
      - uses: {CHECKOUT}
        with: {{fetch-depth: 0, persist-credentials: false}}
      - id: p
        run: |
          test -f README.md && test "$GREETING" = hi
          test -z "$(git config --get-regexp extraheader || true)"
          echo 'steps={{"a": "run", "b": "run", "c": "cached"}}' >> "$GITHUB_OUTPUT"
          printf 'note<<EOF\\nline1\\nline2\\nEOF\\n' >> "$GITHUB_OUTPUT"
          echo "# planned" >> "$GITHUB_STEP_SUMMARY"
  a:
    needs: plan
    if: fromJSON(needs.plan.outputs.steps)['a'] == 'run'
    runs-on: [self-hosted, pair]
    outputs: {{who: "${{{{ steps.m.outputs.who }}}}"}}
    env: {{JOB_NAME: a, OTHER: b}}
    steps:
      - uses: {CHECKOUT}
      - run: |  # persist-credentials (true by default) keeps the token as git's auth header
          git config --get http.https://github.com/.extraheader | grep -q "^AUTHORIZATION: basic "
{MEET}
      - id: m
        run: echo "who=$RUNNER_NAME" >> "$GITHUB_OUTPUT"
  b:
    needs: [plan]
    if: ${{{{ fromJSON(needs.plan.outputs.steps)['b'] == 'run' }}}}
    runs-on: [pair, self-hosted]
    env: {{JOB_NAME: b, OTHER: a}}
    steps:
      - run: |
{MEET}
  c:
    needs: plan
    if: fromJSON(needs.plan.outputs.steps)['c'] == 'run'
    runs-on: ubuntu-latest
    steps: [{{run: exit 1}}]
  d:
    needs: [a, c]
    runs-on: ubuntu-latest
    steps: [{{run: exit 1}}]
  e:
    needs: [a, c]
    if: ${{{{ !cancelled() && !contains(needs.*.result, 'failure') }}}}
    runs-on: ubuntu-latest
    steps:
      - run: test "${{{{ needs.a.outputs.who }}}}" != ""
  broken:
    needs: plan
    runs-on: ubuntu-latest
    steps:
      - run: exit 3
      - run: echo never
      - if: failure()
        run: echo "cleaned=yes" >> "$GITHUB_STEP_SUMMARY"
  after-broken:
    needs: broken
    runs-on: ubuntu-latest
    steps: [{{run: exit 1}}]
  on-failure:
    needs: after-broken
    if: failure()
    runs-on: ubuntu-latest
    steps: [{{run: "true"}}]
  final:
    needs: [plan, a, b, c, d, e, broken, after-broken, on-failure]
    if: always()
    runs-on: ubuntu-latest
    steps:
      - run: echo '${{{{ toJSON(needs.*.result) }}}}'
"""


@pytest.mark.docker
def test_needs_if_and_outputs_run_jobs_in_parallel_pools(
    gh_evaluator: Evaluator, origin: Path, tmp_path: Path
) -> None:
    sync = _sync(tmp_path)
    run = _run(
        GRAPH, gh_evaluator, origin, vars={"SYNC": str(sync)}, pools={("pair", "self-hosted"): 2}
    )
    record = run.run(timeout=120)
    assert record.results() == {
        "plan": "success",
        "a": "success",  # a and b met: they ran at once, on the pool's two runners
        "b": "success",
        "c": "skipped",
        "d": "skipped",  # a need skipped, no status function: skipped
        "e": "success",  # !cancelled(): runs after a skipped need
        "broken": "failure",
        "after-broken": "skipped",
        "on-failure": "success",  # failure() sees an ancestor's failure
        "final": "success",
    }, record.describe()
    assert record.result == "failure"
    plan = record.jobs["plan"]
    assert plan.outputs == {
        "steps": '{"a": "run", "b": "run", "c": "cached"}',
        "note": "line1\nline2",
    }
    assert plan.summary == "# planned\n"
    a, b = record.jobs["a"], record.jobs["b"]
    assert {a.runner, b.runner} == {"pair-self-hosted-1", "pair-self-hosted-2"}
    assert a.outputs == {"who": a.runner}
    assert max_overlap([a, b]) == 2
    assert [s.outcome for s in record.jobs["broken"].steps] == ["failure", "skipped", "success"]
    assert record.jobs["broken"].summary == "cleaned=yes\n"
    assert "skipped" in record.jobs["final"].text()
    folders = {job.log.parent for job in record.jobs.values() if job.log}
    assert len(folders) == len([j for j in record.jobs.values() if j.runner])  # own folders


POOLED = """\
name: pools
on: workflow_dispatch
jobs:
"""
CROWD = """\
  {name}:
    runs-on: {labels}
    steps:
      - run: |
          touch "${{{{ vars.SYNC }}}}/{name}"
          for _ in $(seq 1 10); do
            ls "${{{{ vars.SYNC }}}}" | grep -qv '^{name}$' && echo "saw=yes" >> "$GITHUB_OUTPUT"
            sleep 0.05
          done
          rm "${{{{ vars.SYNC }}}}/{name}"
"""


@pytest.mark.docker
def test_a_pool_never_runs_more_jobs_than_it_has_runners(
    gh_evaluator: Evaluator, origin: Path, tmp_path: Path
) -> None:
    jobs = [(f"solo{i}", "[self-hosted, gpu]") for i in range(3)]
    text = POOLED + "".join(CROWD.format(name=n, labels=labels) for n, labels in jobs)
    run = _run(text, gh_evaluator, origin, vars={"SYNC": str(_sync(tmp_path))}, pools={"x": 5})
    record = run.run(timeout=120)
    assert set(record.results().values()) == {"success"}, record.describe()
    gpu = list(record.jobs.values())
    assert max_overlap(gpu) == 1  # the default pool size is 1
    assert {job.runner for job in gpu} == {"gpu-self-hosted-1"}
    assert all(step.outputs == {} for job in gpu for step in job.steps)  # none saw another


DOCKER = f"""\
name: docker
on: push
jobs:
  act:
    runs-on: ubuntu-latest
    outputs: {{seen: "${{{{ steps.show.outputs.seen }}}}", mapped: "${{{{ steps.m.outputs.k }}}}"}}
    steps:
      - uses: {CHECKOUT}
      - uses: docker://{BUSYBOX}
        env: {{STEP_VAR: "${{{{ github.event_name }}}}"}}
        with:
          my-input: "x y"
          args: sh -c 'tr "\\0" "\\n" < /proc/1/environ | grep -E "^(INPUT_|GITHUB_|RUNNER_NAME|STEP_VAR|HOME)" | sort > seen.txt; pwd >> seen.txt; test -S /var/run/docker.sock && test -d /github/home'
      - id: m
        uses: OWNER/sluice@{"0" * 40}
        with: {{args: "sh -c 'echo k=$INPUT_COMMAND >> $GITHUB_OUTPUT'"}}
      - id: show
        run: |
          {{ echo "seen<<EOF"; cat seen.txt; echo EOF; }} >> "$GITHUB_OUTPUT"
"""


@pytest.mark.docker
def test_docker_actions_run_with_the_runner_s_conventions(
    gh_evaluator: Evaluator, origin: Path, busybox_image: str
) -> None:
    sha = git(origin, "rev-parse", "main")
    run = _run(
        DOCKER,
        gh_evaluator,
        origin,
        event_name="push",
        event={"after": sha},
        pull=False,
        actions={"OWNER/sluice": MappedAction(busybox_image, {"command": "trigger"})},
    )
    record = run.run(timeout=120)
    assert record.results() == {"act": "success"}, record.describe()
    seen = dict(
        line.split("=", 1)
        for line in record.jobs["act"].outputs["seen"].splitlines()
        if "=" in line
    )
    assert seen["INPUT_MY-INPUT"] == "x y"
    assert seen["STEP_VAR"] == "push"
    assert seen["GITHUB_WORKSPACE"] == "/github/workspace"
    assert seen["GITHUB_EVENT_NAME"] == "push" and seen["GITHUB_SHA"] == sha
    assert seen["GITHUB_EVENT_PATH"] == "/github/workflow/event.json"
    assert seen["GITHUB_OUTPUT"].startswith("/github/file_commands/set_output_")
    assert seen["GITHUB_STEP_SUMMARY"].startswith("/github/file_commands/step_summary_")
    assert seen["RUNNER_NAME"] == "ubuntu-latest-1" and seen["HOME"] == "/github/home"
    assert "INPUT_ARGS" not in seen
    assert record.jobs["act"].outputs["seen"].splitlines()[-1] == "/github/workspace"
    assert record.jobs["act"].outputs["mapped"] == "trigger"  # the action.yml default
    # the daemon's own times, for the benchmarks (its StartedAt may follow FinishedAt by a
    # millisecond for a container this short: only their presence is checked)
    times = record.jobs["act"].steps[1].container
    assert set(times) == {"started", "finished"}, record.describe()


LONG = f"""\
name: long
on: workflow_dispatch
jobs:
  boxed:
    runs-on: ubuntu-latest
    steps:
      - uses: docker://{BUSYBOX}
        with: {{args: "sh -c 'trap \\"exit 143\\" TERM; sleep 300 & wait'"}}
  shell:
    runs-on: [self-hosted, other]
    steps:
      - run: sleep 300
      - if: always()
        run: echo "tidied=yes" >> "$GITHUB_OUTPUT"
  next:
    needs: boxed
    runs-on: ubuntu-latest
    steps: [{{run: "true"}}]
  queued:
    needs: boxed
    if: ${{{{ !cancelled() }}}}
    runs-on: ubuntu-latest
    steps: [{{run: "true"}}]
  cleanup:
    needs: [boxed, shell, next]
    if: always()
    runs-on: ubuntu-latest
    steps:
      - run: echo '${{{{ needs.boxed.result }}}}' | grep -qx cancelled
"""


@pytest.mark.docker
def test_cancel_stops_running_jobs_cancels_waiting_ones_and_runs_always_jobs(
    gh_evaluator: Evaluator, origin: Path, docker_client: docker.DockerClient, busybox_image: str
) -> None:
    run = _run(LONG, gh_evaluator, origin, pull=False, grace=5).start()
    try:

        def running() -> list[Any]:
            return list(docker_client.containers.list(filters={"label": "ghemu.job=boxed"}))

        poll(running, 60, "the boxed job's container")
        run.wait_for(lambda r: r.jobs["shell"].result == "running", 60)
    finally:
        run.cancel()
    record = run.wait(120)
    assert record.results() == {
        "boxed": "cancelled",
        "shell": "cancelled",
        "next": "cancelled",
        "queued": "cancelled",
        "cleanup": "success",
    }, record.describe()
    assert record.result == "cancelled"
    assert record.jobs["boxed"].steps[0].exit_code == 143  # SIGTERM reached it, not SIGKILL
    assert [s.outcome for s in record.jobs["shell"].steps] == ["cancelled", "success"]
    assert record.jobs["shell"].steps[1].outputs == {"tidied": "yes"}
    assert record.jobs["next"].runner is None
    assert docker_client.containers.list(all=True, filters={"label": "ghemu.job=boxed"}) == []


GATED = """\
name: gated
on: workflow_dispatch
jobs:
  build:
    runs-on: ubuntu-latest
    steps: [{run: "true"}]
  deploy:
    needs: build
    environment: production
    runs-on: ubuntu-latest
    steps: [{run: "true"}]
  announce:
    needs: deploy
    runs-on: ubuntu-latest
    steps: [{run: "true"}]
"""


@pytest.mark.docker
@pytest.mark.parametrize("approve", [True, False])
def test_an_environment_waits_for_its_reviewer(
    gh_evaluator: Evaluator, origin: Path, approve: bool
) -> None:
    asked: list[tuple[str, str, str]] = []
    holder: list[WorkflowRun] = []

    def reviewer(job: str, environment: str) -> Decision:
        asked.append((job, environment, holder[0].result_of("build")))
        return Decision(approve, by="alice")

    run = _run(GATED, gh_evaluator, origin, reviewer=reviewer)
    holder.append(run)
    record = run.run(timeout=120)
    assert asked == [("deploy", "production", "success")]  # after its needs, once
    assert record.jobs["deploy"].decided_by == "alice"
    if approve:
        assert record.results() == dict.fromkeys(["build", "deploy", "announce"], "success")
    else:
        assert record.results() == {"build": "success", "deploy": "failure", "announce": "skipped"}
        assert record.jobs["deploy"].runner is None  # rejected before any runner took it


@pytest.mark.docker
def test_a_job_over_its_timeout_is_stopped_and_fails(gh_evaluator: Evaluator, origin: Path) -> None:
    text = """\
    name: t
    on: workflow_dispatch
    jobs:
      slow:
        runs-on: ubuntu-latest
        timeout-minutes: 1
        steps: [{run: sleep 300}]
      after:
        needs: slow
        if: always()
        runs-on: ubuntu-latest
        steps: [{run: "true"}]
    """
    record: RunRecord = _run(text, gh_evaluator, origin, minute=0.5, grace=1).run(timeout=120)
    assert record.results() == {"slow": "failure", "after": "success"}, record.describe()
    assert record.jobs["slow"].timed_out and record.result == "failure"
    assert "exceeded the maximum execution time" in record.jobs["slow"].text()


# --- the loopback registry: the published-image route -----------------------------------------


@pytest.mark.docker
@pytest.mark.slow
def test_the_engine_image_round_trips_through_the_loopback_registry(
    published_engine_image: str, image_registry: Registry
) -> None:
    name, _, digest = published_engine_image.partition("@")
    assert name == f"{image_registry.host}/sluice" and digest.startswith("sha256:")
    assert image_registry.manifest_digest("sluice", "test") == digest
    subprocess.run(["docker", "rmi", published_engine_image], capture_output=True)  # if pulled
    gone = subprocess.run(
        ["docker", "image", "inspect", published_engine_image], capture_output=True
    )
    assert gone.returncode != 0  # not here under that name: using it means pulling it
    pulled = subprocess.run(
        ["docker", "pull", "-q", published_engine_image], capture_output=True, text=True
    )
    assert pulled.returncode == 0, pulled.stderr
    version = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "sluice",
         published_engine_image, "--version"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert version.returncode == 0, version.stderr
    assert "sluice" in version.stdout.lower()
    inspected = json.loads(
        subprocess.run(
            ["docker", "image", "inspect", published_engine_image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert published_engine_image in inspected[0]["RepoDigests"]
