"""`sluice validate`, `graph` and `schema` in this process (conftest's sluice: `main` under click's CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import sluice

GOOD = """\
name: churn-retrain
params: {n: 3}
defaults:
  image: python:3.11-slim
steps:
  - name: prepare
    run: python prepare.py
  - name: train
    needs: [prepare]
    env: {N: "${{ params.n }}"}
    run: python train.py
  - name: tune
    needs: [prepare]
    run: python tune.py
  - name: evaluate
    needs: [train, tune]
    run: python evaluate.py
finally:
  - name: notify
    run: python notify.py
"""

OTHER = """\
name: drift-check
steps:
  - name: compute
    image: python:3.11-slim
    run: sluice drift compute
"""

BAD = """\
name: broken
steps:
  - name: a
    image: python:3.11-slim
    timout: 10m
    run: echo "100% done"
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()  # enough for the repository root to be found
    folder = tmp_path / "pipelines"
    (folder / "monitoring" / "deep").mkdir(parents=True)
    (folder / "churn.yaml").write_text(GOOD)
    (folder / "monitoring" / "deep" / "drift.yml").write_text(OTHER)
    return tmp_path


def run_main(*args: str) -> tuple[int, str, str]:
    """`main` as the console script runs it: exceptions mapped to exit codes."""
    done = sluice(*args)
    return done.returncode, done.stdout, done.stderr


# validate ---------------------------------------------------------------------------------


def test_validate_ok(repo: Path) -> None:
    result = sluice("--repo", str(repo), "validate")
    assert result.returncode == 0
    assert result.stdout == ""
    assert result.stderr == "sluice: 2 pipelines valid\n"


def test_validate_ok_json_is_an_empty_list(repo: Path) -> None:
    result = sluice("--repo", str(repo), "validate", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == []


def test_validate_invalid(repo: Path) -> None:
    (repo / "pipelines" / "broken.yaml").write_text(BAD)
    result = sluice("--repo", str(repo), "validate")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "pipelines/broken.yaml:5: unknown key 'timout' in steps.a (did you mean 'timeout'?)",
        "sluice: 1 problem in 1 file",
    ]
    assert "::error" not in result.stderr


def test_validate_json_shape(repo: Path) -> None:
    (repo / "pipelines" / "broken.yaml").write_text(BAD)
    (repo / "pipelines" / "monitoring" / "cycle.yaml").write_text(
        "name: cyc\ndefaults: {image: x}\nsteps:\n  - {name: a, needs: [b]}\n  - {name: b, needs: [a]}\n"
    )
    result = sluice("--repo", str(repo), "validate", "--json")
    assert result.returncode == 2
    document = json.loads(result.stdout)
    assert document == [
        {
            "file": "pipelines/broken.yaml",
            "line": 5,
            "message": "unknown key 'timout' in steps.a (did you mean 'timeout'?)",
        },
        {
            "file": "pipelines/monitoring/cycle.yaml",
            "line": 4,
            "message": "cycle in needs: a -> b -> a",
        },
    ]
    # the human-readable lines still go to stderr
    assert "pipelines/monitoring/cycle.yaml:4: cycle in needs: a -> b -> a" in result.stderr


def test_validate_recurses_into_folders(repo: Path) -> None:
    (repo / "pipelines" / "monitoring" / "deep" / "bad.yml").write_text("name: x\nsteps: []\n")
    result = sluice("--repo", str(repo), "validate", str(repo / "pipelines" / "monitoring"))
    assert result.returncode == 2
    assert "pipelines/monitoring/deep/bad.yml:2: steps: " in result.stderr
    assert "churn.yaml" not in result.stderr


def test_validate_several_paths(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)
    result = sluice("validate", "pipelines/churn.yaml", "pipelines/monitoring")
    assert result.returncode == 0
    assert result.stderr == "sluice: 2 pipelines valid\n"


def test_validate_same_name_in_two_files(repo: Path) -> None:
    (repo / "pipelines" / "zz-copy.yaml").write_text(GOOD)
    result = sluice("--repo", str(repo), "validate", "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout) == [
        {
            "file": "pipelines/zz-copy.yaml",
            "line": 1,
            "message": "pipeline name 'churn-retrain' is already used by pipelines/churn.yaml; "
            "names must be unique",
        }
    ]


def test_validate_missing_path(repo: Path) -> None:
    result = sluice("--repo", str(repo), "validate", str(repo / "nope.yaml"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "nope.yaml: no such file or folder",
        "sluice: 1 problem in 1 file",
    ]
    assert "Traceback" not in result.stdout + result.stderr


def test_validate_folder_without_pipelines(repo: Path) -> None:
    (repo / "empty").mkdir()
    result = sluice("--repo", str(repo), "validate", str(repo / "empty"))
    assert result.returncode == 2
    assert "empty: no *.yaml pipeline files here" in result.stderr


def test_validate_missing_path_through_main(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main("--repo", str(repo), "validate", str(repo / "gone"))
    assert code == 2
    assert out == ""
    assert "gone: no such file or folder" in err


def test_validate_annotations_under_github_actions(repo: Path) -> None:
    (repo / "pipelines" / "broken.yaml").write_text(BAD.replace("echo", "${{ x }}"))
    result = sluice("--repo", str(repo), "validate", env={"GITHUB_ACTIONS": "true"})
    assert result.returncode == 2
    annotations = [line for line in result.stderr.splitlines() if line.startswith("::error ")]
    assert len(annotations) == 2
    assert annotations[0] == (
        "::error file=pipelines/broken.yaml,line=5::unknown key 'timout' in steps.a "
        "(did you mean 'timeout'?)"
    )
    assert annotations[1].startswith(
        "::error file=pipelines/broken.yaml,line=6::run strings cannot contain ${{ }}"
    )
    # the plain file:line lines are still there for people reading the log
    assert "pipelines/broken.yaml:5: unknown key 'timout'" in result.stderr


def test_annotations_escape_percent_and_newlines(repo: Path) -> None:
    (repo / "pipelines" / "pct.yaml").write_text(
        "name: pct\nsteps:\n  - name: a\n    image: x\n    resources: {memory: 50%}\n"
    )
    pct = str(repo / "pipelines" / "pct.yaml")
    result = sluice("--repo", str(repo), "validate", pct, env={"GITHUB_ACTIONS": "true"})
    assert result.returncode == 2
    (annotation,) = [line for line in result.stderr.splitlines() if line.startswith("::error ")]
    assert annotation == (
        "::error file=pipelines/pct.yaml,line=5::steps.a.resources.memory: "
        "bad memory size '50%25': use a size like '512m' or '4g'"
    )


def test_missing_path_annotation_points_at_line_1(repo: Path) -> None:
    result = sluice(
        "--repo", str(repo), "validate", str(repo / "nope"), env={"GITHUB_ACTIONS": "true"}
    )
    assert "::error file=nope,line=1::no such file or folder" in result.stderr.splitlines()


def test_no_annotations_outside_github_actions(repo: Path) -> None:
    (repo / "pipelines" / "broken.yaml").write_text(BAD)
    result = sluice("--repo", str(repo), "validate", env={"GITHUB_ACTIONS": "false"})
    assert "::error" not in result.stderr


# --repo and --config ----------------------------------------------------------------------


def test_repo_defaults_to_the_git_top_level(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo / "pipelines" / "monitoring")
    result = sluice("validate")
    assert result.returncode == 0
    assert result.stderr == "sluice: 2 pipelines valid\n"


def test_repo_option_must_be_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main("--repo", str(tmp_path / "nowhere"), "validate")
    assert code == 2
    assert f"--repo {tmp_path / 'nowhere'}: no such folder" in err


def test_config_sets_the_pipelines_folder(repo: Path) -> None:
    (repo / "ml").mkdir()
    (repo / "ml" / "only.yaml").write_text(OTHER)
    (repo / "sluice.yaml").write_text("pipelines: ml/\n")
    result = sluice("--repo", str(repo), "validate")
    assert result.stderr == "sluice: 1 pipeline valid\n"
    (repo / "ci.yaml").write_text("pipelines: pipelines/\n")
    result = sluice("--repo", str(repo), "--config", str(repo / "ci.yaml"), "validate")
    assert result.stderr == "sluice: 2 pipelines valid\n"


def test_config_that_is_invalid(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "sluice.yaml").write_text("pipelnes: ml/\n")
    code, _, err = run_main("--repo", str(repo), "validate")
    assert code == 2
    assert "sluice.yaml:1: unknown key 'pipelnes' in the file (did you mean 'pipelines'?)" in err


def test_config_that_does_not_exist(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main("--repo", str(repo), "--config", "missing.yaml", "validate")
    assert code == 2
    assert "missing.yaml: no such config file" in err


# graph ------------------------------------------------------------------------------------


def test_graph_text_by_name(repo: Path) -> None:
    result = sluice("--repo", str(repo), "graph", "churn-retrain")
    assert result.returncode == 0
    assert result.stdout == (
        "level 0:\n"
        "  prepare\n"
        "level 1:\n"
        "  train  (needs prepare)\n"
        "  tune  (needs prepare)\n"
        "level 2:\n"
        "  evaluate  (needs train, tune)\n"
        "finally:\n"
        "  notify\n"
    )


def test_graph_json(repo: Path) -> None:
    result = sluice("--repo", str(repo), "graph", "churn-retrain", "--format", "json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {
        "levels": [["prepare"], ["train", "tune"], ["evaluate"], ["notify"]],
        "edges": [
            ["prepare", "train"],
            ["prepare", "tune"],
            ["train", "evaluate"],
            ["tune", "evaluate"],
        ],
    }


def test_graph_mermaid(repo: Path) -> None:
    result = sluice("--repo", str(repo), "graph", "churn-retrain", "--format", "mermaid")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "flowchart LR"
    assert '  s_prepare["prepare"]' in lines
    assert "  s_train --> s_evaluate" in lines
    assert "  s_evaluate -.-> s_notify" in lines


def test_graph_dot(repo: Path) -> None:
    result = sluice("--repo", str(repo), "graph", "churn-retrain", "--format", "dot")
    assert result.returncode == 0
    assert result.stdout.startswith("digraph pipeline {\n  rankdir=LR;\n")
    assert '  "tune" -> "evaluate";\n' in result.stdout
    assert '  "notify" [style=dashed];\n' in result.stdout
    assert result.stdout.endswith("}\n")


def test_graph_by_path(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    by_repo_path = sluice("--repo", str(repo), "graph", "pipelines/monitoring/deep/drift.yml")
    assert by_repo_path.stdout == "level 0:\n  compute\n"
    monkeypatch.chdir(repo / "pipelines")
    by_cwd_path = sluice(
        "--repo", str(repo), "graph", "monitoring/deep/drift.yml", "--format", "json"
    )
    assert json.loads(by_cwd_path.stdout) == {"levels": [["compute"]], "edges": []}


def test_graph_unknown_format(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main("--repo", str(repo), "graph", "churn-retrain", "--format", "svg")
    assert code == 2
    assert "'svg' is not one of 'text', 'mermaid', 'dot', 'json'" in err


def test_graph_unknown_pipeline(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main("--repo", str(repo), "graph", "churn-retrian")
    assert code == 2
    assert out == ""
    assert "sluice: error: no pipeline named 'churn-retrian'" in err
    assert "(did you mean 'churn-retrain'?)" in err
    assert "Traceback" not in err


def test_graph_of_an_invalid_pipeline(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "pipelines" / "broken.yaml").write_text(BAD)
    code, out, err = run_main("--repo", str(repo), "graph", "broken")
    assert code == 2
    assert out == ""
    assert "pipelines/broken.yaml:5: unknown key 'timout'" in err


def test_graph_needs_a_pipeline(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main("--repo", str(repo), "graph")
    assert code == 2
    assert "Missing argument 'PIPELINE'" in err


# schema -----------------------------------------------------------------------------------


def test_schema_is_json_schema_of_the_format() -> None:
    result = sluice("schema")
    assert result.returncode == 0
    document = json.loads(result.stdout)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["title"] == "Sluice pipeline"
    assert {"name", "steps", "finally", "triggers", "params", "defaults"} <= set(
        document["properties"]
    )
    assert document["properties"]["steps"]["type"] == "array"
    assert set(document["required"]) == {"name", "steps"}
    assert document["additionalProperties"] is False


# help -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["--help"], ["validate", "--help"], ["graph", "-h"], ["schema", "--help"]]
)
def test_help_has_examples(args: list[str]) -> None:
    result = sluice(*args)
    assert result.returncode == 0
    assert "Example" in result.stdout


def test_top_level_help_lists_the_commands() -> None:
    result = sluice("--help")
    assert "Examples:" in result.stdout
    for command in ("validate", "graph", "schema"):
        assert command in result.stdout
    assert "--repo DIR" in result.stdout
    assert "--config FILE" in result.stdout
