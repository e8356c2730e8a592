"""The step DAG: levels, order, cycles, and its four renderings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core import graph, graph_render
from engine.core.graph import CycleError, Dag, build, find_cycle
from engine.core.graph_render import render

DIAMOND = {"prepare": [], "train": ["prepare"], "tune": ["prepare"], "evaluate": ["train", "tune"]}


def _with_finally(dag: Dag, final: dict[str, list[str]]) -> Dag:
    """A Dag as the loader makes it: main levels, then `finally` steps apart."""
    final_dag = build(final)
    return Dag(
        needs={**dag.needs, **final_dag.needs},
        order=dag.order,
        levels=dag.levels,
        finally_steps=final_dag.order,
    )


def test_levels_of_a_diamond() -> None:
    dag = build(DIAMOND)
    assert dag.levels == (("prepare",), ("train", "tune"), ("evaluate",))
    assert dag.order == ("prepare", "train", "tune", "evaluate")
    assert dag.edges == [
        ("prepare", "train"),
        ("prepare", "tune"),
        ("train", "evaluate"),
        ("tune", "evaluate"),
    ]


def test_order_is_topological_and_keeps_declaration_order() -> None:
    needs = {"z": [], "c": ["z"], "a": [], "b": ["a", "c"], "y": []}
    dag = build(needs)
    assert dag.levels == (("z", "a", "y"), ("c",), ("b",))
    position = {name: i for i, name in enumerate(dag.order)}
    for step, deps in needs.items():
        assert all(position[d] < position[step] for d in deps)


def test_a_step_lands_on_the_level_after_its_deepest_need() -> None:
    dag = build({"a": [], "b": ["a"], "c": ["b"], "d": ["a", "c"], "e": ["a"]})
    assert dag.levels == (("a",), ("b", "e"), ("c",), ("d",))


def test_duplicate_and_unknown_needs_are_dropped_by_build() -> None:
    dag = build({"a": [], "b": ["a", "a", "ghost"]})
    assert dag.needs["b"] == ("a",)


def test_empty_graph() -> None:
    dag = build({})
    assert dag.levels == ()
    assert dag.order == ()
    assert render(dag, "json") == '{\n  "levels": [],\n  "edges": []\n}\n'


def test_ancestors_and_dependents() -> None:
    dag = build(DIAMOND)
    assert dag.ancestors("evaluate") == {"prepare", "train", "tune"}
    assert dag.ancestors("prepare") == set()
    assert dag.dependents() == {
        "prepare": ["train", "tune"],
        "train": ["evaluate"],
        "tune": ["evaluate"],
        "evaluate": [],
    }


@pytest.mark.parametrize(
    ("needs", "cycle"),
    [
        ({"a": ["a"]}, ["a", "a"]),
        ({"a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"]),
        ({"x": [], "a": ["x", "b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"]),
        ({"ok": [], "a": ["ok"], "b": ["a", "c"], "c": ["b"]}, ["b", "c", "b"]),
    ],
)
def test_find_cycle_names_it_closed(needs: dict[str, list[str]], cycle: list[str]) -> None:
    assert find_cycle(needs) == cycle


def test_find_cycle_none_for_a_dag() -> None:
    assert find_cycle(DIAMOND) is None
    assert find_cycle({}) is None


def test_find_cycle_ignores_unknown_names() -> None:
    assert find_cycle({"a": ["nowhere"]}) is None


def test_find_cycle_on_a_long_chain_does_not_recurse() -> None:
    n = 20_000  # far beyond Python's recursion limit
    needs = {f"s{i}": [f"s{i + 1}"] for i in range(n)}
    needs[f"s{n}"] = ["s0"]
    cycle = find_cycle(needs)
    assert cycle is not None
    assert len(cycle) == n + 2
    assert cycle[0] == cycle[-1] == "s0"


def test_build_raises_cycle_error_naming_the_cycle() -> None:
    with pytest.raises(CycleError) as caught:
        build({"start": [], "a": ["start", "c"], "b": ["a"], "c": ["b"]})
    assert caught.value.cycle == ["a", "c", "b", "a"]
    assert str(caught.value) == "cycle in needs: a -> c -> b -> a"
    assert isinstance(caught.value, ValueError)


def test_build_is_fast_on_a_deep_chain() -> None:
    n = 5_000
    dag = build({f"s{i}": [f"s{i - 1}"] if i else [] for i in range(n)})
    assert len(dag.levels) == n


# Renderings -------------------------------------------------------------------------------


def test_render_text() -> None:
    dag = _with_finally(build(DIAMOND), {"notify": [], "cleanup": ["notify"]})
    assert render(dag, "text") == (
        "level 0:\n"
        "  prepare\n"
        "level 1:\n"
        "  train  (needs prepare)\n"
        "  tune  (needs prepare)\n"
        "level 2:\n"
        "  evaluate  (needs train, tune)\n"
        "finally:\n"
        "  notify\n"
        "  cleanup  (needs notify)\n"
    )


def test_render_text_with_statuses() -> None:
    dag = _with_finally(build({"a": [], "b": ["a"]}), {"notify": []})
    text = graph_render.render_text(dag, {"a": "succeeded", "b": "failed", "notify": "succeeded"})
    assert text == (
        "level 0:\n  a  [succeeded]\nlevel 1:\n  b  (needs a)  [failed]\n"
        "finally:\n  notify  [succeeded]\n"
    )


def test_render_json_exact_shape() -> None:
    document = json.loads(render(build(DIAMOND), "json"))
    assert document == {
        "levels": [["prepare"], ["train", "tune"], ["evaluate"]],
        "edges": [
            ["prepare", "train"],
            ["prepare", "tune"],
            ["train", "evaluate"],
            ["tune", "evaluate"],
        ],
    }


def test_render_json_puts_finally_steps_last() -> None:
    dag = _with_finally(build({"a": [], "b": ["a"]}), {"notify": [], "cleanup": ["notify"]})
    document = json.loads(render(dag, "json"))
    assert list(document) == ["levels", "edges"]
    assert document["levels"] == [["a"], ["b"], ["notify"], ["cleanup"]]
    assert document["edges"] == [["a", "b"], ["notify", "cleanup"]]


def test_render_mermaid() -> None:
    dag = _with_finally(build({"train": [], "deploy-model": ["train"]}), {"notify": []})
    text = render(dag, "mermaid")
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert lines[1:6] == [
        '  s_train["train"]',
        '  s_deploy_model["deploy-model"]',
        '  s_notify["notify"]',
        "  s_train --> s_deploy_model",
        "  s_deploy_model -.-> s_notify",
    ]
    assert "  classDef failed fill:#f8d7da,stroke:#dc3545" in lines
    assert not any(line.startswith("  class ") for line in lines)


def test_render_mermaid_colours_by_status() -> None:
    dag = build({"a": [], "b": ["a"]})
    text = graph_render.render_mermaid(dag, {"a": "succeeded", "b": "no-such-status"})
    assert "  class s_a succeeded" in text.splitlines()
    assert "s_b no-such-status" not in text


def test_render_dot() -> None:
    dag = _with_finally(build({"a": [], "b": ["a"]}), {"notify": []})
    assert render(dag, "dot") == (
        "digraph pipeline {\n"
        "  rankdir=LR;\n"
        '  "a";\n'
        '  "b";\n'
        '  "notify" [style=dashed];\n'
        '  "a" -> "b";\n'
        "}\n"
    )


def test_render_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown graph format 'svg'"):
        render(build({}), "svg")


def _reference_levels(needs: dict[str, list[str]]) -> list[list[str]]:
    """The definition, level by level (quadratic; for checking only)."""
    placed: set[str] = set()
    levels: list[list[str]] = []
    while len(placed) < len(needs):
        ready = [n for n, deps in needs.items() if n not in placed and set(deps) <= placed]
        assert ready, "cycle"
        levels.append(ready)
        placed.update(ready)
    return levels


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(min_value=0, max_value=30), max_size=3), max_size=30))
def test_levels_match_the_definition(raw: list[list[int]]) -> None:
    # step i may need only steps declared before it, so the graph is acyclic
    needs = {f"s{i}": [f"s{j % i}" for j in deps] if i else [] for i, deps in enumerate(raw)}
    dag = build(needs)
    assert [list(level) for level in dag.levels] == _reference_levels(needs)


def test_a_finally_steps_needs_on_main_steps_are_drawn_in_every_format() -> None:
    dag = graph.with_finally(build({"pick": [], "publish": ["pick"]}), {"summary": ["pick"]})
    assert render(dag, "text").endswith("finally:\n  summary  (needs pick)\n")
    mermaid = render(dag, "mermaid").splitlines()
    assert "  s_pick --> s_summary" in mermaid
    assert "  s_publish -.-> s_summary" in mermaid  # still after every main step
    assert "  s_pick -.-> s_summary" not in mermaid
    assert '  "pick" -> "summary";' in render(dag, "dot")
    document = json.loads(render(dag, "json"))
    assert ["pick", "summary"] in document["edges"]
    assert document["levels"] == [["pick"], ["publish"], ["summary"]]


def test_graph_shows_where_each_step_runs_in_every_format(tmp_path: Path) -> None:
    from conftest import make_repo, sluice

    repo = make_repo(
        tmp_path,
        {
            "p.yaml": """
            name: p
            defaults: {image: img}
            steps:
              - name: prep
                run: x
              - name: train
                needs: [prep]
                runs_on: [self-hosted, gpu]
                run: x
              - name: ship
                needs: train
                environment: production
                run: x
            """
        },
    )
    formats = ("text", "mermaid", "dot", "json")
    shown = {f: sluice("graph", "p", "--format", f, repo=repo).stdout for f in formats}
    assert "  train  (needs prep)  runs on self-hosted, gpu\n" in shown["text"]
    assert "  ship  (needs train)  environment production\n" in shown["text"]
    assert "prep  " not in shown["text"]  # the defaults are not spelled out
    assert 's_train["train<br/><small>runs on self-hosted, gpu</small>"]' in shown["mermaid"]
    assert '"ship" [label="ship\\nenvironment production"];' in shown["dot"]
    assert json.loads(shown["json"])["runners"] == {
        "train": {"runs_on": ["self-hosted", "gpu"], "environment": None},
        "ship": {"runs_on": [], "environment": "production"},
    }


# Fan-out: one node with its count, or (--expand) a box of its instances ----------------------

SWEEP = """
name: sweep
params:
  regions: [eu, "north america"]
defaults: {image: img}
steps:
  - name: prep
    run: x
  - name: train
    needs: prep
    matrix:
      lr: [0.1, 0.01]
      depth: [3, 5]
      exclude: [{lr: 0.01, depth: 5}]
    run: x
  - name: score
    needs: prep
    foreach: "${{ params.regions }}"
    run: x
  - name: shard
    needs: prep
    foreach: [{a: LONG_A, b: LONG_B, c: LONG_C}]
    run: x
  - name: select
    needs: [train, score, shard]
    run: x
finally:
  - name: notify
    needs: select
    run: x
""".replace("LONG_", "x" * 39)  # shard's one name: over 100 characters, so a digest


def _sweep() -> Any:
    from engine.core.parse import load_text

    return load_text(SWEEP, "sweep.yaml")


def test_a_fanned_out_step_is_one_node_with_its_count() -> None:
    from engine.app.pipelines import graph as draw

    text = draw(_sweep(), "text")
    assert text == (
        "level 0:\n"
        "  prep\n"
        "level 1:\n"
        "  train \u00d73  (needs prep)\n"
        "  score \u00d72 (foreach params.regions)  (needs prep)\n"
        "  shard \u00d71  (needs prep)\n"
        "level 2:\n"
        "  select  (needs train, score, shard)\n"
        "finally:\n"
        "  notify  (needs select)\n"
    )


def test_expand_lists_every_instance_beneath_its_step() -> None:
    from engine.app.pipelines import graph as draw

    lines = draw(_sweep(), "text", expand_steps=True).splitlines()
    at = lines.index("  train \u00d73  (needs prep)")
    assert lines[at + 1 : at + 4] == [
        "    train[lr=0.1,depth=3]",
        "    train[lr=0.1,depth=5]",
        "    train[lr=0.01,depth=3]",
    ]
    at = lines.index("  score \u00d72 (foreach params.regions)  (needs prep)")
    assert lines[at + 1] == "    score[eu]"
    assert re.fullmatch(r"    score\[~[0-9a-f]{8}\]", lines[at + 2])  # "north america"
    assert re.fullmatch(r"    shard\[#[0-9a-f]{12}\]", lines[at + 4])  # a long value
    assert lines[-3:] == [
        "  select  (needs train, score, shard)",
        "finally:",
        "  notify  (needs select)",
    ]


def test_mermaid_ids_never_hold_an_instance_name() -> None:
    from engine.app.pipelines import graph as draw

    text = draw(_sweep(), "mermaid", expand_steps=True)
    ids = re.findall(r"^\s+(\S+)\[\"", text, re.M) + re.findall(r"subgraph (\S+)\[", text)
    assert len(ids) == len(set(ids)) == 3 + 3 + 6  # 3 steps, 3 subgraphs, 6 instances
    assert all(re.fullmatch(r"s_[A-Za-z0-9_]+", i) for i in ids), ids
    assert '["train[lr=0.1,depth=3]"]' in text
    assert re.search(r'\["shard\[#35;[0-9a-f]{12}\]"\]', text)  # '#' as mermaid's entity
    assert "  s_prep --> s_train\n" in text and "  s_train --> s_select\n" in text
    assert "  s_select --> s_notify\n" in text


def test_mermaid_draws_both_forms_with_the_real_renderer(tmp_path: Path) -> None:
    mermaid_render = pytest.importorskip("mermaid_render")
    from engine.app.pipelines import graph as draw

    loaded = _sweep()
    markdown = "".join(
        f"```mermaid\n{draw(loaded, 'mermaid', expand_steps=e).rstrip()}\n```\n\n"
        for e in (False, True)
    )
    one, expanded = mermaid_render.render_markdown(markdown, tmp_path / "render")
    assert "train \u00d73" in one and "score \u00d72 (foreach params.regions)" in one
    assert "train[lr=0.1,depth=3]" not in one
    for name in ("train[lr=0.1,depth=3]", "train[lr=0.01,depth=3]", "score[eu]"):
        assert name in expanded
    assert re.search(r"shard\[#[0-9a-f]{12}\]", expanded)  # the entity drawn as '#'
    assert re.search(r"score\[~[0-9a-f]{8}\]", expanded)


def test_dot_draws_a_cluster_per_fanned_out_step() -> None:
    from engine.app.pipelines import graph as draw

    one = draw(_sweep(), "dot")
    assert '  "train" [label="train \u00d73"];\n' in one and "cluster" not in one
    boxed = draw(_sweep(), "dot", expand_steps=True)
    assert "  compound=true;\n" in boxed
    assert '  subgraph "cluster_train" {\n    label="train \u00d73";\n' in boxed
    assert '    "train[lr=0.01,depth=3]";\n' in boxed
    assert '  "prep" -> "train[lr=0.1,depth=3]" [lhead="cluster_train"];\n' in boxed
    assert '  "train[lr=0.1,depth=3]" -> "select" [ltail="cluster_train"];\n' in boxed


def test_json_names_each_steps_instances_and_expand_lays_out_the_run() -> None:
    from engine.app.pipelines import graph as draw

    one = json.loads(draw(_sweep(), "json"))
    assert one["levels"][:2] == [["prep"], ["train", "score", "shard"]]
    assert one["instances"]["train"] == [
        "train[lr=0.1,depth=3]",
        "train[lr=0.1,depth=5]",
        "train[lr=0.01,depth=3]",
    ]
    assert set(one["instances"]) == {"train", "score", "shard"}
    run = json.loads(draw(_sweep(), "json", expand_steps=True))
    assert run["instances"] == one["instances"]
    assert run["levels"][2] == ["train", "score", "shard"]
    assert "train[lr=0.1,depth=3]" in run["levels"][1]
    assert ["prep", "train[lr=0.1,depth=5]"] in run["edges"]
    assert ["train[lr=0.1,depth=5]", "train"] in run["edges"]
    assert ["train", "select"] in run["edges"]
    plain = json.loads(render(build(DIAMOND), "json"))
    assert "instances" not in plain


def test_collapse_folds_a_runs_instances_back_into_their_step() -> None:
    from engine.core.expand import expand

    loaded = _sweep()
    run = expand(loaded, loaded.pipeline.params)
    groups = {s.name: s.instances for s in run.steps if s.is_group}
    folded = graph.collapse(run.dag, groups)
    assert folded.levels == loaded.dag.levels
    assert folded.needs == loaded.dag.needs
    assert folded.finally_steps == ("notify",)
    assert graph.collapse(loaded.dag, groups) is loaded.dag  # nothing to fold
    fans = {name: graph.Fan(names) for name, names in groups.items()}
    assert graph.expanded(loaded.dag, fans).levels == run.dag.levels


def test_statuses_of_names_not_drawn_add_no_class_line() -> None:
    dag = build({"a": [], "t": ["a"]})
    fans = {"t": graph.Fan(("t[1]", "t[2]"))}
    statuses = {"a": "succeeded", "t": "failed", "t[1]": "failed", "t[2]": "succeeded"}
    one = graph_render.render_mermaid(dag, statuses, fans=fans)
    assert "  class s_t failed" in one and "t[1]" not in one.split("classDef")[-1]
    boxed = graph_render.render_mermaid(dag, statuses, fans=fans, expand=True)
    assert f"  class {graph_render._node_id('t[1]')} failed" in boxed
    assert "  class s_t failed" not in boxed  # a subgraph takes no class


def test_graph_expand_through_the_cli(tmp_path: Path) -> None:
    from conftest import make_repo, sluice

    repo = make_repo(tmp_path, {"sweep.yaml": SWEEP})
    done = sluice("graph", "sweep", "--expand", repo=repo, env={"NO_COLOR": "1"})
    assert done.returncode == 0, done.stderr
    assert "  train \u00d73  (needs prep)\n    train[lr=0.1,depth=3]\n" in done.stdout
    assert "\x1b" not in done.stdout
    shut = sluice("graph", "sweep", repo=repo)
    assert "  train \u00d73  (needs prep)\n  score" in shut.stdout
    assert "train[" not in shut.stdout


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(st.integers(min_value=0, max_value=20), max_size=3), min_size=1, max_size=12),
    st.dictionaries(st.integers(min_value=0, max_value=11), st.integers(1, 4), max_size=4),
)
def test_expanding_then_collapsing_gives_the_file_dag_back(
    raw: list[list[int]], fanned: dict[int, int]
) -> None:
    needs = {f"s{i}": [f"s{j % i}" for j in deps] if i else [] for i, deps in enumerate(raw)}
    dag = graph.with_finally(build(needs), {"fin": [f"s{len(raw) - 1}"]})
    fans = {
        f"s{i}": graph.Fan(tuple(f"s{i}[{k}]" for k in range(count)))
        for i, count in fanned.items()
        if i < len(raw)
    }
    run = graph.expanded(dag, fans)
    for name, fan in fans.items():
        assert run.needs[name] == fan.instances
        assert all(run.needs[i] == dag.needs[name] for i in fan.instances)
    folded = graph.collapse(run, {name: fan.instances for name, fan in fans.items()})
    assert folded.needs == dag.needs
    assert folded.levels == dag.levels
    assert folded.finally_steps == dag.finally_steps


def test_a_matrix_over_list_params_names_them_beside_its_count() -> None:
    from engine.app.pipelines import graph as draw
    from engine.core.parse import load_text

    loaded = load_text(
        "name: grid\nparams: {rates: [0.1, 0.01], depths: [2, 4, 8]}\ndefaults: {image: img}\n"
        "steps:\n  - name: fit\n    matrix: {lr: '${{ params.rates }}', depth: "
        "'${{ params.depths }}', seed: [1]}\n    run: x\n",
        "grid.yaml",
    )
    assert draw(loaded, "text") == (
        "level 0:\n  fit \u00d76 (matrix params.rates, params.depths)\n"
    )


def test_graph_counts_instances_for_params_given_with_p(tmp_path: Path) -> None:
    from conftest import make_repo, sluice

    repo = make_repo(tmp_path, {"sweep.yaml": SWEEP})
    done = sluice("graph", "sweep", "--expand", "-p", "regions=eu,us,ap", repo=repo)
    assert done.returncode == 0, done.stderr
    assert "  score \u00d73 (foreach params.regions)  (needs prep)\n" in done.stdout
    assert "    score[ap]\n" in done.stdout
    empty = sluice("graph", "sweep", "-p", "regions=[]", repo=repo)
    assert empty.returncode == 2
    assert "step 'score' fans out over nothing" in empty.stderr
