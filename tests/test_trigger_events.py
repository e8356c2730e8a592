"""engine.core.triggers.github: GitHub event payloads -> planned runs (pure, no Docker, no git)."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from engine.core.parse import LoadedPipeline, load_text
from engine.core.triggers.github import (
    PlannedRun,
    RunTick,
    files_from_commits,
    plan,
)
from engine.core.triggers.paths import matches_paths, path_matches
from engine.errors import InvalidInput, NotFound

EVENTS = Path(__file__).parent / "events"

CHURN = """
name: churn
triggers:
  - push: {paths: ["src/**", "data/*.csv"]}
  - webhook: {event: retrain-churn}
  - drift: {monitor: churn-drift}
params: {n_estimators: 100, min_accuracy: 0.9, dry: false, model: rf}
steps:
  - {name: train, image: busybox, run: "true"}
"""
REPORT = """
name: report
triggers:
  - push: {paths: ["docs/*.md"]}
  - drift: {monitor: churn-drift, when: "metrics.drift_score > 0.5"}
params: {name: world}
steps:
  - {name: write, image: busybox, run: "true"}
"""
SELFISH = """
name: selfish
triggers:
  - push: {}
steps:
  - {name: only, image: busybox, run: "true"}
"""
MANUAL = """
name: manual
params: {n: 1}
steps:
  - {name: only, image: busybox, run: "true"}
"""


def _load(text: str, file: str) -> LoadedPipeline:
    return load_text(textwrap.dedent(text), file)


PIPELINES = [
    _load(CHURN, "pipelines/churn.yaml"),
    _load(REPORT, "pipelines/report.yaml"),
    _load(SELFISH, "pipelines/selfish.yaml"),
    _load(MANUAL, "pipelines/manual.yaml"),
]


def event(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return data


def runs(name: str, payload: dict[str, Any], changed: list[str] | None = None) -> list[PlannedRun]:
    result = plan(name, payload, PIPELINES, changed_files=changed)
    assert isinstance(result, list)
    return result


def names(planned: list[PlannedRun]) -> list[str]:
    return [run.pipeline for run in planned]


# --- glob matching ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("src/**", "src/a.py", True),
        ("src/**", "src/deep/er/a.py", True),
        ("src/**", "srcs/a.py", False),
        ("src/*", "src/a.py", True),
        ("src/*", "src/deep/a.py", False),  # `*` stays within one folder level
        ("*.py", "train.py", True),
        ("*.py", "src/train.py", False),
        ("**/*.py", "train.py", True),  # `**` may match no folder at all
        ("**/*.py", "src/a/b/train.py", True),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/**/b", "a/x/y/c", False),
        ("data/*.csv", "data/train.csv", True),
        ("data/*.csv", "data/raw/train.csv", False),
        ("data/?.csv", "data/a.csv", True),
        ("data/?.csv", "data/ab.csv", False),
        ("data/[ab].csv", "data/b.csv", True),
        ("docs/", "docs/guide/index.md", True),  # a folder means its contents
        ("./src/**", "src/a.py", True),
        ("Src/**", "src/a.py", False),  # case-sensitive, like git
        ("**/**/**/**/**/**/**/**/**/**/x", "a/b/c/d/e/f/g/h/i/j/k/l/m/y", False),
        ("", "anything", False),
    ],
)
def test_path_globs(pattern: str, path: str, expected: bool) -> None:
    assert path_matches(pattern, path) is expected


def test_a_later_negated_pattern_excludes_like_github_paths_filters() -> None:
    patterns = ["src/**", "!src/**/*.md", "src/keep/*.md"]
    assert matches_paths(patterns, "src/train.py")
    assert not matches_paths(patterns, "src/docs/readme.md")
    assert matches_paths(patterns, "src/keep/readme.md")


# --- push ---------------------------------------------------------------------------------


def test_a_push_runs_pipelines_whose_paths_changed_with_default_params() -> None:
    planned = runs("push", event("push"), ["src/features/build.py", "README.md"])
    assert names(planned) == ["churn"]
    run = planned[0]
    assert run.params == {"n_estimators": 100, "min_accuracy": 0.9, "dry": False, "model": "rf"}
    assert run.trigger.kind == "push"
    assert run.trigger.event == "push"
    payload = run.trigger.payload
    assert payload["ref"] == "refs/heads/main"
    assert payload["before"] == "1" * 40
    assert payload["after"] == "3" * 40
    assert payload["pusher"] == "octocat"
    assert payload["files"] == ["src/features/build.py"]
    assert payload["source"] == "git diff"
    assert "commits" not in payload and "repository" not in payload  # kept small


def test_a_pipelines_own_file_always_counts() -> None:
    assert names(runs("push", event("push"), ["pipelines/selfish.yaml"])) == ["selfish"]
    assert names(runs("push", event("push"), ["pipelines/churn.yaml"])) == ["churn"]


def test_a_push_of_unrelated_files_runs_nothing() -> None:
    assert runs("push", event("push"), ["README.md", "data/raw/x.csv", "srcs/a.py"]) == []
    assert runs("push", event("push"), []) == []


def test_a_pipeline_without_a_push_trigger_never_runs_on_push() -> None:
    assert runs("push", event("push"), ["pipelines/manual.yaml"]) == []


def test_without_a_git_diff_the_commit_list_decides() -> None:
    planned = runs("push", event("push"), None)  # modified src/..., added docs/notes.md
    assert names(planned) == ["churn", "report"]
    assert planned[1].trigger.payload["files"] == ["docs/notes.md"]
    assert planned[0].trigger.payload["source"] == "commit list"


def test_a_new_branch_falls_back_to_the_commits_in_the_event() -> None:
    payload = event("push-new-branch")
    assert payload["before"] == "0" * 40
    planned = runs("push", payload, None)
    assert names(planned) == ["churn"]
    assert planned[0].trigger.payload["files"] == ["data/train.csv", "pipelines/churn.yaml"]


def test_files_from_commits_is_the_union_of_added_modified_removed() -> None:
    assert files_from_commits(event("push")) == {
        "src/features/build.py",
        "docs/notes.md",
        "old.txt",
    }
    broken = event("push")
    broken["commits"][0]["added"] = "src/a.py"
    with pytest.raises(InvalidInput, match=r"commits\[0\]\.added is not a list"):
        files_from_commits(broken)


def test_deleting_a_branch_runs_nothing() -> None:
    payload = event("push-delete-branch")
    assert runs("push", payload, ["src/a.py"]) == []
    payload["deleted"] = False  # the zero `after` alone says it too
    assert runs("push", payload, None) == []


def test_pushing_a_tag_runs_nothing() -> None:
    assert runs("push", event("push-tag"), ["src/a.py", "pipelines/selfish.yaml"]) == []


def test_a_malformed_push_payload_is_invalid_input() -> None:
    payload = event("push")
    payload["commits"] = "all of them"
    with pytest.raises(InvalidInput, match="commits is not a list"):
        runs("push", payload, None)
    with pytest.raises(InvalidInput, match="not a JSON object"):
        plan("push", [], PIPELINES, changed_files=None)  # type: ignore[arg-type]


# --- workflow_dispatch --------------------------------------------------------------------


def dispatch(pipeline: str | None, params: Any = "") -> dict[str, Any]:
    payload = event("workflow_dispatch")
    payload["inputs"] = {"pipeline": pipeline, "params": params}
    return payload


def test_workflow_dispatch_runs_the_pipeline_with_typed_params() -> None:
    planned = runs("workflow_dispatch", event("workflow_dispatch"))
    assert names(planned) == ["churn"]
    params = planned[0].params
    assert params == {"n_estimators": 200, "min_accuracy": 0.95, "dry": True, "model": "gbm"}
    assert type(params["n_estimators"]) is int
    assert type(params["min_accuracy"]) is float
    assert planned[0].trigger.kind == "workflow_dispatch"
    assert planned[0].trigger.payload == {"ref": "refs/heads/main", "actor": "octocat"}


def test_workflow_dispatch_takes_a_file_path_and_empty_params() -> None:
    planned = runs("workflow_dispatch", dispatch("./pipelines/report.yaml"))
    assert names(planned) == ["report"]
    assert planned[0].params == {"name": "world"}
    assert runs("workflow_dispatch", dispatch("manual", "  "))[0].params == {"n": 1}


def test_an_int_param_accepts_a_whole_number_for_a_float() -> None:
    planned = runs("workflow_dispatch", dispatch("churn", '{"min_accuracy": 1}'))
    assert planned[0].params["min_accuracy"] == 1.0
    assert type(planned[0].params["min_accuracy"]) is float


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ('{"n_estimators": "200"}', r"param 'n_estimators' takes a whole number"),
        ('{"n_estimators": 2.5}', r"param 'n_estimators' takes a whole number"),
        ('{"dry": "yes"}', r"param 'dry' takes true or false"),
        ('{"min_accuracy": true}', r"param 'min_accuracy' takes a number"),
        ('{"model": 3}', r"param 'model' takes text"),
        ('{"n_estimator": 5}', r"unknown param 'n_estimator' \(did you mean 'n_estimators'\?\)"),
        ("{not json", r"params is not valid JSON"),
        ("[1, 2]", r"params must be a JSON object"),
    ],
)
def test_workflow_dispatch_params_of_the_wrong_type_or_name_are_refused(
    params: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        runs("workflow_dispatch", dispatch("churn", params))
    assert "workflow_dispatch input params" in str(caught.value)


def test_workflow_dispatch_needs_a_known_pipeline() -> None:
    with pytest.raises(InvalidInput, match="input `pipeline`"):
        runs("workflow_dispatch", dispatch(None))
    with pytest.raises(NotFound, match=r"no pipeline 'chrun' \(did you mean 'churn'\?\)"):
        runs("workflow_dispatch", dispatch("chrun"))


# --- repository_dispatch ------------------------------------------------------------------


def repository_dispatch(action: str, client_payload: Any) -> dict[str, Any]:
    payload = event("repository_dispatch")
    payload["action"] = action
    payload["client_payload"] = client_payload
    return payload


def test_a_dispatch_event_type_runs_the_pipelines_listening_as_webhooks() -> None:
    planned = runs("repository_dispatch", event("repository_dispatch"))
    assert names(planned) == ["churn"]
    run = planned[0]
    assert run.params["n_estimators"] == 300
    assert run.trigger.kind == "webhook"
    assert run.trigger.event == "retrain-churn"
    assert run.trigger.payload["client_payload"] == {"reason": "new data landed"}
    assert run.trigger.payload["branch"] == "main"


def test_a_dispatch_nobody_listens_to_runs_nothing() -> None:
    assert runs("repository_dispatch", repository_dispatch("deploy-docs", {})) == []


def test_webhook_params_are_checked_like_any_other() -> None:
    with pytest.raises(InvalidInput, match="param 'n_estimators' takes a whole number"):
        runs(
            "repository_dispatch",
            repository_dispatch("retrain-churn", {"params": {"n_estimators": "x"}}),
        )
    with pytest.raises(InvalidInput, match="must be a JSON object"):
        runs("repository_dispatch", repository_dispatch("retrain-churn", {"params": [1]}))


def test_sluice_run_runs_the_named_pipeline() -> None:
    planned = runs(
        "repository_dispatch",
        repository_dispatch("sluice-run", {"pipeline": "manual", "params": {"n": 7}}),
    )
    assert names(planned) == ["manual"]
    assert planned[0].params == {"n": 7}
    assert planned[0].trigger.kind == "repository_dispatch"
    assert planned[0].trigger.event == "sluice-run"
    with pytest.raises(InvalidInput, match=r"client_payload\.pipeline"):
        runs("repository_dispatch", repository_dispatch("sluice-run", {}))


def test_sluice_drift_without_metrics_counts_as_drift_detected() -> None:
    planned = runs(
        "repository_dispatch", repository_dispatch("sluice-drift", {"monitor": "churn-drift"})
    )
    assert names(planned) == ["churn", "report"]
    for run in planned:
        assert run.trigger.kind == "drift"
        assert run.trigger.payload["monitor"] == "churn-drift"
        assert run.trigger.payload["metrics"] is None
    assert planned[0].params["n_estimators"] == 100  # defaults
    assert planned[0].trigger.payload["cooldown_s"] == 6 * 3600


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({"drift_detected": True, "drift_score": 0.3}, ["churn"]),
        ({"drift_detected": True, "drift_score": 0.7}, ["churn", "report"]),
        ({"drift_detected": False, "drift_score": 0.7}, ["report"]),
        ({"drift_detected": False, "drift_score": 0.1}, []),
        ({}, []),  # a missing metric is null: when is false
    ],
)
def test_sluice_drift_with_metrics_evaluates_each_when(
    metrics: dict[str, Any], expected: list[str]
) -> None:
    payload = repository_dispatch("sluice-drift", {"monitor": "churn-drift", "metrics": metrics})
    planned = runs("repository_dispatch", payload)
    assert names(planned) == expected
    for run in planned:
        assert run.trigger.payload["metrics"] == metrics


def test_sluice_drift_for_another_monitor_runs_nothing() -> None:
    payload = repository_dispatch("sluice-drift", {"monitor": "sales-drift"})
    assert runs("repository_dispatch", payload) == []


@pytest.mark.parametrize(
    ("client_payload", "message"),
    [
        ({}, r"client_payload\.monitor"),
        ({"monitor": "churn-drift", "metrics": [1]}, "metrics must be a JSON object"),
        (
            {"monitor": "churn-drift", "metrics": {"x": {"y": 1}}},
            r"metrics\['x'\] must be a number",
        ),
        ({"monitor": "churn-drift", "params": {"n": 1}}, "takes no params"),
        ({"monitor": "churn-drift", "metrics": {"drift_score": "high"}}, "cannot compare"),
    ],
)
def test_bad_drift_signals_are_invalid_input(client_payload: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        runs("repository_dispatch", repository_dispatch("sluice-drift", client_payload))


def test_github_limits_event_type_length() -> None:
    assert runs("repository_dispatch", repository_dispatch("x" * 100, {})) == []
    with pytest.raises(InvalidInput, match="1 to 100 characters"):
        runs("repository_dispatch", repository_dispatch("x" * 101, {}))
    with pytest.raises(InvalidInput, match="1 to 100 characters"):
        runs("repository_dispatch", repository_dispatch("", {}))
    missing = event("repository_dispatch")
    del missing["action"]
    with pytest.raises(InvalidInput, match=r"payload field `action`"):
        runs("repository_dispatch", missing)


def test_github_limits_client_payload_to_ten_keys() -> None:
    ten = {f"k{i}": i for i in range(10)}
    assert runs("repository_dispatch", repository_dispatch("retrain-churn", ten))
    eleven = {**ten, "k10": 10}
    with pytest.raises(InvalidInput, match="11 top-level keys; GitHub allows at most 10"):
        runs("repository_dispatch", repository_dispatch("retrain-churn", eleven))
    with pytest.raises(InvalidInput, match="client_payload must be a JSON object"):
        runs("repository_dispatch", repository_dispatch("retrain-churn", "text"))


def test_a_large_client_payload_is_left_out_of_the_record() -> None:
    planned = runs(
        "repository_dispatch", repository_dispatch("retrain-churn", {"blob": "x" * 20_000})
    )
    assert "omitted" in planned[0].trigger.payload["client_payload"]


def test_an_injection_attempt_is_a_string_param_stored_verbatim() -> None:
    attack = "$(touch x)"
    payload = repository_dispatch("sluice-run", {"pipeline": "report", "params": {"name": attack}})
    original = copy.deepcopy(payload)
    planned = runs("repository_dispatch", payload)
    assert planned[0].params == {"name": attack}
    assert payload == original  # the payload itself is never changed
    via_inputs = runs(
        "workflow_dispatch", dispatch("report", json.dumps({"name": "`rm -rf /`; $(id)"}))
    )
    assert via_inputs[0].params == {"name": "`rm -rf /`; $(id)"}


# --- schedule and the rest ----------------------------------------------------------------


def test_a_schedule_event_hands_over_to_tick() -> None:
    result = plan("schedule", event("schedule"), PIPELINES, changed_files=None)
    assert result == RunTick("0 2 * * *")


def test_events_sluice_does_not_handle_are_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="does not handle the 'issues' event"):
        plan("issues", {}, PIPELINES, changed_files=None)
    with pytest.raises(InvalidInput, match="pull_request_target") as caught:
        plan("pull_request_target", {}, PIPELINES, changed_files=None)
    assert "secrets" in str(caught.value.hint)
