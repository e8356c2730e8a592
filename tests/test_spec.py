"""Pipeline models: durations, memory sizes, triggers, retries and how defaults merge."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from engine.core.spec import (
    DEFAULT_BACKOFF_S,
    DEFAULT_MAX_BACKOFF_S,
    DEFAULT_TIMEOUT_S,
    RETRYABLE_DEFAULT,
    Defaults,
    ImageBuild,
    Outcome,
    Pipeline,
    RetryPolicy,
    Step,
    StepType,
    Trigger,
    resolve_step,
    resolve_steps,
)
from engine.core.values import parse_duration, parse_memory


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90),
        ("10m", 600),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1d", 86400),
        ("1d2h3m4s", 86400 + 7200 + 180 + 4),
        ("1.5h", 5400),
        ("0.5s", 0.5),
        (" 10M ", 600),
        ("45", 45),
        ("2.5", 2.5),
        (30, 30),
        (0.25, 0.25),
        ("366d", 366 * 86400),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "bad duration ''"),
        ("soon", "bad duration 'soon'"),
        ("10 minutes", "bad duration '10 minutes'"),
        ("m", "bad duration 'm'"),
        ("10m1h", "bad duration '10m1h'"),
        ("1w", "bad duration '1w'"),
        ("-5m", "bad duration '-5m'"),
        (0, "must be more than zero"),
        (-1, "must be more than zero"),
        ("0s", "must be more than zero"),
        ("-3", "must be more than zero"),
        (math.nan, "must be more than zero"),
        ("nan", "must be more than zero"),
        (math.inf, "longer than the limit of 366 days"),
        ("367d", "longer than the limit of 366 days"),
        (1e300, "longer than the limit"),
        (True, "a duration is a string"),
        (None, "a duration is a string"),
        (["10m"], "a duration is a string"),
    ],
)
def test_parse_duration_refuses(value: object, message: str) -> None:
    with pytest.raises(ValueError, match="^.*" + message.replace("(", r"\(")):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("512m", 512 * 1024**2),
        ("4g", 4 * 1024**3),
        ("4G", 4 * 1024**3),
        ("4GiB", 4 * 1024**3),
        ("4gb", 4 * 1024**3),
        ("1.5g", int(1.5 * 1024**3)),
        ("6m", 6 * 1024**2),
        ("1t", 1024**4),
        ("8192k", 8 * 1024**2),
        (" 64 m ", 64 * 1024**2),
        (64 * 1024**2, 64 * 1024**2),
        (str(10 * 1024**2), 10 * 1024**2),
    ],
)
def test_parse_memory(value: object, size: int) -> None:
    assert parse_memory(value) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "bad memory size 'lots'"),
        ("4x", "bad memory size '4x'"),
        ("-1g", "bad memory size '-1g'"),
        ("", "bad memory size ''"),
        (5.5, "bad memory size 5.5"),
        (None, "bad memory size None"),
        (True, "memory is a size"),
        ("5m", "below Docker's minimum of 6m"),
        ("1k", "below Docker's minimum of 6m"),
        (1024, "below Docker's minimum"),
        (2**70, "too large"),
        ("99999999999t", "too large"),
    ],
)
def test_parse_memory_refuses(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_memory(value)
    assert message in str(caught.value)


# Triggers and retries ---------------------------------------------------------------------


def test_trigger_kind_and_cron_schedule() -> None:
    short = Trigger.model_validate({"cron": "0 2 * * *"})
    assert short.kind == "cron"
    schedule = short.cron_schedule
    assert schedule is not None
    assert (schedule.schedule, schedule.timezone, schedule.catchup) == (
        "0 2 * * *",
        "UTC",
        "latest",
    )
    long = Trigger.model_validate(
        {"cron": {"schedule": "0 2 * * 1", "timezone": "Europe/Berlin", "catchup": "all"}}
    )
    assert long.cron_schedule is not None
    assert long.cron_schedule.timezone == "Europe/Berlin"
    assert long.cron_schedule.catchup == "all"
    push = Trigger.model_validate({"push": {}})
    assert push.kind == "push"
    assert push.cron_schedule is None


def test_drift_trigger_defaults() -> None:
    drift = Trigger.model_validate({"drift": {"monitor": "churn-drift"}}).drift
    assert drift is not None
    assert drift.when == "metrics.drift_detected"
    assert drift.cooldown == 6 * 3600


@pytest.mark.parametrize("data", [{}, {"cron": "* * * * *", "webhook": {"event": "x"}}])
def test_a_trigger_has_exactly_one_kind(data: dict[str, Any]) -> None:
    with pytest.raises(
        ValidationError, match="a trigger has exactly one of cron, push, webhook, drift"
    ):
        Trigger.model_validate(data)


def test_retries_short_form_is_the_limit() -> None:
    step = Step.model_validate({"name": "a", "retries": 4})
    assert step.retries == RetryPolicy(limit=4)
    assert step.retries is not None
    assert step.retries.backoff == DEFAULT_BACKOFF_S
    assert step.retries.outcomes == list(RETRYABLE_DEFAULT)


def test_retries_mapping_form() -> None:
    policy = RetryPolicy.model_validate(
        {"limit": 2, "backoff": "30s", "factor": 3, "max_backoff": "10m", "outcomes": ["error"]}
    )
    assert (policy.limit, policy.backoff, policy.factor, policy.max_backoff) == (2, 30, 3, 600)
    assert policy.outcomes == [Outcome.error]


@pytest.mark.parametrize(
    "data",
    [
        {"limit": -1},
        {"limit": 101},
        {"factor": 0.5},
        {"outcomes": ["succeeded"]},
        {"outcomes": ["cancelled"]},
        {"outcomes": ["exploded"]},
    ],
)
def test_retry_policy_refuses(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy.model_validate(data)


def test_retries_true_is_not_a_limit() -> None:
    with pytest.raises(ValidationError):
        Step.model_validate({"name": "a", "retries": True})


def test_run_and_command_are_exclusive() -> None:
    with pytest.raises(ValidationError, match="not both"):
        Step.model_validate({"name": "a", "run": "echo", "command": ["echo"]})


def test_image_build_form() -> None:
    step = Step.model_validate({"name": "a", "image": {"build": {"context": "steps"}}})
    assert isinstance(step.image, ImageBuild)
    assert (step.image.build.context, step.image.build.dockerfile) == ("steps", "Dockerfile")


def test_pipeline_finally_alias() -> None:
    pipeline = Pipeline.model_validate(
        {"name": "p", "steps": [{"name": "a"}], "finally": [{"name": "b"}]}
    )
    assert [s.name for s in pipeline.all_steps] == ["a", "b"]


# resolve_step -----------------------------------------------------------------------------


def _defaults(**fields: Any) -> Defaults:
    return Defaults.model_validate(fields)


def _step(**fields: Any) -> Step:
    return Step.model_validate({"name": "s", **fields})


def test_env_merges_step_wins_per_key() -> None:
    defaults = _defaults(image="alpine:3", env={"LOG": "info", "REGION": "eu", "N": 1})
    resolved = resolve_step(
        _step(env={"LOG": "debug", "FLAG": True, "RATE": 0.5}), defaults, is_finally=False
    )
    assert resolved.env == {"LOG": "debug", "REGION": "eu", "N": "1", "FLAG": "true", "RATE": "0.5"}


def test_config_merges_shallowly_step_wins_per_key() -> None:
    defaults = _defaults(image="alpine:3", config={"seed": 1, "model": {"depth": 3, "lr": 0.1}})
    step = _step(config={"model": {"depth": 5}, "extra": [1, 2]})
    resolved = resolve_step(step, defaults, is_finally=False)
    assert resolved.config == {"seed": 1, "model": {"depth": 5}, "extra": [1, 2]}


def test_secrets_are_the_union_in_order_without_repeats() -> None:
    defaults = _defaults(image="alpine:3", secrets=["A", "B"])
    resolved = resolve_step(_step(secrets=["B", "C"]), defaults, is_finally=False)
    assert resolved.secrets == ["A", "B", "C"]


def test_scalar_fields_come_from_the_step_else_defaults_else_the_engine() -> None:
    defaults = _defaults(
        image="python:3.11-slim",
        timeout="30m",
        retries={"limit": 2},
        network="bridge",
        type="evaluation",
    )
    own = resolve_step(
        _step(image="alpine:3", timeout=5, retries=0, network="host"), defaults, is_finally=True
    )
    assert (own.image, own.timeout, own.retries.limit, own.network) == ("alpine:3", 5, 0, "host")
    assert own.is_finally is True
    inherited = resolve_step(_step(), defaults, is_finally=False)
    assert (inherited.image, inherited.timeout, inherited.retries.limit, inherited.network) == (
        "python:3.11-slim",
        1800,
        2,
        "bridge",
    )
    assert inherited.type is StepType.evaluation
    bare = resolve_step(_step(image="alpine:3"), Defaults(), is_finally=False)
    assert bare.timeout == DEFAULT_TIMEOUT_S
    assert bare.retries.limit == 0
    assert bare.retries.max_backoff == DEFAULT_MAX_BACKOFF_S
    assert bare.network == "none"
    assert bare.type is StepType.custom
    assert bare.workspace is True
    assert bare.approval is False
    assert bare.resources.gpus == 0


def test_cache_defaults_to_false_for_deployments_only() -> None:
    defaults = _defaults(image="alpine:3")
    assert resolve_step(_step(type="deployment"), defaults, is_finally=False).cache is False
    assert (
        resolve_step(_step(type="deployment", cache=True), defaults, is_finally=False).cache is True
    )
    assert resolve_step(_step(type="training"), defaults, is_finally=False).cache is True
    assert resolve_step(_step(cache=False), defaults, is_finally=False).cache is False
    deploy_by_default = _defaults(image="alpine:3", type="deployment")
    assert resolve_step(_step(), deploy_by_default, is_finally=False).cache is False


def test_workspace_false_and_paths_are_kept() -> None:
    defaults = _defaults(image="alpine:3", workspace=False)
    assert resolve_step(_step(), defaults, is_finally=False).workspace is False
    assert resolve_step(_step(workspace=["src"]), defaults, is_finally=False).workspace == ["src"]


def test_run_and_command_come_from_defaults_too() -> None:
    defaults = _defaults(image="alpine:3", command=["python", "main.py"])
    resolved = resolve_step(_step(), defaults, is_finally=False)
    assert resolved.argv == ["python", "main.py"]
    assert resolve_step(_step(run="make"), _defaults(image="x"), is_finally=False).argv == [
        "sh",
        "-c",
        "make",
    ]


def test_needs_are_copied() -> None:
    step = _step(needs=["a", "b"])
    resolved = resolve_step(step, _defaults(image="x"), is_finally=False)
    assert resolved.needs == ["a", "b"]
    resolved.needs.append("c")
    assert step.needs == ["a", "b"]


def test_no_image_anywhere() -> None:
    with pytest.raises(ValueError, match="step 's' has no image"):
        resolve_step(_step(), Defaults(), is_finally=False)


def test_resolve_steps_main_then_finally() -> None:
    pipeline = Pipeline.model_validate(
        {
            "name": "p",
            "defaults": {"image": "alpine:3"},
            "steps": [{"name": "a"}, {"name": "b"}],
            "finally": [{"name": "z"}],
        }
    )
    resolved = resolve_steps(pipeline)
    assert [(s.name, s.is_finally) for s in resolved] == [("a", False), ("b", False), ("z", True)]
