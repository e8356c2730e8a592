"""examples/retraining end to end: the scenario README.md walks through, checked from the record.

The scenario script checks each stage as it goes; this test then reads the results branch
of its scratch repository through the CLI (`sluice runs --json`, `sluice show`) and asserts
every outcome again: statuses, the sweep (`train` fanned out over n_estimators x max_depth)
and the instance `select` kept, cached steps, the gate's decisions, the drift-started run,
the suppressed second signal, and the rollback/promote pair.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import sluice
from pr_api import pr_event

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "retraining"
RETRAIN_STEPS = ["ingest", "validate-data", "train", "select", "evaluate", "deploy", "notify"]
# the sweep of pipelines/retrain.yaml's defaults: n_estimators_grid x max_depth_grid
SWEEP = [
    "train[n_estimators=50,max_depth=2]",
    "train[n_estimators=50,max_depth=8]",
    "train[n_estimators=100,max_depth=2]",
    "train[n_estimators=100,max_depth=8]",
]


def cli(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return sluice(*args, repo=repo)


def test_the_example_validates_and_its_workflow_is_up_to_date() -> None:
    valid = cli(EXAMPLE, "validate", "--json")
    assert valid.returncode == 0, valid.stdout + valid.stderr
    check = cli(EXAMPLE, "workflow", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    graph = json.loads(cli(EXAMPLE, "graph", "retrain", "--format", "json").stdout)
    assert graph["levels"][:6] == [
        ["ingest"],
        ["validate-data"],
        ["train"],  # one node for the sweep (`sluice graph --expand` draws its instances)
        ["select"],
        ["evaluate"],
        ["deploy"],
    ]


@pytest.fixture(scope="module")
def scenario(
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: docker.DockerClient,
    engine_image: str,
) -> Iterator[dict[str, Any]]:
    """Run examples/retraining/scenario.sh once; its run ids and scratch repository."""
    workdir = tmp_path_factory.mktemp("retraining") / "scenario"
    env = {
        **os.environ,
        "SLUICE_ENGINE_IMAGE": engine_image,
        # the scenario calls `sluice`: this interpreter's, with the engine under test
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        ["bash", str(EXAMPLE / "scenario.sh"), "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    ids: dict[str, Any] = json.loads((workdir / "scenario.json").read_text())
    ids["workdir"], ids["stdout"] = workdir, done.stdout
    ids["repo"] = Path(ids["repo"])
    ids["runs"] = {m["run_id"]: m for m in runs(ids["repo"])}
    yield ids
    left = docker_client.containers.list(all=True, filters={"label": "sluice.run-id"}, sparse=True)
    ours = [c for c in left if (c.attrs.get("Labels") or {}).get("sluice.run-id") in ids["runs"]]
    assert not ours, f"the scenario left containers behind: {ours}"


def runs(repo: Path, pipeline: str | None = None) -> list[dict[str, Any]]:
    args = ["runs", "--limit", "100", "--json"] + (["--pipeline", pipeline] if pipeline else [])
    listed = cli(repo, *args)
    assert listed.returncode == 0, listed.stderr
    found: list[dict[str, Any]] = json.loads(listed.stdout)
    return found


def show(repo: Path, run_id: str) -> dict[str, Any]:
    shown = cli(repo, "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    manifest: dict[str, Any] = json.loads(shown.stdout)
    return manifest


def statuses(manifest: dict[str, Any]) -> dict[str, str]:
    """The status of each step of the pipeline file (a fanned-out step: its group's)."""
    return {
        name: step["status"]
        for name, step in manifest["steps"].items()
        if not step.get("instance_of")
    }


def sweep(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The records of `train`'s instances, by name, in the group's order."""
    group = manifest["steps"]["train"]
    assert not group.get("instance_of") and group["attempts"] == []  # a group runs nothing
    return {name: manifest["steps"][name] for name in group["instances"]}


def fan_in_index(repo: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """train/index.json, what `select` read: the group's output, fetched from the store by
    `sluice outputs` (which checks it against the sha256 the manifest holds)."""
    assert set(manifest["steps"]["train"]["outputs"]) == {"index.json"}
    with tempfile.TemporaryDirectory() as into:
        got = cli(repo, "outputs", manifest["run_id"], "train", "--to", into)
        assert got.returncode == 0, got.stderr
        index: list[dict[str, Any]] = json.loads((Path(into) / "index.json").read_text())
    return index


def assert_select_kept_the_best(repo: Path, manifest: dict[str, Any]) -> str:
    """`select` chose the succeeded instance with the highest cv_roc_auc in index.json (the
    first of them on a tie), and passed its model on; returns its name."""
    index = fan_in_index(repo, manifest)
    instances = sweep(manifest)
    assert [entry["name"] for entry in index] == list(instances)
    for entry in index:  # the index is the instances' record
        record = instances[entry["name"]]
        assert (entry["status"], entry["matrix"]) == (record["status"], record["matrix"])
        assert entry["metrics"] == record["metrics"]
    done = [e for e in index if e["status"] in ("succeeded", "cached")]
    top = max(e["metrics"]["cv_roc_auc"] for e in done)
    best = next(e for e in done if e["metrics"]["cv_roc_auc"] == top)
    chosen = manifest["steps"]["select"]["metrics"]
    assert (chosen["n_estimators"], chosen["max_depth"]) == (
        best["matrix"]["n_estimators"],
        best["matrix"]["max_depth"],
    )
    assert chosen["cv_roc_auc"] == top and chosen["model_id"] == best["metrics"]["model_id"]
    assert chosen["compared"] == len(done) and chosen["instances"] == len(index)
    kept = manifest["steps"]["select"]["outputs"]["model.pkl"]["sha256"]
    assert kept == instances[best["name"]]["outputs"]["model.pkl"]["sha256"]
    return str(best["name"])


@pytest.mark.docker
@pytest.mark.slow
def test_first_run_trains_and_releases(scenario: dict[str, Any]) -> None:
    first = show(scenario["repo"], scenario["first"])
    assert first["status"] == "succeeded"
    assert statuses(first) == dict.fromkeys(RETRAIN_STEPS, "succeeded")
    assert first["baseline_run"] is None  # nothing in production before it
    # The step image is built from image/ and the manifest names the tag it was built as.
    assert first["steps"]["select"]["image"].startswith("sluice-build/image:")
    assert first["steps"]["evaluate"]["metrics"]["roc_auc"] >= 0.95

    # The sweep: four instances of train, one per pair, each with its values in its config
    # and the record; the group settled once all four had succeeded.
    instances = sweep(first)
    assert list(instances) == SWEEP
    for name, record in instances.items():
        assert record["instance_of"] == "train", name
        assert record["status"] == "succeeded" and len(record["attempts"]) == 1, name
        assert record["image"].startswith("sluice-build/image:"), name
        assert {"model.pkl", "model.json"} <= set(record["outputs"]), name
        assert 0.9 < record["metrics"]["cv_roc_auc"] <= 1.0, name
    assert [r["matrix"] for r in instances.values()] == [
        {"n_estimators": n, "max_depth": d} for n in (50, 100) for d in (2, 8)
    ]
    assert len({r["metrics"]["cv_roc_auc"] for r in instances.values()}) == 4  # a real choice
    assert first["steps"]["train"]["status"] == "succeeded"
    assert first["steps"]["select"]["needs"] == ["train"]
    chosen = assert_select_kept_the_best(scenario["repo"], first)
    assert f"select chose {chosen}, the sweep's best" in scenario["stdout"]

    released = first["steps"]["deploy"]["outputs"]
    assert {"model.pkl", "model_card.md", "deployment.json"} <= set(released)
    assert (
        released["model.pkl"]["sha256"]
        == first["steps"]["select"]["outputs"]["model.pkl"]["sha256"]
        == instances[chosen]["outputs"]["model.pkl"]["sha256"]
    )


@pytest.mark.docker
@pytest.mark.slow
def test_a_rerun_comes_from_the_cache_and_releases_nothing(scenario: dict[str, Any]) -> None:
    rerun = show(scenario["repo"], scenario["rerun"])
    assert rerun["status"] == "succeeded"
    for step in ["ingest", "validate-data", *SWEEP, "select", "evaluate"]:
        assert rerun["steps"][step]["status"] == "cached", step
        assert rerun["steps"][step]["cached_from"] == scenario["first"], step
        assert rerun["steps"][step]["attempts"] == [], step
    assert rerun["steps"]["train"]["status"] == "cached"  # every instance was
    # deploy is never cached; its gate sees production's own model and stays shut
    assert rerun["steps"]["deploy"]["status"] == "skipped"
    assert rerun["steps"]["notify"]["status"] == "succeeded"  # cache: false
    assert rerun["baseline_run"] == scenario["first"]


@pytest.mark.docker
@pytest.mark.slow
def test_a_worse_model_is_held_back_by_the_gate(scenario: dict[str, Any]) -> None:
    first = show(scenario["repo"], scenario["first"])
    worse = show(scenario["repo"], scenario["worse"])
    assert worse["trigger"]["kind"] == "workflow_dispatch"
    # the sweep's lists came from the run form's inputs of their own
    assert worse["params"]["n_estimators_grid"] == [1] and worse["params"]["max_depth_grid"] == [1]
    assert worse["status"] == "succeeded"  # a shut gate is not a failure
    assert statuses(worse) == {
        "ingest": "cached",
        "validate-data": "cached",
        "train": "succeeded",
        "select": "succeeded",
        "evaluate": "succeeded",
        "deploy": "skipped",
        "notify": "succeeded",
    }
    assert list(sweep(worse)) == ["train[n_estimators=1,max_depth=1]"]
    assert (
        assert_select_kept_the_best(scenario["repo"], worse) == "train[n_estimators=1,max_depth=1]"
    )
    auc, production_auc = (m["steps"]["evaluate"]["metrics"]["roc_auc"] for m in (worse, first))
    max_regression = worse["params"]["max_regression"]
    assert auc < production_auc - max_regression
    assert worse["baseline_run"] == scenario["first"]
    summary = (scenario["workdir"] / "job-summary.md").read_text()
    assert f"`{scenario['worse']}`" in summary and "skipped" in summary
    assert "| deploy | ⏭️ skipped | 0 |  | when is false: " in summary  # the gate, named


@pytest.mark.docker
@pytest.mark.slow
def test_drift_starts_one_retrain_and_the_cooldown_suppresses_the_next(
    scenario: dict[str, Any],
) -> None:
    repo = scenario["repo"]
    monitors = sorted(runs(repo, "drift-monitor"), key=lambda m: m["run_id"])
    assert [m["trigger"]["scheduled_for"] for m in monitors] == [
        "2026-11-24T10:00:00Z",
        "2026-11-25T10:00:00Z",
        "2026-11-25T11:00:00Z",
    ]
    assert [m["status"] for m in monitors] == ["succeeded"] * 3
    drift = [m["steps"]["check"]["metrics"]["drift_detected"] for m in monitors]
    assert drift == [False, True, True]
    assert monitors[1]["run_id"] == scenario["monitor"]

    retrains = runs(repo, "retrain")
    # first, re-run, worse, reviewed, one started by drift, and the pull request's preview
    assert len(retrains) == 6
    started = [m for m in retrains if m["trigger"]["kind"] == "drift"]
    assert [m["run_id"] for m in started] == [scenario["drift_retrain"]]
    run = show(repo, scenario["drift_retrain"])
    assert run["trigger"]["payload"]["monitor"] == "drift-monitor"
    assert run["trigger"]["payload"]["monitor_run"] == scenario["monitor"]
    assert run["status"] == "succeeded"
    # the new batch changed ingest's workspace file, so everything after it ran again
    assert statuses(run) == dict.fromkeys(RETRAIN_STEPS, "succeeded")
    assert list(sweep(run)) == SWEEP
    assert {r["status"] for r in sweep(run).values()} == {"succeeded"}
    assert_select_kept_the_best(repo, run)
    assert run["steps"]["ingest"]["metrics"]["shifted_features"] == 3
    assert (
        "drift drift-monitor -> retrain: suppressed"
        in (scenario["workdir"] / "logs" / "tick3.log").read_text()
    )
    listed = cli(repo, "drift", "signals", "--pipeline", "retrain", "--json")
    assert listed.returncode == 0, listed.stderr
    signals = [(s["decision"], s["monitor_run"], s["run_id"]) for s in json.loads(listed.stdout)]
    assert signals == [  # newest first
        ("suppressed", monitors[2]["run_id"], None),
        ("fired", monitors[1]["run_id"], scenario["drift_retrain"]),
    ]


@pytest.mark.docker
@pytest.mark.slow
def test_a_release_with_require_approval_waits_for_a_review(scenario: dict[str, Any]) -> None:
    reviewed = show(scenario["repo"], scenario["reviewed"])
    assert reviewed["params"]["require_approval"] is True
    assert reviewed["params"]["n_estimators_grid"] == [400]
    assert list(sweep(reviewed)) == [
        "train[n_estimators=400,max_depth=2]",
        "train[n_estimators=400,max_depth=8]",
    ]
    assert_select_kept_the_best(scenario["repo"], reviewed)
    assert reviewed["baseline_run"] == scenario["drift_retrain"]
    assert reviewed["status"] == "succeeded"
    assert statuses(reviewed)["deploy"] == "succeeded"
    assert [(a["step"], a["decision"], a["by"]) for a in reviewed["approvals"]] == [
        ("deploy", "approve", "a-reviewer")
    ]
    # the run paused at deploy (exit 0), and `sluice approve` ran the rest
    paused = json.loads((scenario["workdir"] / "run5.json").read_text())
    assert paused["status"] == "waiting_approval"
    assert paused["steps"]["deploy"]["status"] == "waiting_approval"


@pytest.mark.docker
@pytest.mark.slow
def test_rollback_and_promote_move_production_on_the_record(scenario: dict[str, Any]) -> None:
    repo, drifted, reviewed = scenario["repo"], scenario["drift_retrain"], scenario["reviewed"]
    rollback = json.loads((scenario["workdir"] / "rollback.json").read_text())
    assert (rollback["previous"], rollback["production"]) == (reviewed, drifted)
    assert rollback["entry"]["action"] == "rollback"
    promote = json.loads((scenario["workdir"] / "promote.json").read_text())
    assert (promote["previous"], promote["production"]) == (drifted, reviewed)
    assert promote["entry"]["action"] == "promote"

    assert "production of retrain (promote at" in cli(repo, "show", reviewed).stdout
    for other in (scenario["first"], drifted):
        assert "production of retrain" not in cli(repo, "show", other).stdout
    log = subprocess.run(
        ["git", "-C", str(repo), "log", "--format=%s", "sluice-results"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    # the newest commit is the pull request's preview (stage 6), which moves no production
    assert scenario["preview"] in log[0]
    moves = [line for line in log if line.startswith(("sluice: promote", "sluice: rollback"))]
    assert moves[:2] == [
        f"sluice: promote retrain to {reviewed}",
        f"sluice: rollback retrain to {drifted}",
    ]
    pushed = subprocess.run(
        [
            "git",
            "--git-dir",
            str(scenario["workdir"] / "origin.git"),
            "rev-parse",
            "sluice-results",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    local = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "sluice-results"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert pushed == local


@pytest.mark.docker
@pytest.mark.slow
def test_a_pull_request_that_makes_the_model_worse_is_previewed_and_held(
    scenario: dict[str, Any],
) -> None:
    repo, workdir = scenario["repo"], scenario["workdir"]
    preview = show(repo, scenario["preview"])
    production = show(repo, scenario["production"])
    payload = preview["trigger"]["payload"]
    assert preview["trigger"]["kind"] == "pull_request"
    assert (payload["number"], payload["head_sha"], payload["base_sha"]) == (
        7,
        scenario["pr_head"],
        scenario["pr_base"],
    )
    assert (payload["base_ref"], payload["fork"]) == ("main", False)
    assert payload["files"] == ["pipelines/retrain.yaml"]
    assert preview["params"]["n_estimators_grid"] == [1]
    assert preview["params"]["max_depth_grid"] == [1]
    assert preview["status"] == "succeeded"
    assert statuses(preview) == {
        "ingest": "cached",
        "validate-data": "cached",
        "train": "succeeded",
        "select": "succeeded",
        "evaluate": "succeeded",
        "deploy": "skipped",
        "notify": "succeeded",
    }
    assert list(sweep(preview)) == ["train[n_estimators=1,max_depth=1]"]
    # the cache is main's: the data did not change, so the drift-started run's steps serve
    for step in ["ingest", "validate-data"]:
        assert preview["steps"][step]["cached_from"] == scenario["drift_retrain"], step
    auc, production_auc = (
        m["steps"]["evaluate"]["metrics"]["roc_auc"] for m in (preview, production)
    )
    assert auc < production_auc - preview["params"]["max_regression"]
    reason = preview["steps"]["deploy"]["reason"]
    assert reason.startswith("preview: would be held: roc_auc ")
    assert "production" in reason and preview["steps"]["deploy"]["attempts"] == []

    # one comment, created through the REST API stand-in, holding the verdict
    api = workdir / "github-api"
    assert (api / "requests.log").read_text().splitlines() == [
        "GET /repos/your-org/retraining/issues/7/comments",
        "POST /repos/your-org/retraining/issues/7/comments",
    ]
    [comment] = sorted(api.glob("comment-*.md"))
    body = comment.read_text()
    assert body.startswith("<!-- sluice-preview pipeline=retrain -->\n")
    assert "**would be held**" in body and f"`{scenario['preview']}`" in body
    assert f"cached from {scenario['drift_retrain']}" in body
    assert "would be held" in (workdir / "pr-job-summary.md").read_text()

    # production did not move, and the preview can never become it
    assert "production of retrain (promote at" in cli(repo, "show", scenario["production"]).stdout
    assert "production of retrain" not in cli(repo, "show", scenario["preview"]).stdout
    refused = (workdir / "logs" / "promote-preview.log").read_text()
    assert "preview" in refused


@pytest.mark.docker
@pytest.mark.slow
def test_the_scenarios_pull_request_event_has_githubs_shape(scenario: dict[str, Any]) -> None:
    """Every field of the event the scenario sends is where GitHub's own example has it."""
    sent = json.loads((scenario["workdir"] / "events" / "pull_request.json").read_text())
    real = pr_event("opened")

    def paths(value: Any, prefix: str = "") -> set[str]:
        if not isinstance(value, dict):
            return {prefix}
        return {p for key, item in value.items() for p in paths(item, f"{prefix}/{key}")}

    assert paths(sent) <= paths(real)
    assert sent["action"] == real["action"] == "opened"
