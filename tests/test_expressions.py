"""Tests for the `when:` expression language."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.expression_eval import check, evaluate, holds
from engine.core.expressions import (
    MAX_DEPTH,
    MAX_LENGTH,
    Arithmetic,
    Comparison,
    Constant,
    ExpressionError,
    Logical,
    Reference,
    Unary,
    parse,
)

GATE = (
    "not baseline or steps.evaluate.metrics.accuracy >= "
    "baseline.steps.evaluate.metrics.accuracy + 0.01"
)


def ctx(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "params": {"min_accuracy": 0.9, "n": 3, "name": "churn", "flag": True},
        "steps": {
            "train": {"status": "succeeded", "metrics": {"acc": 0.93, "loss": 0.2}},
            "validate-data": {"status": "failed", "metrics": {}},
            "evaluate": {"status": "succeeded", "metrics": {"accuracy": 0.95}},
        },
        "baseline": None,
        "trigger": {"kind": "cron"},
        "metrics": {"drift_detected": True, "drift_score": 0.4, "features": {"age": 0.1}},
    }
    base.update(overrides)
    return base


def ev(text: str, context: dict[str, Any] | None = None) -> Any:
    return evaluate(parse(text), ctx() if context is None else context)


def error(text: str, context: dict[str, Any] | None = None) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        ev(text, context)
    return info.value


# --- literals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("0.5", 0.5),
        ("1e-3", 0.001),
        ("2E2", 200.0),
        ("'a'", "a"),
        ('"b"', "b"),
        (r"'it\'s'", "it's"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'back\\slash'", "back\\slash"),
        ('"it\'s"', "it's"),
        ("''", ""),
        ("true", True),
        ("false", False),
        ("null", None),
    ],
)
def test_literals(text: str, value: object) -> None:
    result = ev(text)
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("'abc", 1, "unterminated string"),
        (r"'a\nb'", 3, "invalid escape"),
        ("1abc", 1, "invalid number"),
        ("1.2.3", 1, "invalid number"),
        ("1.", 1, "invalid number"),
        ("True", 1, "did you mean 'true'?"),
        ("None", 1, "unknown name 'None'"),
    ],
)
def test_literal_errors(text: str, column: int, fragment: str) -> None:
    err = error(text)
    assert err.column == column
    assert fragment in str(err)


# --- operators and precedence ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1 + 2", 3),
        ("5 - 7", -2),
        ("3 * 4", 12),
        ("7 / 2", 3.5),
        ("7 % 3", 1),
        ("-7 % 3", 2),
        ("-(2)", -2),
        ("- -2", 2),
        ("'a' + 'b'", "ab"),
        ("1 == 1", True),
        ("1 == 1.0", True),
        ("1 != 2", True),
        ("1 < 2", True),
        ("2 <= 2", True),
        ("3 > 2", True),
        ("2 >= 3", False),
        ("'a' < 'b'", True),
        ("true and false", False),
        ("true or false", True),
        ("not true", False),
        ("not 0", True),
        ("not ''", True),
        ("not 'x'", False),
        ("1 and 'x'", True),
        ("0 or ''", False),
    ],
)
def test_every_operator(text: str, value: object) -> None:
    result = ev(text)
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("2 * 3 % 4", 2),
        ("10 - 4 - 3", 3),
        ("12 / 2 / 3", 2.0),
        ("-2 * 3", -6),
        ("1 + 2 == 3", True),
        ("not 1 == 2", True),
        ("not false and false", False),
        ("true or true and false", True),
        ("(true or true) and false", False),
        ("false and true or true", True),
        ("not (1 < 2)", False),
        ("(1 < 2) == true", True),
    ],
)
def test_precedence(text: str, value: object) -> None:
    assert ev(text) == value


def test_tree_shape() -> None:
    root = parse("not params.a or params.b and 1 + 2 * 3 < 4").root
    assert isinstance(root, Logical) and root.op == "or"
    negated = root.operands[0]
    assert isinstance(negated, Unary) and isinstance(negated.operand, Reference)
    right = root.operands[1]
    assert isinstance(right, Logical) and right.op == "and"
    comparison = right.operands[1]
    assert isinstance(comparison, Comparison) and comparison.op == "<"
    assert isinstance(comparison.left, Arithmetic)
    assert comparison.left.rest[0][0] == "+"
    assert isinstance(comparison.left.rest[0][2], Arithmetic)
    assert isinstance(comparison.right, Constant)


def test_long_flat_chains_stay_shallow() -> None:
    assert ev(" + ".join(["1"] * 1000)) == 1000
    assert ev(" and ".join(["true"] * 400)) is True
    assert ev(" or ".join(["false"] * 400)) is False


def test_short_circuit_skips_errors() -> None:
    assert ev("false and 'a' < 1") is False
    assert ev("true or 'a' < 1") is True
    assert error("true and 'a' < 1").column == 14


@pytest.mark.parametrize("text", ["1 < 2 < 3", "1 == 1 == 1", "1 < 2 >= 0", "not 1 < 2 < 3"])
def test_comparisons_do_not_chain(text: str) -> None:
    err = error(text)
    assert "cannot follow a comparison" in err.message
    assert "a < b and b < c" in str(err)


def test_chain_error_column() -> None:
    assert error("1 < 2 < 3").column == 7


def test_not_inside_comparison_needs_parentheses() -> None:
    assert "needs parentheses" in error("1 == not true").message
    assert ev("true == (not false)") is True


# --- references -----------------------------------------------------------------------------


def test_references() -> None:
    expr = parse(GATE + " and params.x == trigger.kind and metrics.drift_detected")
    assert expr.references() == frozenset(
        {
            ("baseline",),
            ("steps", "evaluate", "metrics", "accuracy"),
            ("baseline", "steps", "evaluate", "metrics", "accuracy"),
            ("params", "x"),
            ("trigger", "kind"),
            ("metrics", "drift_detected"),
        }
    )


def test_hyphenated_step_names() -> None:
    expr = parse("steps.validate-data.status == 'failed'")
    assert expr.references() == {("steps", "validate-data", "status")}
    assert holds(expr, ctx())
    # Hyphens bind into the name; subtraction needs spaces.
    assert parse("params.n-1").references() == {("params", "n-1")}
    assert ev("params.n - 1") == 2
    assert ev("params.n -1") == 2


def test_reference_values() -> None:
    assert ev("params.min_accuracy") == 0.9
    assert ev("steps.train.status") == "succeeded"
    assert ev("steps.train.metrics.acc >= params.min_accuracy") is True
    assert ev("trigger.kind == 'cron'") is True
    assert ev("metrics.drift_detected") is True
    assert ev("metrics.features.age") == 0.1
    assert ev("params.name + '-v2'") == "churn-v2"


@pytest.mark.parametrize(
    "text",
    [
        "params.missing",
        "steps.train.metrics.missing",
        "steps.never-ran.status",
        "baseline.steps.train.metrics.acc",
        "trigger.nothing.deeper",
        "metrics.drift_score.below",
    ],
)
def test_missing_paths_are_null(text: str) -> None:
    assert ev(text) is None


def test_missing_roots_in_context_are_null() -> None:
    assert evaluate(parse("params.x == null"), {}) is True
    assert evaluate(parse("baseline"), {}) is False


def test_path_ending_at_a_mapping_is_an_error() -> None:
    err = error("steps.train.metrics")
    assert err.message == "steps.train.metrics is a mapping, not a single value"
    assert "is a list" in error("params.xs", ctx(params={"xs": [1]})).message


# --- null semantics -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("null + 1", None),
        ("1 - null", None),
        ("null * 'a'", None),
        ("-null", None),
        ("params.missing + 0.01", None),
        ("null == null", True),
        ("null != null", False),
        ("null == 0", False),
        ("null == false", False),
        ("null < 1", False),
        ("null >= 1", False),
        ("1 > null", False),
        ("null <= null", False),
        ("not null", True),
        ("1 / 0", None),
        ("1 % 0", None),
        ("1.5 / 0.0", None),
    ],
)
def test_null_semantics(text: str, value: object) -> None:
    assert ev(text) is value


def test_holds_truthiness() -> None:
    for text in ["null", "false", "0", "0.0", "''", "params.missing"]:
        assert holds(parse(text), ctx()) is False
    for text in ["true", "1", "-0.5", "'x'", "params.flag"]:
        assert holds(parse(text), ctx()) is True


# --- types ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("true + 1", "cannot add boolean and number"),
        ("'a' + 1", "cannot add string and number"),
        ("'a' - 'b'", "cannot subtract string and string"),
        ("'a' * 2", "cannot multiply string and number"),
        ("1 / true", "cannot divide number and boolean"),
        ("-'a'", "cannot negate string"),
        ("-true", "cannot negate boolean"),
        ("'a' < 1", "cannot compare string and number"),
        ("true < false", "cannot compare boolean and boolean"),
        ("params.flag > 0", "cannot compare boolean and number"),
    ],
)
def test_type_errors(text: str, message: str) -> None:
    assert error(text).message == message


def test_booleans_are_not_numbers_for_equality() -> None:
    assert ev("true == 1") is False
    assert ev("false != 0") is True
    assert ev("1 == '1'") is False


def test_overflow_is_an_expression_error() -> None:
    assert "too large" in error("1" + "0" * 400 + " + 0.5").message


def test_type_error_column() -> None:
    assert error("params.name + 1").column == 13


# --- baseline and the evaluation gate -------------------------------------------------------


def test_baseline_alone() -> None:
    assert ev("baseline") is False
    assert ev("baseline", ctx(baseline={"steps": {}})) is True
    assert ev("not baseline") is True


def test_gate_without_baseline_passes() -> None:
    assert holds(parse(GATE), ctx())


@pytest.mark.parametrize(("previous", "expected"), [(0.90, True), (0.94, True), (0.945, False)])
def test_gate_against_baseline(previous: float, expected: bool) -> None:
    baseline = {"steps": {"evaluate": {"status": "succeeded", "metrics": {"accuracy": previous}}}}
    assert holds(parse(GATE), ctx(baseline=baseline)) is expected


def test_gate_with_baseline_lacking_the_metric_fails() -> None:
    assert holds(parse(GATE), ctx(baseline={"steps": {}})) is False


# --- check() --------------------------------------------------------------------------------

STEPS = ("train", "evaluate", "validate-data")
PARAMS = ("min_accuracy", "n_estimators")


def problems(text: str, **kwargs: Any) -> list[str]:
    return check(parse(text), steps=STEPS, params=PARAMS, **kwargs)


def test_check_accepts_valid_references() -> None:
    assert problems(GATE) == []
    assert problems("steps.validate-data.status == 'succeeded' and trigger.kind") == []
    assert problems("params.min_accuracy < steps.train.metrics.acc") == []
    assert problems("steps.train.metrics.nested.key") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "steps.trian.status",
            "unknown step 'trian' in steps.trian.status (did you mean 'train'?)",
        ),
        ("steps.zzz.status", "unknown step 'zzz' in steps.zzz.status"),
        (
            "baseline.steps.evalute.metrics.a",
            "unknown step 'evalute' in baseline.steps.evalute.metrics.a (did you mean 'evaluate'?)",
        ),
        (
            "params.min_acuracy",
            "unknown param 'min_acuracy' in params.min_acuracy (did you mean 'min_accuracy'?)",
        ),
        (
            "steps.train",
            "incomplete reference steps.train: "
            "write steps.train.status or steps.train.metrics.<key>",
        ),
        (
            "steps.train.metrics",
            "incomplete reference steps.train.metrics: write steps.train.metrics.<key>",
        ),
        (
            "steps.train.stauts",
            "unknown field 'stauts' in steps.train.stauts (did you mean 'status'?): "
            "write steps.train.status or steps.train.metrics.<key>",
        ),
        ("params.a.b", "malformed reference params.a.b: write params.<name>"),
        ("params", "malformed reference params: write params.<name>"),
        ("trigger", "incomplete reference trigger: write trigger.<name>"),
        ("baseline.train", "malformed reference baseline.train: "),
        ("steps", "incomplete reference steps: "),
        ("steps.train.status.x", "malformed reference steps.train.status.x"),
        (
            "metrics.drift",
            "'metrics' cannot be used here (metrics.drift): "
            "references here start with params., steps., baseline or trigger.",
        ),
    ],
)
def test_check_messages(text: str, message: str) -> None:
    found = problems(text)
    assert len(found) == 1
    assert found[0].startswith(message)


def test_check_roots_for_drift_triggers() -> None:
    assert check(parse("metrics.drift_detected"), steps=(), params=(), roots=("metrics",)) == []
    found = check(parse("params.x"), steps=(), params=("x",), roots=("metrics",))
    assert found == ["'params' cannot be used here (params.x): references here start with metrics."]


def test_check_hints_at_missing_spaces_before_minus() -> None:
    [message] = problems("params.n_estimators-1 > 0")
    assert "put spaces around '-'" in message


def test_check_reports_in_order_without_duplicates() -> None:
    found = problems("params.zz or steps.nope.status or params.zz")
    assert found == ["unknown param 'zz' in params.zz", "unknown step 'nope' in steps.nope.status"]


# --- parse errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(1 + 2))", "unexpected ')' at column 8"),
        ("1 +", "unexpected end of expression at column 4"),
        ("", "empty expression at column 1"),
        ("   ", "empty expression at column 1"),
        (
            "foo",
            "unknown name 'foo' at column 1: references start with params., steps., "
            "baseline, trigger., metrics. or matrix.",
        ),
        ("1 + param.x", "unknown name 'param' at column 5"),
        ("(1 + 2", "expected ')', found the end at column 7: the '(' at column 1 is not closed"),
        ("1 = 1", "unexpected character '=' at column 3: use '==' to compare"),
        ("1 && 1", "unexpected character '&' at column 3: use 'and'"),
        ("!true", "unexpected character '!' at column 1: use 'not'"),
        ("1 2", "unexpected number 2 at column 3"),
        ("'a' 'b'", "unexpected string 'b' at column 5"),
        ("params.", "expected a name after '.' at column 8"),
        ("params.-x", "expected a name after '.' at column 8"),
        ("true.x", "unexpected character '.' at column 5"),
        ("1 not 2", "unexpected 'not' at column 3"),
        ("a@b", "unknown name 'a' at column 1"),
        ("1 @ 2", "unexpected character '@' at column 3"),
    ],
)
def test_parse_errors(text: str, expected: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert str(info.value).startswith(expected)


def test_error_attributes_and_pickling() -> None:
    with pytest.raises(ExpressionError) as info:
        parse("1 + )")
    err = info.value
    assert (err.message, err.column) == ("unexpected ')'", 5)
    assert isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(err))
    assert (str(copy), copy.column) == (str(err), 5)


def test_columns_count_across_newlines() -> None:
    with pytest.raises(ExpressionError) as info:
        parse("true and\n  )")
    assert info.value.column == 12


def test_non_string_input() -> None:
    with pytest.raises(ExpressionError):
        parse(True)  # type: ignore[arg-type]


# --- hostile input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('x')",
        "().__class__",
        "params.__class__",
        "steps.__init__.status",
        "lambda: 1",
        "[1, 2]",
        "{}",
        "params['x']",
        "f'{1}'",
        "1 if true else 2",
        "exec('1')",
        "open('/etc/passwd')",
        "2 ** 1000000",
        "\x00",
        "(" * 10_000 + "1" + ")" * 10_000,
        "(" * 2_000 + "1" + ")" * 2_000,
        "(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1),
        "-" * 4_000 + "1",
        "not " * 1_000 + "true",
        "1" + " + (1" * 600 + ")" * 600,
        "x" * (MAX_LENGTH + 1),
    ],
    ids=lambda text: repr(text[:24]),
)
def test_hostile_input_raises_expression_error(text: str) -> None:
    with pytest.raises(ExpressionError):
        parse(text)


def test_modest_nesting_is_fine() -> None:
    assert ev("(" * 20 + "1" + ")" * 20) == 1
    assert ev("not " * 20 + "true") is True


# --- property tests -------------------------------------------------------------------------

ATOMS = st.sampled_from(
    [
        "1",
        "0",
        "2.5",
        "1e3",
        "'a'",
        '"b"',
        "''",
        "true",
        "false",
        "null",
        "params.x",
        "params.y",
        "steps.train.status",
        "steps.train.metrics.acc",
        "steps.train.metrics",
        "baseline",
        "baseline.steps.train.metrics.acc",
        "trigger.kind",
        "metrics.m",
        "matrix.lr",
        "max(steps.train.instances.*.metrics.acc)",
        "min(steps.train.instances.*.matrix.lr)",
        "count(steps.train.instances)",
        "all(steps.train.instances.*.status)",
        "any(baseline.steps.train.instances.*.metrics.acc)",
    ]
)
BINARY = st.sampled_from(["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "and", "or"])


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, BINARY, children).map(" ".join),
        children.map(lambda c: f"({c})"),
        children.map(lambda c: f"not {c}"),
        children.map(lambda c: f"-{c}"),
    )


EXPRESSIONS = st.recursive(ATOMS, _combine, max_leaves=12)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    st.text(max_size=5),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=2), st.dictionaries(st.text(), SCALARS))
INSTANCES = st.one_of(
    VALUES,
    st.fixed_dictionaries(
        {"status": VALUES, "matrix": st.dictionaries(st.just("lr"), VALUES)},
        optional={"metrics": st.dictionaries(st.just("acc"), VALUES)},
    ),
)
CONTEXTS = st.fixed_dictionaries(
    {
        "params": st.dictionaries(st.sampled_from(["x", "y"]), VALUES),
        "steps": st.dictionaries(
            st.just("train"),
            st.fixed_dictionaries(
                {"status": VALUES, "metrics": st.dictionaries(st.just("acc"), VALUES)},
                optional={"instances": st.one_of(VALUES, st.lists(INSTANCES, max_size=3))},
            ),
        ),
        "baseline": st.one_of(
            st.none(),
            st.just({}),
            st.fixed_dictionaries(
                {"steps": st.just({"train": {"metrics": {"acc": 0.5}, "status": "ok"}})}
            ),
        ),
        "trigger": st.dictionaries(st.just("kind"), VALUES),
        "metrics": st.dictionaries(st.just("m"), VALUES),
        "matrix": st.dictionaries(st.just("lr"), VALUES),
    }
)
TOKENISH = st.text(alphabet="()+-*/%<>=!.,' \"\\0123456789eEntrufalsdobpmy_icx", max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), TOKENISH))
def test_parse_raises_only_expression_error(text: str) -> None:
    try:
        expr = parse(text)
    except ExpressionError:
        return
    check(expr, steps=("train",), params=("x",))
    check(expr, steps=("train",), params=("x",), fanned=("train",), matrix=("lr",))
    expr.references()


@settings(max_examples=300, deadline=None)
@given(EXPRESSIONS, CONTEXTS)
def test_evaluate_raises_only_expression_error(text: str, context: dict[str, Any]) -> None:
    try:
        expr = parse(text)  # e.g. `1 < 2 < 3` and `-not x` are generated but rejected
        value = evaluate(expr, context)
    except ExpressionError:
        return
    assert value is None or isinstance(value, bool | int | float | str)
    assert holds(expr, context) in (True, False)
