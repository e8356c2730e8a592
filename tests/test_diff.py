"""`sluice diff`: runs recorded through the engine on a real results branch, compared.

Also the pure parts it stands on: metric directions read off `when` gates
(engine/core/metric_goals.py) and the deltas and tables (engine/core/run_diff.py).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from engine.core.manifest import RunManifest
from engine.core.metric_goals import direction_of, directions, inferred, main_metric
from engine.core.parse import load_text
from engine.core.run_diff import delta_text, diff_runs, metric_delta, metrics_table
from engine.errors import PipelineInvalid
from tests.conftest import git, sluice
from tests.run_history import MODEL, Recorded


def diff_json(repo: Path, a: str, b: str) -> dict[str, Any]:
    done = sluice("diff", a, b, "--json", repo=repo)
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Recorded, RunManifest, RunManifest]:
    recorded = Recorded(tmp_path)
    first = recorded.run(n=1)
    second = recorded.run(n=3, note="second")
    return recorded, first, second


def test_json_names_params_metrics_steps_and_outputs(
    two_runs: tuple[Recorded, RunManifest, RunManifest],
) -> None:
    recorded, first, second = two_runs
    found = diff_json(recorded.repo, first.run_id, second.run_id)

    assert found["a"]["run_id"] == first.run_id and found["b"]["run_id"] == second.run_id
    assert found["a"]["pipeline"] == found["b"]["pipeline"] == "model"
    assert found["same_pipeline"] is True
    assert found["pipeline_changed"] is False and found["commit_changed"] is False
    assert found["params"] == [
        {"name": "n", "a": 1, "b": 3, "change": "changed"},
        {"name": "note", "a": "first", "b": "second", "change": "changed"},
    ]
    metrics = {m["key"]: m for m in found["metrics"]}
    assert metrics["evaluate.auc"]["a"] == 0.91 and metrics["evaluate.auc"]["b"] == 0.93
    assert metrics["evaluate.auc"]["delta"] == pytest.approx(0.02)
    assert metrics["evaluate.auc"]["direction"] == "higher"
    assert metrics["evaluate.auc"]["verdict"] == "better"
    assert metrics["evaluate.rmse"]["delta"] == pytest.approx(1 / 3 - 1, abs=1e-3)
    assert (metrics["evaluate.rmse"]["direction"], metrics["evaluate.rmse"]["verdict"]) == (
        "lower",
        "better",
    )
    assert metrics["evaluate.passed"] == {
        "key": "evaluate.passed",
        "a": False,
        "b": True,
        "delta": None,
        "direction": None,
        "verdict": "changed",
    }
    steps = {s["name"]: s for s in found["steps"]}
    assert steps["prepare"]["a"] == {"status": "succeeded", "cached_from": None}
    assert steps["prepare"]["b"] == {"status": "cached", "cached_from": first.run_id}
    assert steps["prepare"]["changed"] is True
    assert steps["train"]["changed"] is False
    assert list(steps) == ["prepare", "train", "evaluate", "deploy"]
    outputs = {f"{o['step']}/{o['path']}": o for o in found["outputs"]}
    assert set(outputs) == {"train/model.bin", "evaluate/metrics.json"}
    model = second.steps["train"].outputs["model.bin"].sha256
    assert outputs["train/model.bin"]["b"] == model
    assert outputs["train/model.bin"]["a"] == first.steps["train"].outputs["model.bin"].sha256
    assert outputs["train/model.bin"]["change"] == "changed"
    assert found["unchanged_outputs"] == 2  # prepare/data.csv and evaluate/eval.txt


def test_a_changed_pipeline_file_and_added_param_show(
    two_runs: tuple[Recorded, RunManifest, RunManifest],
) -> None:
    recorded, first, _ = two_runs
    text = MODEL.replace("params: {n: 1, note: first}", "params: {n: 1, note: first, seed: 7}")
    (recorded.repo / "pipelines" / "model.yaml").write_text(text)
    git(recorded.repo, "commit", "-q", "-am", "a seed param")
    third = recorded.run(n=1)

    found = diff_json(recorded.repo, first.run_id, third.run_id)
    assert found["pipeline_changed"] is True and found["commit_changed"] is True
    assert found["params"] == [{"name": "seed", "a": None, "b": 7, "change": "added"}]
    # n=1 again: the same model, so nothing but the pipeline changed
    assert {m["verdict"] for m in found["metrics"]} == {"same"}
    assert found["outputs"] == []

    text_out = sluice("diff", first.run_id, third.run_id, repo=recorded.repo).stdout
    assert "pipeline file pipelines/model.yaml: changed (" in text_out
    assert "seed  (absent) -> 7" in text_out


def test_text_and_markdown_mark_deltas_against_the_direction(
    two_runs: tuple[Recorded, RunManifest, RunManifest],
) -> None:
    recorded, first, second = two_runs
    text = sluice("diff", second.run_id, first.run_id, repo=recorded.repo)
    assert text.returncode == 0, text.stderr
    assert "evaluate.auc     0.93 -> 0.91  -0.02 ▼ worse" in text.stdout
    assert "evaluate.rmse    0.3333 -> 1  +0.6667 ▲ worse" in text.stdout
    assert f"prepare   cached from {first.run_id} -> succeeded" in text.stdout
    assert "outputs: 2 changed, 2 unchanged" in text.stdout

    md = sluice("diff", first.run_id, second.run_id, "--md", repo=recorded.repo)
    assert md.returncode == 0, md.stderr
    assert "| `evaluate.auc` | 0.91 | 0.93 | +0.02 🟢▲ |" in md.stdout
    assert "| `evaluate.rmse` | 1 | 0.3333 | -0.6667 🟢▼ |" in md.stdout
    assert f"| `prepare` | succeeded | cached from {first.run_id} | changed |" in md.stdout
    assert "| `n` | `1` | `3` |" in md.stdout


def test_unknown_or_hostile_runs_exit_2_with_a_clear_message(
    two_runs: tuple[Recorded, RunManifest, RunManifest],
) -> None:
    recorded, first, _ = two_runs
    done = sluice("diff", first.run_id, "20261124T100000Z-abcdef", repo=recorded.repo)
    assert done.returncode == 2
    assert "no run '20261124T100000Z-abcdef' on the results branch" in done.stderr
    assert "`sluice runs` lists runs" in done.stderr
    assert "Traceback" not in done.stderr
    hostile = sluice("diff", "../../etc", first.run_id, "--json", repo=recorded.repo)
    assert hostile.returncode == 2 and hostile.stdout == ""
    assert "run id '../../etc' contains '/'" in hostile.stderr


def test_outside_a_repository_diff_exits_2(tmp_path: Path) -> None:
    done = sluice("diff", "a", "b", repo=tmp_path)
    assert done.returncode == 2
    assert "not a git repository" in done.stderr


NO_GATE = """\
name: model
params: {n: 1, note: first}
defaults: {image: img}
steps:
  - name: prepare
    run: prepare
  - name: train
    needs: [prepare]
    command: [train]
    config: {n: "${{ params.n }}"}
  - name: evaluate
    needs: [train]
    run: evaluate
    config: {n: "${{ params.n }}"}
"""


def test_without_a_direction_only_the_sign_shows(tmp_path: Path) -> None:
    recorded = Recorded(tmp_path, NO_GATE)
    first, second = recorded.run(n=1), recorded.run(n=2)
    found = diff_json(recorded.repo, first.run_id, second.run_id)
    auc = next(m for m in found["metrics"] if m["key"] == "evaluate.auc")
    assert (auc["direction"], auc["verdict"]) == (None, "changed")
    md = sluice("diff", first.run_id, second.run_id, "--md", repo=recorded.repo).stdout
    assert "| `evaluate.auc` | 0.91 | 0.92 | +0.01 ▲ |" in md
    assert "🟢" not in md and "🔴" not in md


# --- the pure parts -----------------------------------------------------------------------


def gate(when: str, *, extra: str = "") -> dict[str, str]:
    text = textwrap.dedent(
        f"""\
        name: p
        baseline: {{step: deploy}}
        params: {{bar: 0.9}}
        defaults: {{image: i}}
        steps:
          - {{name: evaluate, run: x}}
          - name: deploy
            type: deployment
            needs: [evaluate]
            run: x
            when: {json.dumps(when)}
        {extra}"""
    )
    return dict(directions(load_text(text).pipeline))


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("steps.evaluate.metrics.auc >= params.bar", {"evaluate.auc": "higher"}),
        ("steps.evaluate.metrics.auc > 0.5", {"evaluate.auc": "higher"}),
        ("steps.evaluate.metrics.loss <= 0.5", {"evaluate.loss": "lower"}),
        ("0.5 > steps.evaluate.metrics.loss", {"evaluate.loss": "lower"}),
        ("params.bar <= steps.evaluate.metrics.auc", {"evaluate.auc": "higher"}),
        (
            "not baseline or steps.evaluate.metrics.auc >= "
            "baseline.steps.evaluate.metrics.auc - 0.02",
            {"evaluate.auc": "higher"},
        ),
        (
            "baseline.steps.evaluate.metrics.rmse * 1.1 >= steps.evaluate.metrics.rmse",
            {"evaluate.rmse": "lower"},
        ),
        ("steps.evaluate.metrics.auc + 0.01 >= params.bar", {"evaluate.auc": "higher"}),
        ("steps.evaluate.metrics.auc * -1 >= params.bar", {}),
        ("-steps.evaluate.metrics.auc >= params.bar", {}),
        ("steps.evaluate.metrics.model_id != baseline.steps.evaluate.metrics.model_id", {}),
        # compared both ways: no direction
        (
            "steps.evaluate.metrics.x >= 0.1 and steps.evaluate.metrics.x >= 0.2 "
            "and steps.evaluate.metrics.y > 1 and steps.evaluate.metrics.y < 5",
            {"evaluate.x": "higher"},
        ),
        ("steps.evaluate.status == 'succeeded'", {}),
    ],
)
def test_directions_are_read_off_the_gate(when: str, expected: dict[str, str]) -> None:
    assert gate(when) == expected


def test_gate_metrics_held_against_production_come_first() -> None:
    found = gate(
        "steps.evaluate.metrics.rows > 100 and "
        "steps.evaluate.metrics.auc >= baseline.steps.evaluate.metrics.auc"
    )
    assert list(found) == ["evaluate.auc", "evaluate.rows"]
    assert main_metric(found, ["evaluate.rows", "evaluate.auc"]) == "evaluate.auc"


def test_a_declaration_wins_over_the_gate() -> None:
    text = textwrap.dedent(
        """\
        name: p
        metrics: {auc: lower, evaluate.f1: higher}
        defaults: {image: i}
        steps:
          - {name: evaluate, run: x}
          - {name: ship, run: x, needs: [evaluate], when: "steps.evaluate.metrics.auc >= 1"}
        """
    )
    loaded = load_text(text)
    assert inferred(loaded.pipeline) == {"evaluate.auc": "higher"}
    found = directions(loaded.pipeline)
    assert found == {"auc": "lower", "evaluate.f1": "higher"}
    assert direction_of(found, "evaluate.auc") == "lower"
    assert direction_of(found, "evaluate.f1") == "higher"
    assert direction_of(found, "train.f1") is None
    assert main_metric(found, ["evaluate.loss", "evaluate.f1"]) == "evaluate.f1"
    with pytest.raises(PipelineInvalid):
        load_text(text.replace("auc: lower", "auc: sideways"))


def test_diff_follows_the_declared_direction(tmp_path: Path) -> None:
    declared = MODEL.replace(
        "params: {n: 1, note: first}", "params: {n: 1, note: first}\nmetrics: {evaluate.auc: lower}"
    )
    recorded = Recorded(tmp_path, declared)
    first, second = recorded.run(n=1), recorded.run(n=2)
    found = diff_json(recorded.repo, first.run_id, second.run_id)
    auc = next(m for m in found["metrics"] if m["key"] == "evaluate.auc")
    assert (auc["direction"], auc["verdict"]) == ("lower", "worse")


def test_deltas_and_their_marks() -> None:
    assert delta_text(metric_delta("a", 0.9, 0.95, "higher")) == "+0.05 🟢▲"
    assert delta_text(metric_delta("a", 0.9, 0.95, "lower")) == "+0.05 🔴▲"
    assert delta_text(metric_delta("a", 0.95, 0.9, "lower"), markdown=False) == "-0.05 ▼ better"
    assert delta_text(metric_delta("a", None, 0.9, "higher")) == "new"
    assert delta_text(metric_delta("a", 0.9, None, "higher")) == "gone"
    assert delta_text(metric_delta("a", 2, 2, "higher")) == "="
    assert metric_delta("a", True, 1, None).delta is None


def test_metrics_table_compares_the_subject_with_each_other_run(
    two_runs: tuple[Recorded, RunManifest, RunManifest],
) -> None:
    _, first, second = two_runs
    others: list[tuple[str, RunManifest | None]] = [("production", first), ("main", None)]
    table = metrics_table(
        ("this PR", second), others, {"evaluate.auc": "higher", "evaluate.rmse": "lower"}
    )
    lines = table.splitlines()
    assert lines[0] == "| metric | this PR | production | main |"
    assert "| `evaluate.auc` | 0.93 | 0.91 (+0.02 🟢▲) | — |" in lines
    assert "| `evaluate.rmse` | 0.3333 | 1 (-0.6667 🟢▼) | — |" in lines
    assert "| `evaluate.passed` | true | false (≠) | — |" in lines


def test_diff_runs_of_two_pipelines_still_compares() -> None:
    a = RunManifest(run_id="r1", pipeline="a", pipeline_file="a.yaml", pipeline_sha256="1",
                    started_at="2026-11-24T10:00:00Z")  # fmt: skip
    b = a.model_copy(update={"run_id": "r2", "pipeline": "b", "pipeline_sha256": "2"})
    found = diff_runs(a, b).to_dict()
    assert found["same_pipeline"] is False and found["pipeline_changed"] is True
    assert found["metrics"] == found["steps"] == found["outputs"] == []
