"""Rules beyond the schema, on plain data; and params overrides checked against their types."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.core.checks import CheckResult, check_pipeline
from engine.core.params import coerce_param, coerce_params
from engine.core.spec import Pipeline
from engine.errors import InvalidInput

DECLARED: dict[str, Any] = {"n_estimators": 100, "min_accuracy": 0.9, "fast": False, "tag": "v1"}


# coerce_param: command-line text (-p KEY=VALUE) -------------------------------------------


@pytest.mark.parametrize(
    ("default", "raw", "value"),
    [
        (100, "200", 200),
        (100, " -3 ", -3),
        (100, "+7", 7),
        (0.9, "0.95", 0.95),
        (0.9, "1", 1.0),
        (0.9, "1e-3", 0.001),
        (False, "true", True),
        (False, "Yes", True),
        (False, "on", True),
        (False, "1", True),
        (True, "false", False),
        (True, "NO", False),
        (True, "off", False),
        (True, "0", False),
        ("v1", "v2", "v2"),
        ("v1", "", ""),
        ("v1", " padded ", " padded "),
        ("v1", "123", "123"),
    ],
)
def test_coerce_param_from_text(default: Any, raw: str, value: Any) -> None:
    got = coerce_param("p", default, raw, from_text=True, source="-p")
    assert got == value
    assert type(got) is type(default)


@pytest.mark.parametrize(
    ("default", "raw", "want"),
    [
        (100, "2.5", "a whole number"),
        (100, "1e3", "a whole number"),
        (100, "many", "a whole number"),
        (100, "", "a whole number"),
        (0.9, "high", "a number"),
        (False, "maybe", "true or false"),
        (False, "", "true or false"),
    ],
)
def test_coerce_param_from_text_refuses(default: Any, raw: str, want: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        coerce_param("p", default, raw, from_text=True, source="-p")
    shown = json.dumps(default)  # `false`, never Python's `False`
    assert str(caught.value) == f"-p: param 'p' takes {want} (its default is {shown}), got {raw!r}"
    assert caught.value.exit_code == 2


# coerce_param: JSON values (--params-json, event payloads) --------------------------------


@pytest.mark.parametrize(
    ("default", "raw", "value"),
    [
        (100, 200, 200),
        (100, -1, -1),
        (0.9, 0.5, 0.5),
        (0.9, 1, 1.0),  # an int is a fine float
        (False, True, True),
        ("v1", "v2", "v2"),
    ],
)
def test_coerce_param_from_json(default: Any, raw: Any, value: Any) -> None:
    got = coerce_param("p", default, raw, from_text=False, source="--params-json")
    assert got == value
    assert type(got) is type(default)


@pytest.mark.parametrize(
    ("default", "raw"),
    [
        (100, True),  # a bool is not an int, whatever Python says
        (100, False),
        (0.9, True),
        (100, 2.5),
        (100, "200"),  # JSON text stays text: no guessing
        (0.9, "0.5"),
        (False, 1),
        (False, "true"),
        ("v1", 1),
        ("v1", None),
        (100, None),
        (100, [1]),
        ("v1", {"a": 1}),
    ],
)
def test_coerce_param_from_json_refuses(default: Any, raw: Any) -> None:
    with pytest.raises(InvalidInput, match=r"^--params-json: param 'p' takes "):
        coerce_param("p", default, raw, from_text=False, source="--params-json")


def test_coerce_param_non_text_with_from_text_is_checked_as_json() -> None:
    assert coerce_param("p", 1, 5, from_text=True, source="-p") == 5
    with pytest.raises(InvalidInput):
        coerce_param("p", 1, True, from_text=True, source="-p")


# coerce_params ----------------------------------------------------------------------------


def test_coerce_params_applies_overrides_over_declared() -> None:
    result = coerce_params(
        DECLARED, {"n_estimators": "50", "fast": "yes"}, source="-p", from_text=True
    )
    assert result == {"n_estimators": 50, "min_accuracy": 0.9, "fast": True, "tag": "v1"}
    assert DECLARED["n_estimators"] == 100  # not changed in place


def test_coerce_params_without_overrides() -> None:
    assert coerce_params(DECLARED, {}, source="-p", from_text=True) == DECLARED


def test_coerce_params_unknown_param_suggests() -> None:
    with pytest.raises(InvalidInput) as caught:
        coerce_params(DECLARED, {"n_estimator": 5}, source="--params-json", from_text=False)
    assert str(caught.value) == (
        "--params-json: unknown param 'n_estimator' (did you mean 'n_estimators'?); "
        "declared: fast, min_accuracy, n_estimators, tag"
    )


def test_coerce_params_unknown_param_nothing_declared() -> None:
    with pytest.raises(InvalidInput, match=r"^-p: unknown param 'x'; declared: none$"):
        coerce_params({}, {"x": "1"}, source="-p", from_text=True)


def test_coerce_params_wrong_type_names_the_param() -> None:
    with pytest.raises(InvalidInput, match="param 'min_accuracy' takes a number"):
        coerce_params(DECLARED, {"min_accuracy": "high"}, source="-p", from_text=True)


# check_pipeline on plain data -------------------------------------------------------------


def _check(data: dict[str, Any]) -> CheckResult:
    try:
        pipeline: Pipeline | None = Pipeline.model_validate(data)
    except ValueError:
        pipeline = None
    return check_pipeline(data, pipeline)


def _steps(*steps: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "p", "defaults": {"image": "alpine:3"}, "steps": list(steps), **top}


def test_a_valid_pipeline_gets_steps_and_a_dag() -> None:
    data = _steps(
        {"name": "a"},
        {"name": "b", "needs": ["a"], "when": "steps.a.status == 'succeeded'"},
    )
    data["finally"] = [{"name": "z", "needs": ["a"], "when": "steps.b.status == 'failed'"}]
    result = _check(data)
    assert result.problems == []
    assert [s.name for s in result.steps] == ["a", "b", "z"]
    assert result.dag is not None
    assert result.dag.levels == (("a",), ("b",))
    assert result.dag.finally_steps == ("z",)
    assert result.dag.needs["z"] == ("a",)  # kept: `sluice graph` draws a finally step's needs


def test_problems_carry_data_paths() -> None:
    result = _check(
        _steps(
            {"name": "a", "needs": ["b"]},
            {"name": "b", "needs": ["a"]},
            {"name": "c", "needs": ["nope"], "run": "echo ${{ params.x }}"},
        )
    )
    assert [path for path, _ in result.problems] == [
        ("steps", 2, "needs", 0),
        ("steps", 0, "needs"),
        ("steps", 2, "run"),
    ]
    messages = [message for _, message in result.problems]
    assert messages[0] == "step 'c' needs unknown step 'nope'"
    assert messages[1] == "cycle in needs: a -> b -> a"
    assert messages[2].startswith("run strings cannot contain ${{ }}")
    assert result.dag is None
    assert result.steps == []


def test_finally_steps_may_form_their_own_cycle() -> None:
    data = _steps({"name": "a"}) | {
        "finally": [{"name": "y", "needs": ["z"]}, {"name": "z", "needs": ["y"]}]
    }
    result = _check(data)
    assert result.problems == [(("finally", 0, "needs"), "cycle in needs: y -> z -> y")]


def test_when_in_a_finally_step_may_read_any_main_step() -> None:
    data = _steps({"name": "a"}, {"name": "b"}) | {
        "finally": [
            {"name": "z", "when": "steps.a.status == 'failed' or steps.b.status == 'failed'"}
        ]
    }
    assert _check(data).problems == []


def test_when_in_a_finally_step_may_not_read_a_finally_step_it_does_not_need() -> None:
    data = _steps({"name": "a"}) | {
        "finally": [{"name": "y"}, {"name": "z", "when": "steps.y.status == 'failed'"}]
    }
    ((path, message),) = _check(data).problems
    assert path == ("finally", 1, "when")
    assert message.startswith("when reads steps.y, which has not finished when 'z' starts")


def test_when_reading_an_indirect_ancestor_is_fine() -> None:
    data = _steps(
        {"name": "a"},
        {"name": "b", "needs": ["a"]},
        {"name": "c", "needs": ["b"], "when": "steps.a.metrics.acc > 0.5"},
    )
    assert _check(data).problems == []


def test_when_reading_baseline_needs_a_baseline() -> None:
    data = _steps({"name": "a"}, {"name": "b", "needs": ["a"], "when": "not baseline"})
    assert _check(data).problems == [
        (
            ("steps", 1, "when"),
            "when reads baseline, but the pipeline declares no baseline: {step: ...}",
        )
    ]
    assert _check(data | {"baseline": {"step": "a"}}).problems == []


def test_drift_when_reads_metrics_only() -> None:
    data = _steps({"name": "a"}, triggers=[{"drift": {"monitor": "m", "when": "params.x > 1"}}])
    ((path, message),) = _check(data).problems
    assert path == ("triggers", 0, "drift", "when")
    assert "'params' cannot be used here" in message
    ok = _steps({"name": "a"}, triggers=[{"drift": {"monitor": "m", "when": "metrics.psi > 0.2"}}])
    assert _check(ok).problems == []


@pytest.mark.parametrize(
    ("cron", "ok"),
    [
        ("0 2 * * *", True),
        ("*/15 * * * 1-5", True),
        ("0 0 1 1 *", True),
        ("0 2 * *", False),
        ("0 0 2 * * *", False),
        ("60 * * * *", False),
        ("* * 32 * *", False),
        ("@daily", False),
        ("", False),
    ],
)
def test_cron_expressions(cron: str, ok: bool) -> None:
    problems = _check(_steps({"name": "a"}, triggers=[{"cron": cron}])).problems
    assert (problems == []) is ok, problems


@pytest.mark.parametrize(
    ("zone", "ok"),
    [
        ("UTC", True),
        ("Europe/Berlin", True),
        ("Mars/Olympus", False),
        ("../etc", False),
        ("", False),
    ],
)
def test_time_zones(zone: str, ok: bool) -> None:
    trigger = {"cron": {"schedule": "0 2 * * *", "timezone": zone}}
    problems = _check(_steps({"name": "a"}, triggers=[trigger])).problems
    assert (problems == []) is ok, problems


def test_templates_are_checked_in_defaults_too() -> None:
    data = _steps({"name": "a"}, params={"n": 1})
    data["defaults"]["env"] = {"N": "${{ params.m }}"}
    ((path, message),) = _check(data).problems
    assert path == ("defaults", "env", "N")
    assert "names unknown param 'm'" in message


def test_templates_where_they_are_allowed() -> None:
    data = _steps(
        {
            "name": "a",
            "config": {"deep": [{"n": "${{ params.n }}"}], "event": "${{ trigger.event }}"},
            "env": {"N": "${{ params.n }}"},
            "command": ["train", "--n", "${{ params.n }}"],
        },
        params={"n": 1},
    )
    assert _check(data).problems == []


def test_workspace_paths() -> None:
    data = _steps({"name": "a", "workspace": ["src", "data/raw", "/etc", "a/../../b"]})
    problems = _check(data).problems
    assert [path for path, _ in problems] == [
        ("steps", 0, "workspace", 2),
        ("steps", 0, "workspace", 3),
    ]


def test_checks_survive_data_the_schema_rejects() -> None:
    # check_pipeline runs even when pydantic failed: it must not trip over odd shapes
    for data in (
        {"steps": "nope", "finally": 3, "params": [1], "triggers": {"cron": 1}},
        {"steps": [None, 3, {"name": 5, "needs": "a"}, {"name": "x", "needs": [1, None]}]},
        {"steps": [{"name": "a", "when": 3, "workspace": [1]}], "baseline": {"step": 4}},
        {"steps": [{"name": "a"}], "triggers": [None, {"cron": {"schedule": 5, "timezone": 3}}]},
    ):
        result = check_pipeline(data, None)
        # odd shapes are the schema's to report (a step without an image is the checks' own,
        # whatever the shape); without a pipeline nothing is resolved
        assert [m for _, m in result.problems if "image" not in m] == []
        assert result.steps == [] and result.dag is None


def test_a_missing_image_is_reported_with_the_shape_problems() -> None:
    data = {"steps": [{"name": "a", "retries": "two"}, {"name": "b", "image": "x"}]}
    result = check_pipeline(data, None)
    assert result.problems == [
        (("steps", 0, "name"), "step 'a' has no image: set image on the step or in defaults")
    ]
    everyone = check_pipeline({"steps": [{"name": "a"}, {"name": "b"}]}, None)
    assert [p for p, _ in everyone.problems] == [("steps",)]
    assert "defaults: {image: python:3.11-slim}" in everyone.problems[0][1]
    # an image in defaults covers every step, and a broken `defaults` is its own problem
    assert (
        check_pipeline({"defaults": {"image": "x"}, "steps": [{"name": "a"}]}, None).problems == []
    )
    assert check_pipeline({"defaults": 3, "steps": [{"name": "a"}]}, None).problems == []
