"""Tests for fan-out in the `when:` language: `matrix.x`, wildcard paths and the aggregates."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from engine.core import expression_aggregates, expression_eval, expression_tree, expressions
from engine.core.expression_eval import check, evaluate, explain, holds, traced
from engine.core.expressions import (
    FUNCTIONS,
    MAX_DEPTH,
    Call,
    Comparison,
    ExpressionError,
    Reference,
    parse,
)
from engine.core.planner import missing_metrics

AUC = "steps.train.instances.*.metrics.auc"


def instance(lr: float, status: str = "succeeded", **metrics: Any) -> dict[str, Any]:
    return {"name": f"train[lr={lr}]", "matrix": {"lr": lr}, "status": status, "metrics": metrics}


def ctx(*instances: dict[str, Any], **steps: Any) -> dict[str, Any]:
    train = {"status": "succeeded", "metrics": {}, "instances": list(instances)}
    return {
        "params": {"floor": 0.8},
        "steps": {
            "train": train,
            "prep": {"status": "succeeded", "metrics": {"rows": 10}},
            **steps,
        },
        "baseline": None,
        "trigger": {"kind": "manual"},
        "matrix": {"lr": 0.1, "depth": 3},
    }


SWEEP = ctx(
    instance(0.1, auc=0.91, ok=True),
    instance(0.2, status="failed"),
    instance(0.3, auc=0.85, ok=False),
    instance(0.4, auc=0.88, ok=True),
)


def ev(text: str, context: dict[str, Any] = SWEEP) -> Any:
    return evaluate(parse(text), context)


def parse_error(text: str) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        parse(text)
    return info.value


def eval_error(text: str, context: dict[str, Any] = SWEEP) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        ev(text, context)
    return info.value


# --- parsing ---------------------------------------------------------------------------------


def test_an_aggregate_parses_to_a_call_over_a_wildcard_reference() -> None:
    expr = parse(f"max({AUC}) >= 0.9")
    assert isinstance(expr.root, Comparison)
    call = expr.root.left
    assert call == Call("max", Reference(tuple(AUC.split(".")), 5), 1)
    assert call.text == f"max({AUC})"
    assert expr.references() == {("steps", "train", "instances", "*", "metrics", "auc")}


def test_every_function_parses_and_nothing_else_is_callable() -> None:
    assert FUNCTIONS == ("max", "min", "count", "all", "any")
    for name in FUNCTIONS:
        assert isinstance(parse(f"{name}({AUC})").root, Call)
    assert isinstance(parse("count(steps.train.instances)").root, Call)
    assert isinstance(parse(f"max ( {AUC} )").root, Call)  # spaces are fine


def test_function_words_are_plain_names_elsewhere() -> None:
    # Only right before '(' are the five words functions: segments may use them.
    expr = parse("steps.max.status == 'ok' and params.count > 1 and steps.any.metrics.min")
    assert ("steps", "max", "status") in expr.references()
    assert ("params", "count") in expr.references()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"{AUC} > 0.9",
            f"{AUC} is a list (a value per item) at column 1: use it inside max, min, count, "
            f"all or any: max({AUC})",
        ),
        (f"1 + {AUC}", f"{AUC} is a list (a value per item) at column 5"),
        (f"not ({AUC})", f"{AUC} is a list (a value per item) at column 6"),
        (f"max({AUC}, 1)", "max() takes one argument at column 40"),
        (f"max({AUC}, {AUC})", "max() takes one argument at column 40"),
        ("max()", "max() needs one argument at column 5: e.g. max("),
        ("count( )", "count() needs one argument at column 8"),
        (
            "sum(steps.train.instances.*.metrics.auc)",
            "unknown function 'sum' at column 1: the functions are max, min, count, all, any",
        ),
        (
            "1 + mx(x)",
            "unknown function 'mx' at column 5: the functions are max, min, count, all, "
            "any (did you mean 'max'?)",
        ),
        ("avg (x)", "unknown function 'avg' at column 1"),
        ("max(params.x)", "max() needs a list, and params.x is a single value at column 5"),
        (
            "count(params.x)",
            "count() needs a list, and params.x is a single value at column 7: "
            "e.g. count(steps.train.instances.*.metrics.auc) or count(steps.train.instances)",
        ),
        ("max(steps.train.instances)", "max() needs a list, and steps.train.instances is a single"),
        ("max(1 + 2)", "the argument of max() must be a reference at column 5"),
        (f"max({AUC} + 1)", "the argument of max() must be a reference at column 5"),
        (f"all(not {AUC})", "the argument of all() must be a reference at column 5"),
        (f"max(max({AUC}))", "the argument of max() must be a reference at column 5"),
        (f"max({AUC}", "expected ')', found the end at column 40: the '(' at column 4 is not"),
        ("max", "'max' needs '(' after it at column 1: max is a function"),
        ("any == 1", "'any' needs '(' after it at column 1"),
        ("params.x.*.y", "'*' can only follow 'instances' at column 10"),
        ("steps.*.status", "'*' can only follow 'instances' at column 7"),
        ("instances.*.x", "unknown name 'instances' at column 1"),
        ("count(steps.train.instances.*)", "expected '.' and a field after '*' at column 30"),
        ("count(steps.train.instances.*x)", "expected '.' and a field after '*' at column 30"),
        (
            "count(steps.t.instances.*.metrics.instances.*.x)",
            "a reference can have only one '*' at column 45",
        ),
        ("1, 2", "unexpected ',' at column 2"),
        ("(1, 2)", "expected ')', found , at column 3"),
    ],
)
def test_parse_errors_are_located(text: str, expected: str) -> None:
    assert str(parse_error(text)).startswith(expected)


def test_deeply_nested_calls_hit_the_nesting_limit() -> None:
    deep = "max(" * (MAX_DEPTH + 5) + AUC + ")" * (MAX_DEPTH + 5)
    assert "nests too deeply" in parse_error(deep).message
    huge = "count(" * 5_000 + AUC + ")" * 5_000
    assert isinstance(parse_error(huge), ExpressionError)  # never a RecursionError
    parens = "(" * (MAX_DEPTH - 3) + f"max({AUC})" + ")" * (MAX_DEPTH - 3)
    assert ev(parens) == 0.91


def test_hostile_calls_are_expression_errors() -> None:
    for text in ["__import__('os')", "eval('1')", "max.__class__", "getattr(params, 'x')"]:
        assert isinstance(parse_error(text), ExpressionError)


def test_no_python_eval_in_the_language() -> None:
    banned = {"eval", "exec", "compile", "__import__", "getattr", "globals", "locals"}
    for module in (expressions, expression_tree, expression_eval, expression_aggregates):
        tree = ast.parse(Path(str(module.__file__)).read_text())
        called = {
            node.func.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        }
        assert not called & banned, module.__name__


# --- evaluating ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (f"max({AUC})", 0.91),
        (f"min({AUC})", 0.85),
        (f"count({AUC})", 3),  # the failed instance wrote no auc: null is not counted
        ("count(steps.train.instances)", 4),
        ("count(steps.train.instances.*.name)", 4),
        ("all(steps.train.instances.*.metrics.ok)", False),
        ("any(steps.train.instances.*.metrics.ok)", True),
        ("max(steps.train.instances.*.matrix.lr)", 0.4),
        ("min(steps.train.instances.*.matrix.lr)", 0.1),
        ("any(steps.train.instances.*.metrics.missing)", False),
        ("all(steps.train.instances.*.metrics.missing)", False),
        (f"max({AUC}) - min({AUC}) < 0.1", True),
        (f"max({AUC}) >= params.floor and count(steps.train.instances) == 4", True),
        ("count(steps.train.instances.*.status) - count(steps.train.instances.*.metrics.auc)", 1),
        ("not any(steps.train.instances.*.metrics.missing)", True),
        (f"-min({AUC})", -0.85),
        (f"(max(({AUC})))", 0.91),
        ("matrix.lr * 10", 1.0),
        ("matrix.depth > 2 and matrix.missing == null", True),
    ],
)
def test_aggregates(text: str, value: object) -> None:
    result = ev(text)
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize(
    ("context", "values"),
    [
        (ctx(), {"max": None, "min": None, "count": 0, "all": True, "any": False}),
        (
            ctx(instance(0.1, "failed"), instance(0.2, "failed")),
            {"max": None, "min": None, "count": 0, "all": False, "any": False},
        ),
        ({}, {"max": None, "min": None, "count": 0, "all": True, "any": False}),
        (
            ctx(instance(0.1, auc=3), instance(0.2, auc=0.5), instance(0.3, auc=-1)),
            {"max": 3, "min": -1, "count": 3, "all": True, "any": True},
        ),
        (
            ctx(instance(0.1, auc=0), instance(0.2, auc="")),
            {"count": 2, "all": False, "any": False},
        ),
    ],
    ids=["no instances", "all null", "no such step", "numbers", "falsy values"],
)
def test_empty_null_and_falsy(context: dict[str, Any], values: dict[str, object]) -> None:
    for function, value in values.items():
        result = ev(f"{function}({AUC})", context)
        assert result == value and type(result) is type(value), function


def test_count_of_a_missing_list_is_zero() -> None:
    assert ev("count(steps.nothing.instances)") == 0
    assert ev("count(baseline.steps.train.instances)") == 0


@pytest.mark.parametrize(
    ("values", "kind"),
    [([0.9, "high"], "string"), ([True, 0.5], "boolean"), (["a"], "string")],
)
def test_max_and_min_take_numbers_only(values: list[Any], kind: str) -> None:
    context = ctx(*(instance(i / 10, auc=v) for i, v in enumerate(values)))
    for function in ("max", "min"):
        err = eval_error(f"1 + {function}({AUC})", context)
        assert err.message == f"{function}() takes numbers, and {AUC} has a {kind}"
        assert err.column == 5
    assert ev(f"count({AUC})", context) == len(values)  # the others take any value


def test_a_wildcard_needs_a_list_and_single_values() -> None:
    err = eval_error(f"max({AUC})", ctx(train={"status": "succeeded", "instances": {"a": 1}}))
    assert (err.message, err.column) == ("steps.train.instances is a mapping, not a list", 5)
    err = eval_error("count(steps.train.instances)", ctx(train={"instances": 3}))
    assert err.message == "steps.train.instances is a number, not a list"
    nested = ctx(instance(0.1, auc={"mean": 0.9}))
    err = eval_error(f"max({AUC})", nested)
    assert err.message == f"{AUC} is a mapping for train[lr=0.1], not a single value"
    # Items that are not mappings have no fields: null, like any missing path.
    assert ev(f"count({AUC})", ctx(train={"instances": [1, None, "x"]})) == 0


def test_the_instance_list_outside_count_is_an_error() -> None:
    err = eval_error("steps.train.instances == null")
    assert err.message == "steps.train.instances is a list, not a single value"
    assert err.hint == "count(steps.train.instances) gives the number of instances"


def test_short_circuit_skips_aggregates() -> None:
    bad = ctx(instance(0.1, auc="text"))
    assert holds(parse(f"true or max({AUC}) > 1"), bad)
    with pytest.raises(ExpressionError):
        holds(parse(f"false or max({AUC}) > 1"), bad)


# --- explanations and warnings ---------------------------------------------------------------


def test_explain_names_the_aggregate_read_on_its_own() -> None:
    holds_, trace = traced(
        parse(f"all(steps.train.instances.*.metrics.ok) or max({AUC}) > 2"), SWEEP
    )
    assert not holds_
    assert explain(trace) == "0.91 <= 2"  # comparisons first, as for references
    holds_, trace = traced(parse("all(steps.train.instances.*.metrics.ok)"), SWEEP)
    assert not holds_
    assert explain(trace) == "all(steps.train.instances.*.metrics.ok) = false"
    _, trace = traced(parse(f"max ( {AUC} ) and params.floor"), SWEEP)
    assert explain(trace) == f"max({AUC}) = 0.91, params.floor = 0.8"
    assert trace.reads[("steps", "train", "instances", "*", "metrics", "auc")] == [
        0.91,
        None,
        0.85,
        0.88,
    ]
    assert trace.aggregates == {f"max({AUC})": 0.91}


def test_missing_metrics_skips_wildcard_reads() -> None:
    # The planner's warning for a metric a step that ran did not write reads trace.reads:
    # a wildcard read (a list) is not a step's own metric, and must not trip it up.
    text = f"max({AUC}) > 0.5 and count(steps.train.instances) > 0 and steps.prep.metrics.cols"
    _, trace = traced(parse(text), SWEEP)
    warning = missing_metrics(trace, SWEEP)
    assert warning is not None and "`cols` is missing: prep wrote metrics" in warning
    _, trace = traced(parse(f"max({AUC}) > 0.5"), ctx(instance(0.1)))
    assert missing_metrics(trace, ctx(instance(0.1))) is None


# --- checks ----------------------------------------------------------------------------------

STEPS = ("train", "prep", "select")


def problems(text: str, **kwargs: Any) -> list[str]:
    kwargs.setdefault("fanned", ("train",))
    return check(parse(text), steps=STEPS, params=("floor",), **kwargs)


def test_check_accepts_fan_out_references() -> None:
    for text in [
        f"max({AUC}) >= params.floor",
        "count(steps.train.instances) == count(steps.train.instances.*.name)",
        "all(steps.train.instances.*.status) and any(steps.train.instances.*.matrix.lr)",
        "min(steps.train.instances.*.metrics.loss.last)",
        "max(baseline.steps.train.instances.*.metrics.auc)",
        "steps.train.status == 'succeeded' and steps.prep.metrics.rows",
    ]:
        assert problems(text) == [], text
    assert problems("matrix.lr > 0.1", matrix=("lr",)) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "count(steps.prep.instances)",
            "prep does not fan out (it has no matrix or foreach), "
            "so steps.prep.instances does not exist",
        ),
        (
            "max(steps.prep.instances.*.metrics.auc)",
            "prep does not fan out (it has no matrix or foreach), "
            "so steps.prep.instances.*.metrics.auc does not exist",
        ),
        (
            "steps.train.instances == null",
            "steps.train.instances is a list: count(steps.train.instances) gives the number of "
            "instances, and e.g. max(steps.train.instances.*.metrics.<key>) reads their values",
        ),
        (
            "max(steps.train.instances.*.status)",
            "max() takes numbers, and steps.train.instances.*.status is text",
        ),
        ("min(steps.train.instances.*.name)", "min() takes numbers"),
        (
            "any(steps.train.instances.*.stauts)",
            "unknown field 'stauts' in steps.train.instances.*.stauts (did you mean 'status'?): "
            "write steps.train.instances.*.<field> (name, status, metrics.<key> or matrix.<key>)",
        ),
        (
            "count(steps.train.instances.*.metrics)",
            "incomplete reference steps.train.instances.*.metrics: "
            "write steps.train.instances.*.metrics.<key>",
        ),
        (
            "count(steps.train.instances.*.matrix)",
            "malformed reference steps.train.instances.*.matrix: "
            "write steps.train.instances.*.matrix.<key>",
        ),
        (
            "count(steps.train.instances.*.status.x)",
            "malformed reference steps.train.instances.*.status.x: "
            "write steps.train.instances.*.status",
        ),
        ("steps.train.instances.x > 1", "malformed reference steps.train.instances.x: write"),
        (
            "steps.train.metrics.auc > 0.9",
            "train fans out, so steps.train.metrics.auc is always null: read its instances', "
            "e.g. max(steps.train.instances.*.metrics.auc)",
        ),
        (
            "steps.train.instanses",
            "unknown field 'instanses' in steps.train.instanses (did you mean 'instances'?)",
        ),
        (
            "count(steps.prep.metrics.instances)",
            "count() needs a list, and steps.prep.metrics.instances is a single value",
        ),
        (
            "count(steps.trian.instances)",
            "unknown step 'trian' in steps.trian.instances (did you mean 'train'?)",
        ),
        (
            "matrix.lr",
            "matrix.lr cannot be used here: matrix. is only for a step with matrix or foreach",
        ),
        ("matrix", "matrix cannot be used here: matrix. is only for a step with matrix"),
    ],
)
def test_check_messages(text: str, message: str) -> None:
    found = problems(text)
    assert len(found) == 1, found
    assert found[0].startswith(message)


def test_check_matrix_keys() -> None:
    assert problems("matrix.lrr", matrix=("lr", "depth")) == [
        "unknown matrix key 'lrr' in matrix.lrr (did you mean 'lr'?)"
    ]
    assert problems("matrix.lr.x", matrix=("lr",)) == [
        "malformed reference matrix.lr.x: write matrix.<key>"
    ]
    assert problems("matrix.lr", matrix=()) == ["unknown matrix key 'lr' in matrix.lr"]


def test_check_instance_matrix_keys_when_known() -> None:
    text = "max(steps.train.instances.*.matrix.dept)"
    assert problems(text) == []  # step names only: any key
    assert problems(text, fanned={"train": ("lr", "depth")}) == [
        "unknown matrix key 'dept' in steps.train.instances.*.matrix.dept (did you mean 'depth'?)"
    ]
    assert problems("max(steps.train.instances.*.matrix.depth)", fanned={"train": ["depth"]}) == []


def test_check_defaults_keep_todays_behaviour() -> None:
    # Callers that pass neither `fanned` nor `matrix`: no step fans out, no matrix root.
    expr = parse("count(steps.train.instances) > 0 or matrix.lr")
    assert check(expr, steps=STEPS, params=()) == [
        "train does not fan out (it has no matrix or foreach), "
        "so steps.train.instances does not exist",
        "matrix.lr cannot be used here: matrix. is only for a step with matrix or foreach",
    ]
    assert check(parse("steps.train.metrics.auc"), steps=STEPS, params=()) == []


def test_check_drift_roots_and_matrix() -> None:
    found = check(parse("metrics.drift_score > 0.2"), steps=(), params=(), roots=("metrics",))
    assert found == []
    found = check(parse("matrix.lr"), steps=(), params=(), roots=("metrics",))
    assert found == [
        "matrix.lr cannot be used here: matrix. is only for a step with matrix or foreach"
    ]
