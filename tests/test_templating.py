"""`${{ params.x }}` / `${{ trigger.* }}` substitution: typed when whole, text when embedded."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.templating import check_reference, substitute, substitute_text, templates_in

PARAMS: dict[str, Any] = {"n": 100, "lr": 0.01, "fast": True, "tag": "v1", "empty": ""}
TRIGGER: dict[str, Any] = {
    "kind": "webhook",
    "event": "retrain",
    "payload": {"dataset": "2024-06", "rows": 1200, "labels": ["a", "b"]},
}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("${{ params.n }}", 100),
        ("${{params.n}}", 100),
        ("  ${{ params.lr }}  ", 0.01),
        ("${{ params.fast }}", True),
        ("${{ params.tag }}", "v1"),
        ("${{ trigger.kind }}", "webhook"),
        ("${{ trigger.payload.rows }}", 1200),
        ("${{ trigger.payload.labels }}", ["a", "b"]),
        ("${{ trigger.payload.missing }}", None),
        ("${{ trigger.kind.deeper }}", None),
    ],
)
def test_a_single_template_keeps_its_type(text: str, value: Any) -> None:
    assert substitute(text, PARAMS, TRIGGER) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("--n=${{ params.n }}", "--n=100"),
        ("${{ params.n }}${{ params.tag }}", "100v1"),
        ("lr ${{ params.lr }}, fast ${{ params.fast }}", "lr 0.01, fast true"),
        ("model-${{ trigger.payload.dataset }}.pkl", "model-2024-06.pkl"),
        ("[${{ trigger.payload.missing }}]", "[]"),
        ("labels=${{ trigger.payload.labels }}", 'labels=["a", "b"]'),
        ("no templates here", "no templates here"),
        ("a ${ { params.n } } b", "a ${ { params.n } } b"),
    ],
)
def test_an_embedded_template_becomes_text(text: str, value: str) -> None:
    assert substitute(text, PARAMS, TRIGGER) == value


def test_nested_config_is_substituted_throughout() -> None:
    config: dict[str, Any] = {
        "model": {"n_estimators": "${{ params.n }}", "name": "rf-${{ params.tag }}"},
        "layers": [64, "${{ params.n }}", {"dropout": "${{ params.lr }}"}],
        "source": "${{ trigger.payload }}",
        "constant": 3,
        "flag": False,
        "nothing": None,
    }
    assert substitute(config, PARAMS, TRIGGER) == {
        "model": {"n_estimators": 100, "name": "rf-v1"},
        "layers": [64, 100, {"dropout": 0.01}],
        "source": {"dataset": "2024-06", "rows": 1200, "labels": ["a", "b"]},
        "constant": 3,
        "flag": False,
        "nothing": None,
    }
    assert config["model"]["n_estimators"] == "${{ params.n }}"  # the input is not changed


def test_substituted_values_are_never_expanded_again() -> None:
    trigger = {"event": "${{ params.n }}"}
    assert substitute("${{ trigger.event }}", PARAMS, trigger) == "${{ params.n }}"
    assert substitute("x ${{ trigger.event }}", PARAMS, trigger) == "x ${{ params.n }}"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("${{ params.n }}", "100"),
        ("${{ params.fast }}", "true"),
        ("${{ params.empty }}", ""),
        ("${{ trigger.payload.missing }}", ""),
        ("${{ trigger.payload }}", '{"dataset": "2024-06", "labels": ["a", "b"], "rows": 1200}'),
        ("--lr=${{ params.lr }}", "--lr=0.01"),
    ],
)
def test_substitute_text_always_gives_text(text: str, value: str) -> None:
    assert substitute_text(text, PARAMS, TRIGGER) == value


def test_substitute_refuses_non_references() -> None:
    with pytest.raises(ValueError, match="not a reference"):
        substitute("${{ params.n * 2 }}", PARAMS, TRIGGER)


def test_templates_in() -> None:
    assert templates_in("a ${{ params.n }} b ${{trigger.kind}} c") == ["params.n", "trigger.kind"]
    assert templates_in("${{ }}") == [""]
    assert templates_in("no ${ templates }") == []


@pytest.mark.parametrize(
    "inner", ["params.n", "trigger.kind", "trigger.payload.rows", "trigger.payload.a-b"]
)
def test_check_reference_accepts(inner: str) -> None:
    assert check_reference(inner, PARAMS) is None


@pytest.mark.parametrize(
    ("inner", "message"),
    [
        (
            "params.m",
            "'${{ params.m }}' names unknown param 'm' (declared: empty, fast, lr, n, tag)",
        ),
        ("params.n.x", "'${{ params.n.x }}': params.<name> takes exactly one name"),
        ("params", "'${{ params }}' is not a reference"),
        ("secrets.TOKEN", "'${{ secrets.TOKEN }}' is not a reference"),
        ("params.n + 1", "'${{ params.n + 1 }}' is not a reference"),
        ("", "'${{  }}' is not a reference"),
    ],
)
def test_check_reference_rejects(inner: str, message: str) -> None:
    found = check_reference(inner, PARAMS)
    assert found is not None
    assert found.startswith(message)


def test_check_reference_with_no_params_declared() -> None:
    assert check_reference("params.n", {}) == (
        "'${{ params.n }}' names unknown param 'n' (no params are declared)"
    )
