"""Issue 13 §4 and §5: a run records the GitHub run that made it, `show` and the job summary
link back to it, and a store that ends with the job is warned about."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_repo, sluice

from engine.adapters.github_ci import ci_context, ephemeral_store, manifest_url, run_url

RUNNER = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "acme/churn",
    "GITHUB_RUN_ID": "9876543210",
    "GITHUB_RUN_ATTEMPT": "2",
    "GITHUB_WORKFLOW": "Sluice",
    "GITHUB_JOB": "sluice",
    "GITHUB_ACTOR": "octocat",
    "GITHUB_SHA": "a" * 40,
    "GITHUB_REF": "refs/heads/main",
    "GITHUB_EVENT_NAME": "workflow_dispatch",
}
RUN_URL = "https://github.com/acme/churn/actions/runs/9876543210/attempts/2"
OFF_RUNNER = dict.fromkeys(RUNNER)  # unset: the tests may themselves run inside Actions


def quick(image: str) -> str:
    return f"""
    name: p
    steps:
      - name: only
        image: {image}
        run: echo working
    """


@pytest.mark.docker
def test_a_run_on_a_runner_records_its_ci_run_and_links_it(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(tmp_path, {"p.yaml": quick(busybox_image)}, commit="p")
    summary = tmp_path / "summary.md"
    env = {**RUNNER, "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_WORKSPACE": str(repo)}

    done = sluice("run", "p", "--json", repo=repo, env=env)

    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    assert manifest["ci"] == {  # was None: nothing led back to the Actions run
        "provider": "github",
        "server_url": "https://github.com",
        "repository": "acme/churn",
        "run_id": "9876543210",
        "run_attempt": "2",
        "run_url": RUN_URL,
        "workflow": "Sluice",
        "job": "sluice",
        "actor": "octocat",
        "sha": "a" * 40,
        "ref": "refs/heads/main",
        "event_name": "workflow_dispatch",
    }
    shown = sluice("show", manifest["run_id"], repo=repo, env=OFF_RUNNER)
    assert f"CI run {RUN_URL}" in shown.stdout, shown.stdout
    # §4: the default store is in the workspace: one warning, one summary line, per command
    warnings = [line for line in done.stderr.splitlines() if line.startswith("::warning")]
    assert len(warnings) == 1 and "artifacts: s3://bucket/prefix" in warnings[0]
    text = summary.read_text()
    assert text.count("Sluice warning") == 1 and "retry" in text


def test_outside_a_runner_ci_is_null_and_nothing_is_warned(tmp_path: Path) -> None:
    assert ci_context({k: v for k, v in RUNNER.items() if k != "GITHUB_ACTIONS"}) is None
    assert ephemeral_store("file://.sluice/artifacts", tmp_path, {}) is None
    done = sluice("runs", repo=make_repo(tmp_path, {}, {"x": "x"}, commit="x"), env=OFF_RUNNER)
    assert "::warning" not in done.stderr


def test_untrusted_runner_values_are_checked_and_bounded() -> None:
    hostile = {
        **RUNNER,
        "GITHUB_SERVER_URL": "javascript:alert(1)//",
        "GITHUB_REPOSITORY": "a/b) [x](https://evil",
        "GITHUB_RUN_ID": "12; rm",
        "GITHUB_ACTOR": "x\n::error::forged" + "y" * 500,
        "GITHUB_SHA": "not-a-sha",
        "GITHUB_EVENT_NAME": "Push Event",
    }
    ci = ci_context(hostile)
    assert ci is not None
    assert ci["server_url"] is ci["repository"] is ci["run_id"] is ci["run_url"] is None
    assert ci["sha"] is None and ci["event_name"] is None
    assert "\n" not in ci["actor"] and len(ci["actor"]) <= 200
    # a manifest read back from the results branch is checked again before it becomes a link
    forged = {"server_url": "https://github.com", "repository": "a/b", "run_id": "1)](x"}
    assert run_url(forged) is None
    assert manifest_url(
        {"server_url": "https://github.com", "repository": "a/b"}, "r(1)", "p", "1"
    ) == ("https://github.com/a/b/blob/r%281%29/runs/p/1/manifest.json")


def test_the_job_summary_links_the_manifest_on_the_results_branch() -> None:
    from engine.adapters.github_env import summary
    from engine.core.manifest import RunManifest

    manifest = RunManifest(
        run_id="20261124T100000Z-a1b2c3",
        pipeline="churn",
        pipeline_file="pipelines/churn.yaml",
        pipeline_sha256="0" * 64,
        started_at="2026-11-24T10:00:00.000Z",
        ci=ci_context(RUNNER),
    )
    text = summary([manifest], {}, {}, results_branch="my-results")
    blob = "https://github.com/acme/churn/blob/my-results/runs/churn/20261124T100000Z-a1b2c3/manifest.json"
    assert f"[manifest](<{blob}>)" in text
    assert f"[CI run](<{RUN_URL}>)" in text


def test_a_store_outside_the_workspace_or_remote_is_not_warned_about(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(repo)}
    assert ephemeral_store("s3://bucket/sluice", repo, env) is None
    assert ephemeral_store(f"file://{tmp_path}/cache", repo, env) is None
    assert ephemeral_store("file://.sluice/artifacts", repo, env) is not None
    assert ephemeral_store("store", repo, env) is not None


@pytest.mark.docker
def test_an_approval_decided_in_another_ci_run_records_that_run(
    tmp_path: Path, busybox_image: str
) -> None:
    gated = f"""
    name: g
    steps:
      - name: build
        image: {busybox_image}
        run: echo built
      - name: deploy
        image: {busybox_image}
        needs: [build]
        approval: true
        run: echo deployed
    """
    repo = make_repo(tmp_path, {"g.yaml": gated}, commit="g")
    paused = sluice("run", "g", "--json", repo=repo, env=OFF_RUNNER)
    assert paused.returncode == 0, paused.stderr
    run = json.loads(paused.stdout)
    assert run["status"] == "waiting_approval" and run["ci"] is None  # not made on a runner

    approver = {**RUNNER, "GITHUB_RUN_ID": "555", "GITHUB_RUN_ATTEMPT": "1"}
    done = sluice("approve", run["run_id"], repo=repo, env=approver)

    assert done.returncode == 0, done.stderr
    approved = json.loads(sluice("show", run["run_id"], "--json", repo=repo, env=OFF_RUNNER).stdout)
    assert approved["status"] == "succeeded" and approved["ci"] is None  # the run's origin
    [decision] = approved["approvals"]
    assert decision["ci_run"] == "https://github.com/acme/churn/actions/runs/555/attempts/1"
