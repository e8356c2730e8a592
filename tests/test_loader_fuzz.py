"""Property tests: whatever text or structure the loader is given, it raises only PipelineInvalid.

Example counts keep the file under ~20 s; `SLUICE_FUZZ_SCALE=20` digs deeper.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.core.parse import LoadedPipeline, load_text
from engine.errors import PipelineInvalid

_SCALE = float(os.environ.get("SLUICE_FUZZ_SCALE", "1"))


def _fuzz(examples: int) -> settings:
    return settings(
        max_examples=max(1, int(examples * _SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, allow_unicode=True, sort_keys=False)


VALID = """\
name: fuzz-me
description: a pipeline the fuzzer mutates
triggers:
  - cron: "0 2 * * *"
  - cron: {schedule: "0 3 * * 1", timezone: Europe/Berlin, catchup: all}
  - push: {paths: ["src/**"]}
  - webhook: {event: retrain}
  - drift: {monitor: drift-check, when: "metrics.drift_detected", cooldown: 6h}
params:
  min_accuracy: 0.9
  n_estimators: 100
  tag: v1
  fast: false
baseline: {step: deploy}
defaults:
  image: python:3.11-slim
  timeout: 30m
  retries: {limit: 2, backoff: 10s, factor: 2, max_backoff: 5m}
  env: {LOG_LEVEL: info}
steps:
  - name: prepare
    run: python prepare.py
    workspace: [src, data]
  - name: train
    type: training
    image: {build: {context: ., dockerfile: steps/Dockerfile}}
    command: [python, train.py, "--n=${{ params.n_estimators }}"]
    needs: [prepare]
    config: {n_estimators: "${{ params.n_estimators }}", nested: {tag: "model-${{ params.tag }}"}}
    env: {MODEL_NAME: churn, EVENT: "${{ trigger.event }}"}
    secrets: [MLFLOW_TRACKING_TOKEN]
    timeout: 2h
    retries: 3
    resources: {cpus: 2, memory: 4g, gpus: 0}
  - name: evaluate
    type: evaluation
    needs: [train]
    run: python evaluate.py
    retries: {limit: 1, outcomes: [failed, error]}
  - name: deploy
    type: deployment
    needs: [evaluate]
    run: python deploy.py
    when: "not baseline or steps.evaluate.metrics.accuracy >= params.min_accuracy"
    approval: true
    network: bridge
finally:
  - name: notify
    run: python notify.py
    when: steps.deploy.status == 'failed'
"""
VALID_DATA: dict[str, Any] = yaml.safe_load(VALID)


def _loads_or_rejects(text: str) -> None:
    try:
        result = load_text(text, "fuzz.yaml")
    except PipelineInvalid as exc:
        assert exc.problems, "PipelineInvalid without a problem"
        for problem in exc.problems:
            assert problem.file == "fuzz.yaml"
            assert problem.line >= 0
            assert problem.message
    else:
        assert isinstance(result, LoadedPipeline)


def test_the_base_pipeline_is_valid() -> None:
    loaded = load_text(VALID)
    assert [s.name for s in loaded.steps] == ["prepare", "train", "evaluate", "deploy", "notify"]


# (a) arbitrary text -----------------------------------------------------------------------


@_fuzz(300)
@given(st.text(max_size=400))
@example("\t")
@example("- [")
@example("? [a]\n: b")
@example("a: 2020-13-45")  # an impossible date: was "YAML error" at line 1, now text
@example("name: !Ref x")  # an unknown tag: located, not an exception
@example("x: !!binary aGVsbG8=")  # bytes are not JSON
@example("&a [*a]")  # a recursive alias
@example("d: &x {image: a}\nsteps:\n  - <<: [*x]\n    image: b\n")  # was a KeyError
@example("steps:\n  - <<: 3\n")
@example("&0")  # a document that is only null: was PipelineInvalid with no problem
@example("\x00")
@example("\ud800")  # a lone surrogate cannot be encoded
def test_any_text_raises_only_pipeline_invalid(text: str) -> None:
    _loads_or_rejects(text)


_YAML_CHARS = st.sampled_from(list("abc:-[]{},&*!|<>'\"#?%@` \n\t0123456789.$"))


@_fuzz(300)
@given(st.text(_YAML_CHARS, max_size=200))
def test_yaml_punctuation_soup_raises_only_pipeline_invalid(text: str) -> None:
    _loads_or_rejects(text)


# (b) arbitrary YAML structures ------------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["name", "steps", "image", "run", "needs", "0 2 * * *", "10m", "4g", "a"])
)
_KEYS = st.text(max_size=12) | st.sampled_from(
    ["name", "steps", "finally", "image", "run", "command", "needs", "when", "params",
     "triggers", "cron", "retries", "env", "config", "defaults", "baseline", "resources"]
)  # fmt: skip
_TREES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=5),
    max_leaves=30,
)


@_fuzz(150)
@given(_TREES)
def test_any_yaml_structure_raises_only_pipeline_invalid(tree: Any) -> None:
    _loads_or_rejects(_dump(tree))


@_fuzz(60)
@given(
    st.fixed_dictionaries(
        {
            "name": _SCALARS,
            "steps": st.lists(st.dictionaries(_KEYS, _TREES, max_size=5), max_size=4),
        }
    )
)
def test_pipeline_shaped_structures_raise_only_pipeline_invalid(tree: dict[str, Any]) -> None:
    _loads_or_rejects(_dump(tree))


# (c) mutations of a valid pipeline --------------------------------------------------------


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(_paths(value, (*prefix, index)))
    return out


_ALL_PATHS = [p for p in _paths(VALID_DATA) if p]


def _mutate(data: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    """One mutation; raises LookupError or TypeError when an earlier one removed the path."""
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    if not isinstance(parent, dict | list):
        raise TypeError("the path no longer leads to a mapping or list")
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "replace":
        parent[last] = value
    elif isinstance(parent, dict):  # "add": a sibling key or item
        parent[str(value)[:20] if not isinstance(value, str) else value] = value
    else:
        parent.append(value)
    return data


@_fuzz(150)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_ALL_PATHS), st.sampled_from(["delete", "replace", "add"]), _TREES
        ),
        min_size=1,
        max_size=4,
    )
)
@example([(("triggers", 3), "replace", None), (("triggers", 3, "webhook"), "add", None)])
@example([(("steps", 1, "retries"), "replace", True)])
@example([(("steps", 1, "timeout"), "replace", float("nan"))])
@example([(("steps", 1, "timeout"), "replace", float("inf"))])
@example([(("steps", 1, "resources", "memory"), "replace", 2**70)])
@example([(("steps", 0, "name"), "replace", "deploy")])
@example([(("baseline", "step"), "replace", "notify")])
@example([(("steps", 1, "image"), "replace", {"build": {"contxt": "."}})])
def test_mutated_pipeline_loads_or_raises_pipeline_invalid(
    mutations: list[tuple[tuple[Any, ...], str, Any]],
) -> None:
    data = copy.deepcopy(VALID_DATA)
    for path, action, value in mutations:
        try:
            data = _mutate(data, path, action, value)
        except (LookupError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    _loads_or_rejects(_dump(data))


@_fuzz(200)
@given(st.integers(min_value=0, max_value=len(VALID) - 1), st.text(max_size=8))
def test_spliced_text_loads_or_raises_pipeline_invalid(position: int, insert: str) -> None:
    _loads_or_rejects(VALID[:position] + insert + VALID[position:])
