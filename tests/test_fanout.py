"""Fan-out in the core: value sets, instance names, templates, expansion, settling a group."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core import fanout
from engine.core.expand import expand
from engine.core.manifest import StepRecord, StepStatus
from engine.core.parse import LoadedPipeline, load_text
from engine.core.planner import Action, Planner
from engine.core.spec import FanOut, Matrix
from engine.errors import PipelineInvalid

S = StepStatus


def matrix(**axes: Any) -> FanOut:
    return FanOut(matrix=Matrix.model_validate(axes))


def names(spec: FanOut, params: dict[str, Any] | None = None) -> list[str]:
    return [fanout.instance_name("t", v) for v in fanout.combinations(spec, params or {}, "t")]


def load(steps: str, params: str = "") -> LoadedPipeline:
    head = "name: p\ndefaults: {image: busybox}\n" + (f"params: {params}\n" if params else "")
    return load_text(head + "steps:\n" + steps, "p.yaml")


# ---- value sets -----------------------------------------------------------------------------


def test_a_grid_is_the_cross_product_in_axis_order() -> None:
    assert names(matrix(lr=[0.1, 0.01], depth=[2, 4, 8])) == [
        "t[lr=0.1,depth=2]",
        "t[lr=0.1,depth=4]",
        "t[lr=0.1,depth=8]",
        "t[lr=0.01,depth=2]",
        "t[lr=0.01,depth=4]",
        "t[lr=0.01,depth=8]",
    ]


def test_exclude_removes_matching_combinations_and_include_extends_or_adds() -> None:
    spec = matrix(
        os=["linux", "mac"],
        py=[3, 4],
        exclude=[{"os": "mac", "py": 3}],
        include=[
            {"os": "linux", "gpu": True},  # extends the linux combinations
            {"os": "win", "py": 4},  # matches no combination: a new one
        ],
    )
    assert names(spec) == [
        "t[os=linux,py=3,gpu=true]",
        "t[os=linux,py=4,gpu=true]",
        "t[os=mac,py=4]",
        "t[os=win,py=4]",
    ]


def test_include_never_overwrites_an_axis_value() -> None:
    # {py: 5} would overwrite py of every combination: it is added as its own instance
    spec = matrix(py=[3], include=[{"py": 5}])
    assert names(spec) == ["t[py=3]", "t[py=5]"]


def test_duplicates_collapse_and_booleans_are_not_numbers() -> None:
    assert names(matrix(x=[1, 1, True])) == ["t[x=1]", "t[x=true]"]


def test_foreach_over_plain_values_and_over_mappings() -> None:
    assert names(FanOut(foreach=["eu", "us"])) == ["t[eu]", "t[us]"]
    spec = FanOut(foreach=[{"region": "eu", "shard": 1}, {"region": "us", "shard": 2}])
    assert names(spec) == ["t[region=eu,shard=1]", "t[region=us,shard=2]"]


def test_a_list_param_feeds_an_axis_or_foreach() -> None:
    params = {"regions": ["eu", "apac"]}
    assert names(FanOut(foreach="${{ params.regions }}"), params) == ["t[eu]", "t[apac]"]
    spec = FanOut(matrix=Matrix.model_validate({"r": "${{ params.regions }}", "n": [1]}))
    assert names(spec, params) == ["t[r=eu,n=1]", "t[r=apac,n=1]"]


@pytest.mark.parametrize(
    ("regions", "message"),
    [
        ([], "fans out over nothing"),
        ([f"r{i}" for i in range(257)], "257 instances; the limit is 256"),
        ("eu", "must be a list"),
    ],
)
def test_a_param_that_makes_a_bad_fanout_is_invalid_input(regions: Any, message: str) -> None:
    with pytest.raises(fanout.FanOutError, match=message) as caught:
        fanout.combinations(FanOut(foreach="${{ params.regions }}"), {"regions": regions}, "t")
    assert caught.value.exit_code == 2


def test_a_huge_product_is_refused_before_it_is_listed() -> None:
    spec = matrix(a=list(range(100)), b=list(range(100)), c=list(range(100)))
    with pytest.raises(fanout.FanOutError, match="1000000 instances"):
        fanout.combinations(spec, {}, "t")


# ---- names ----------------------------------------------------------------------------------


def test_names_show_plain_text_and_digest_anything_else() -> None:
    name = fanout.instance_name("t", {"path": "data/eu west.csv", "n": 1.5})
    assert name.startswith("t[path=~") and name.endswith(",n=1.5]")
    assert "/" not in name and " " not in name
    long = fanout.instance_name("t", {f"key{i}": f"value-{i}" for i in range(12)})
    assert long.startswith("t[#") and len(long) == len("t[#]") + 12


def test_two_values_with_the_same_text_are_refused_at_load() -> None:
    with pytest.raises(PipelineInvalid, match=r"p\.yaml:5: step 't': two instances would both"):
        load("  - name: t\n    foreach: [1, '1']\n    run: 'true'\n")


# ---- templates and expansion ----------------------------------------------------------------


SWEEP = """\
  - name: prep
    run: 'true'
  - name: train
    needs: [prep]
    matrix: {lr: [0.1, 0.01], depth: [2]}
    run: echo ${{ matrix.lr }}
    config: {lr: "${{ matrix.lr }}", label: "lr ${{ matrix.lr }}", seed: "${{ params.seed }}"}
    env: {DEPTH: "${{ matrix.depth }}"}
    command: null
    allow_failures: 1
  - name: select
    needs: [train]
    run: 'true'
"""


def test_expand_makes_instances_and_a_group_that_dependents_need() -> None:
    loaded = load(SWEEP, "{seed: 7}")
    assert [s.name for s in loaded.steps] == ["prep", "train", "select"]  # the template
    run = expand(loaded, {"seed": 7})
    by_name = {s.name: s for s in run.steps}
    first, second = "train[lr=0.1,depth=2]", "train[lr=0.01,depth=2]"
    assert list(by_name) == ["prep", first, second, "train", "select"]
    group = by_name["train"]
    assert group.is_group and group.instances == (first, second)
    assert run.dag.needs["train"] == (first, second)
    assert run.dag.needs[first] == ("prep",)
    assert run.dag.needs["select"] == ("train",)
    one = by_name[first]
    assert one.instance_of == "train" and one.matrix == {"lr": 0.1, "depth": 2}
    assert one.run == "echo 0.1"
    assert one.config == {"lr": 0.1, "label": "lr 0.1", "seed": "${{ params.seed }}"}
    assert one.env == {"DEPTH": "2"}
    assert one.fanout is None and not one.is_group
    assert expand(run, {"seed": 7}) is run  # once only


def test_a_pipeline_without_fanout_is_left_as_it_is() -> None:
    loaded = load("  - name: a\n    run: 'true'\n")
    assert expand(loaded, {}) is loaded


# ---- settling -------------------------------------------------------------------------------


def group(allow: int | float = 0, fail_fast: bool = False, count: int = 4) -> Any:
    steps = expand(
        load(
            "  - name: t\n"
            f"    foreach: {list(range(count))}\n"
            f"    allow_failures: {allow}\n"
            f"    fail_fast: {str(fail_fast).lower()}\n"
            "    run: 'true'\n"
        ),
        {},
    ).steps
    return next(s for s in steps if s.is_group)


@pytest.mark.parametrize(
    ("statuses", "allow", "expected"),
    [
        ([S.succeeded] * 4, 0, S.succeeded),
        ([S.cached] * 4, 0, S.cached),
        ([S.cached, S.cached, S.skipped, S.cached], 0, S.cached),
        ([S.cached, S.succeeded, S.cached, S.cached], 0, S.succeeded),
        ([S.succeeded, S.failed, S.succeeded, S.succeeded], 0, S.failed),
        ([S.succeeded, S.failed, S.succeeded, S.succeeded], 1, S.succeeded),
        ([S.failed, S.failed, S.succeeded, S.succeeded], 1, S.failed),
        ([S.failed, S.failed, S.succeeded, S.succeeded], 0.5, S.succeeded),
        ([S.failed, S.failed, S.succeeded, S.succeeded], 0.25, S.failed),
        ([S.skipped] * 4, 0, S.skipped),
        ([S.upstream_failed] * 4, 0, S.upstream_failed),
        ([S.succeeded, S.cancelled, S.succeeded, S.succeeded], 0, S.cancelled),
        ([S.failed, S.cancelled, S.cancelled, S.cancelled], 0, S.failed),
        ([S.failed] * 4, 4, S.skipped),
    ],
)
def test_a_group_settles_from_its_instances(
    statuses: list[StepStatus], allow: float, expected: StepStatus
) -> None:
    g = group(allow)
    status, reason = fanout.settle(g, dict(zip(g.instances, statuses, strict=True)))
    assert status is expected, reason
    assert reason.startswith("4 instances: ")


def test_fail_fast_stops_once_failures_pass_the_allowance() -> None:
    g = group(allow=1, fail_fast=True)
    one_failed = dict(zip(g.instances, [S.failed, S.running, S.pending, S.pending], strict=True))
    assert not fanout.should_stop(g, one_failed)
    two_failed = {**one_failed, g.instances[1]: S.failed}
    assert fanout.should_stop(g, two_failed)
    assert not fanout.should_stop(group(allow=1), two_failed)  # fail_fast is off by default


def test_the_index_lists_names_values_statuses_and_metrics_in_order() -> None:
    g = group(count=2)
    records = {
        g.instances[0]: StepRecord(status=S.succeeded, matrix={"item": 0}, metrics={"auc": 0.9}),
        g.instances[1]: StepRecord(status=S.failed, matrix={"item": 1}),
    }
    assert fanout.index(g, records) == [
        {"name": "t[0]", "matrix": {"item": 0}, "status": "succeeded", "metrics": {"auc": 0.9}},
        {"name": "t[1]", "matrix": {"item": 1}, "status": "failed", "metrics": {}},
    ]


# ---- the planner ----------------------------------------------------------------------------


def test_the_planner_settles_a_group_once_every_instance_finished_and_reads_matrix() -> None:
    run = expand(
        load(
            "  - name: t\n"
            "    matrix: {n: [1, 2]}\n"
            "    when: matrix.n > 1\n"
            "    run: 'true'\n"
            "  - name: after\n"
            "    needs: [t]\n"
            "    run: 'true'\n"
        ),
        {},
    )
    planner = Planner(run.dag, {s.name: s for s in run.steps})
    statuses = {s.name: S.pending for s in run.steps}
    first = {d.step: d for d in planner.next(statuses, {"params": {}, "steps": {}})}
    assert first["t[n=1]"].action is Action.skip and "1 > 1" not in first["t[n=1]"].reason
    assert first["t[n=2]"].action is Action.run
    assert "t" not in first  # its instances have not finished
    statuses.update({"t[n=1]": S.skipped, "t[n=2]": S.succeeded})
    settled = {d.step: d for d in planner.next(statuses, {"params": {}, "steps": {}})}
    assert settled["t"].action is Action.settle and settled["t"].status is S.succeeded


# ---- the JSON Schema ------------------------------------------------------------------------


def test_the_json_schema_takes_a_sweep_and_refuses_nested_values() -> None:
    import jsonschema

    from engine.app.pipelines import schema

    validator = jsonschema.Draft202012Validator(schema())
    step = {
        "name": "train",
        "image": "busybox",
        "matrix": {"lr": [0.1, 0.01], "depth": "${{ params.depths }}", "include": [{"lr": 1}]},
        "max_parallel": 2,
        "fail_fast": True,
        "allow_failures": 0.25,
    }
    good = {"name": "p", "steps": [step, {"name": "s", "foreach": ["eu"], "image": "b"}]}
    assert list(validator.iter_errors(good)) == []
    for bad in ({"matrix": {"lr": [[1]]}}, {"allow_failures": 2.5}, {"max_parallel": 0}):
        assert list(validator.iter_errors({"name": "p", "steps": [{**step, **bad}]})), bad


def test_a_preview_says_what_an_aggregate_over_a_sweep_came_to() -> None:
    from engine.core import expressions, preview

    expr = expressions.parse("max(steps.train.instances.*.metrics.auc) >= 0.95")
    instances = [
        {"name": f"train[{v}]", "status": "succeeded", "metrics": {"auc": v}} for v in (0.9, 0.91)
    ]
    context = {"steps": {"train": {"status": "succeeded", "metrics": {}, "instances": instances}}}
    assert preview.held_because(expr, context) == (
        "max(steps.train.instances.*.metrics.auc) 0.91 < 0.95"
    )


def test_a_when_cannot_compare_a_list_param() -> None:
    with pytest.raises(PipelineInvalid, match=r"params\.regions is a list param"):
        load("  - name: a\n    when: params.regions == 'eu'\n    run: 'true'\n", "{regions: [eu]}")
