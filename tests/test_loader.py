"""Loading pipeline files: the invalid corpus, valid files with defaults, sluice.yaml, lookup."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.adapters.pipeline_files import (
    find_pipeline,
    find_pipeline_files,
    load_file,
    load_many,
    load_repo_config,
)
from engine.core.parse import load_text
from engine.core.spec import DEFAULT_TIMEOUT_S, StepType
from engine.errors import NotFound, PipelineInvalid, Problem

REPO = Path(__file__).resolve().parents[1]
INVALID = REPO / "tests" / "invalid"
EXPECT_RE = re.compile(r"^# expect: (?P<line>\d+): (?P<message>.+)$")


@dataclass(frozen=True)
class Expected:
    path: Path
    line: int
    message: str

    @property
    def display(self) -> str:
        """The file as the CLI shows it: relative to the repository root."""
        return self.path.relative_to(REPO).as_posix()

    def found_in(self, problems: list[Problem]) -> bool:
        return any(p.line == self.line and self.message in p.message for p in problems)


def _expected(path: Path) -> Expected:
    first = path.read_text("utf-8").split("\n", 1)[0]
    match = EXPECT_RE.match(first)
    assert match, f"{path.name}: the first line must be '# expect: LINE: MESSAGE'"
    return Expected(path, int(match["line"]), match["message"])


CORPUS = [_expected(p) for p in sorted(INVALID.glob("*.yaml"))]
DUP_FOLDER = INVALID / "dup-names"
DUP_EXPECTED = _expected(DUP_FOLDER / "b-second.yaml")


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 45


# The invalid corpus, in process -----------------------------------------------------------


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.path.stem)
def test_corpus_file_is_rejected_at_its_line(case: Expected) -> None:
    with pytest.raises(PipelineInvalid) as caught:
        load_file(case.path, REPO)
    problems = caught.value.problems
    shown = "\n".join(map(str, problems))
    assert case.found_in(problems), f"want {case.line}: {case.message!r}, got:\n{shown}"
    assert all(p.file == case.display for p in problems)
    assert f"{case.display}:{case.line}: " in str(caught.value)


def test_two_pipelines_with_one_name_are_rejected() -> None:
    files = find_pipeline_files(DUP_FOLDER)
    assert [f.name for f in files] == ["a-first.yaml", "b-second.yaml"]
    for path in files:
        load_file(path, REPO)  # each one is fine on its own
    with pytest.raises(PipelineInvalid) as caught:
        load_many(files, REPO)
    assert DUP_EXPECTED.found_in(caught.value.problems)
    assert len(caught.value.problems) == 1


# The invalid corpus, through the real command line ----------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def corpus_json() -> subprocess.CompletedProcess[str]:
    """One `sluice validate tests/invalid --json` for the whole corpus (dup-names included)."""
    return _run("sluice", "--repo", str(REPO), "validate", "tests/invalid", "--json")


def test_cli_validates_the_whole_corpus_at_once(
    corpus_json: subprocess.CompletedProcess[str],
) -> None:
    assert corpus_json.returncode == 2
    assert "Traceback" not in corpus_json.stdout + corpus_json.stderr
    problems = [Problem(**item) for item in json.loads(corpus_json.stdout)]
    for case in [*CORPUS, DUP_EXPECTED]:
        mine = [p for p in problems if p.file == case.display]
        assert case.found_in(mine), f"{case.display}: want {case.line}: {case.message!r}"
        assert f"{case.display}:{case.line}: " in corpus_json.stderr
    reported = {p.file for p in problems}
    assert reported == {c.display for c in CORPUS} | {DUP_EXPECTED.display}


def test_cli_validate_on_the_dup_names_folder() -> None:
    done = _run("sluice", "--repo", str(REPO), "validate", "tests/invalid/dup-names")
    assert done.returncode == 2
    assert f"{DUP_EXPECTED.display}:{DUP_EXPECTED.line}: {DUP_EXPECTED.message}" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


_ONE_BY_ONE = ["yaml-unclosed-quote", "unknown-key-step", "cycle-three", "empty-file", "no-image"]


@pytest.mark.parametrize("stem", _ONE_BY_ONE)
def test_cli_validate_one_file(stem: str) -> None:
    case = next(c for c in CORPUS if c.path.stem == stem)
    done = _run("sluice", "--repo", str(REPO), "validate", case.display)
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    assert f"{case.display}:{case.line}: " in done.stderr
    assert case.message in done.stderr


@pytest.mark.parametrize("stem", ["yaml-tab", "template-in-run", "when-not-in-needs"])
def test_python_m_engine_validate_json(stem: str) -> None:
    case = next(c for c in CORPUS if c.path.stem == stem)
    done = _run(
        sys.executable, "-m", "engine", "--repo", str(REPO), "validate", case.display, "--json"
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    problems = [Problem(**item) for item in json.loads(done.stdout)]
    assert case.found_in(problems)
    assert f"{case.display}:{case.line}: " in done.stderr


# Every problem at once --------------------------------------------------------------------

FOUR_PROBLEMS = """\
name: four-problems
triggers:
  - cron: "0 2 * *"
steps:
  - name: train
    image: python:3.11-slim
    run: python train.py
    timout: 10m
  - name: evaluate
    image: python:3.11-slim
    run: python evaluate.py
    needs: [trian]
    retries: {limit: 1, backoff: later}
"""


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    with pytest.raises(PipelineInvalid) as caught:
        load_text(FOUR_PROBLEMS, "four.yaml")
    found = [(p.line, p.message) for p in caught.value.problems]
    assert len(found) == 4, found
    assert [line for line, _ in found] == [3, 8, 12, 13]
    assert "invalid cron expression '0 2 * *'" in found[0][1]
    assert "unknown key 'timout'" in found[1][1]
    assert "needs unknown step 'trian' (did you mean 'train'?)" in found[2][1]
    assert "bad duration 'later'" in found[3][1]
    assert str(caught.value).startswith("4 problems found:\n  four.yaml:3: ")


# Valid files ------------------------------------------------------------------------------

# SPEC §1 verbatim without its comments. Its `train` step needs `validate` and its `when`
# reads `evaluate`, and `baseline` names `deploy`: "the other steps are left out of this
# example", so they are added after it, in an order that makes `evaluate` finish before
# `train` starts.
SPEC_EXAMPLE = """\
name: churn-retrain
description: Nightly retraining with an evaluation gate
triggers:
  - cron: "0 2 * * *"
  - push: {paths: ["src/**", "data/**"]}
  - webhook: {event: retrain-churn}
  - drift: {monitor: churn-drift, when: "metrics.drift_detected", cooldown: 6h}
params:
  min_accuracy: 0.9
  n_estimators: 100
baseline: {step: deploy}
defaults:
  image: python:3.11-slim
  timeout: 30m
  retries: {limit: 2, backoff: 10s, factor: 2, max_backoff: 5m}
steps:
  - name: train
    type: training
    image: python:3.11-slim
    run: python steps/train.py
    needs: [validate]
    config: {n_estimators: "${{ params.n_estimators }}"}
    env: {MODEL_NAME: churn}
    secrets: [MLFLOW_TRACKING_TOKEN]
    timeout: 2h
    retries: 3
    when: "steps.evaluate.metrics.accuracy >= params.min_accuracy"
    approval: true
    resources: {cpus: 2, memory: 4g, gpus: 0}
    network: none
    cache: true
    workspace: true
  - name: evaluate
    type: evaluation
    run: python steps/evaluate.py
  - name: validate
    needs: [evaluate]
    run: python steps/validate.py
  - name: deploy
    type: deployment
    needs: [train]
    run: python steps/deploy.py
finally:
  - name: notify
    run: python steps/notify.py
"""


def test_the_spec_example_loads() -> None:
    loaded = load_text(SPEC_EXAMPLE, "pipelines/churn.yaml")
    assert loaded.name == "churn-retrain"
    assert loaded.file == "pipelines/churn.yaml"
    assert [t.kind for t in loaded.pipeline.triggers] == ["cron", "push", "webhook", "drift"]
    assert loaded.pipeline.triggers[3].drift is not None
    assert loaded.pipeline.triggers[3].drift.cooldown == 6 * 3600
    assert loaded.pipeline.params == {"min_accuracy": 0.9, "n_estimators": 100}
    assert loaded.dag.levels == (("evaluate",), ("validate",), ("train",), ("deploy",))
    assert loaded.dag.finally_steps == ("notify",)
    assert len(loaded.sha256) == 64


def test_the_spec_example_has_defaults_applied() -> None:
    loaded = load_text(SPEC_EXAMPLE)
    train, notify, deploy = loaded.step("train"), loaded.step("notify"), loaded.step("deploy")
    # the step's own values win
    assert train.type is StepType.training
    assert train.timeout == 2 * 3600
    assert train.retries.limit == 3  # the short form is the limit
    assert train.argv == ["sh", "-c", "python steps/train.py"]
    assert train.resources.memory == 4 * 1024**3
    assert train.resources.cpus == 2
    assert train.config == {"n_estimators": "${{ params.n_estimators }}"}  # resolved at run time
    assert train.env == {"MODEL_NAME": "churn"}
    assert train.secrets == ["MLFLOW_TRACKING_TOKEN"]
    assert train.approval is True
    assert train.cache is True
    # inherited from defaults
    assert notify.is_finally
    assert notify.image == "python:3.11-slim"
    assert notify.timeout == 30 * 60
    assert notify.retries.limit == 2
    assert notify.retries.backoff == 10
    assert notify.retries.max_backoff == 300
    # engine defaults
    assert notify.type is StepType.custom
    assert notify.network == "none"
    assert notify.workspace is True
    assert notify.approval is False
    assert notify.cache is True
    assert deploy.cache is False  # deployments are never cached unless they say so


def test_engine_defaults_without_a_defaults_block() -> None:
    loaded = load_text("name: tiny\nsteps:\n  - name: a\n    image: alpine:3\n")
    step = loaded.step("a")
    assert step.timeout == DEFAULT_TIMEOUT_S
    assert step.retries.limit == 0
    assert step.argv is None  # the image's own command
    assert step.needs == []


def test_dates_stay_text() -> None:
    loaded = load_text(
        "name: dated\nsteps:\n  - name: a\n    image: alpine:3\n"
        "    env: {SINCE: 2024-01-31}\n    config: {since: 2024-01-31}\n"
    )
    assert loaded.step("a").env == {"SINCE": "2024-01-31"}
    assert loaded.step("a").config == {"since": "2024-01-31"}


def test_yaml_anchors_and_merge_keys_work() -> None:
    loaded = load_text(
        """\
name: anchors
defaults: &common
  image: python:3.11-slim
  timeout: 5m
steps:
  - name: a
    <<: *common
    timeout: 1m
    run: echo a
  - <<: [*common, {image: alpine:3}]
    image: busybox:1
    name: b
"""
    )
    assert loaded.step("a").timeout == 60  # the step's own key wins over the merged one
    assert loaded.step("a").image == "python:3.11-slim"
    assert loaded.step("b").image == "busybox:1"  # own keys win wherever they stand
    assert loaded.step("b").timeout == 300


def test_a_merge_of_something_else_is_a_problem() -> None:
    with pytest.raises(PipelineInvalid, match=r"<string>:4: << merges a mapping"):
        load_text("name: m\nsteps:\n  - name: a\n    <<: 3\n    image: alpine:3\n")


def test_step_lookup_names_the_missing_step() -> None:
    loaded = load_text(SPEC_EXAMPLE)
    with pytest.raises(NotFound, match="pipeline 'churn-retrain' has no step 'trian'"):
        loaded.step("trian")


def test_not_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(PipelineInvalid, match="not UTF-8 text"):
        load_file(bad)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such file"):
        load_file(tmp_path / "nope.yaml")


# sluice.yaml ------------------------------------------------------------------------------


def test_repo_config_defaults_when_absent(tmp_path: Path) -> None:
    config = load_repo_config(tmp_path)
    assert config.pipelines == "pipelines/"
    assert config.results.branch == "sluice-results"
    assert config.max_parallel is None


def test_repo_config_valid(tmp_path: Path) -> None:
    (tmp_path / "sluice.yaml").write_text(
        "pipelines: ml/pipelines/\n"
        "results: {branch: ml-results, remote: upstream, push: never}\n"
        "artifacts: s3://bucket/sluice\n"
        "max_parallel: 4\n"
    )
    config = load_repo_config(tmp_path)
    assert config.pipelines == "ml/pipelines/"
    assert (config.results.branch, config.results.remote, config.results.push) == (
        "ml-results",
        "upstream",
        "never",
    )
    assert config.artifacts == "s3://bucket/sluice"
    assert config.max_parallel == 4


def test_repo_config_unknown_key(tmp_path: Path) -> None:
    (tmp_path / "sluice.yaml").write_text("max_parallel: 2\npipeline: ml/\n")
    with pytest.raises(PipelineInvalid) as caught:
        load_repo_config(tmp_path)
    assert [str(p) for p in caught.value.problems] == [
        "sluice.yaml:2: unknown key 'pipeline' in the file (did you mean 'pipelines'?)"
    ]


def test_repo_config_unknown_nested_key(tmp_path: Path) -> None:
    (tmp_path / "sluice.yaml").write_text("results:\n  branch: r\n  remtoe: origin\n")
    with pytest.raises(PipelineInvalid, match=r"sluice.yaml:3: unknown key 'remtoe' in results"):
        load_repo_config(tmp_path)


def test_repo_config_wrong_type(tmp_path: Path) -> None:
    (tmp_path / "sluice.yaml").write_text("pipelines: pipelines/\nmax_parallel: lots\n")
    with pytest.raises(PipelineInvalid) as caught:
        load_repo_config(tmp_path)
    (problem,) = caught.value.problems
    assert (problem.line, problem.message) == (
        2,
        "max_parallel: expected a whole number, got text 'lots'",
    )


def test_repo_config_not_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "sluice.yaml").write_text("- pipelines\n")
    with pytest.raises(PipelineInvalid, match=r"sluice\.yaml is a mapping"):
        load_repo_config(tmp_path)


def test_repo_config_yaml_error(tmp_path: Path) -> None:
    (tmp_path / "sluice.yaml").write_text("pipelines: [a\n")
    with pytest.raises(PipelineInvalid, match="YAML syntax error"):
        load_repo_config(tmp_path)


def test_repo_config_explicit_path(tmp_path: Path) -> None:
    other = tmp_path / "ci" / "sluice-ci.yaml"
    other.parent.mkdir()
    other.write_text("max_parallel: 8\n")
    assert load_repo_config(tmp_path, other).max_parallel == 8
    with pytest.raises(NotFound, match="no such config file"):
        load_repo_config(tmp_path, tmp_path / "missing.yaml")


# find_pipeline ----------------------------------------------------------------------------


def _pipeline(name: str) -> str:
    return f"name: {name}\nsteps:\n  - name: a\n    image: alpine:3\n    run: echo {name}\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    folder = tmp_path / "pipelines"
    (folder / "nested").mkdir(parents=True)
    (folder / "churn.yaml").write_text(_pipeline("churn-retrain"))
    (folder / "nested" / "drift.yml").write_text(_pipeline("drift-check"))
    (folder / "broken.yaml").write_text("name: broken\nsteps: 3\n")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "skip.yaml").write_text(_pipeline("hidden"))
    (folder / "notes.txt").write_text("not a pipeline")
    return tmp_path


def test_find_pipeline_files_recurses_and_skips_hidden(repo: Path) -> None:
    found = [p.relative_to(repo).as_posix() for p in find_pipeline_files(repo / "pipelines")]
    assert found == ["pipelines/broken.yaml", "pipelines/churn.yaml", "pipelines/nested/drift.yml"]
    assert find_pipeline_files(repo / "missing") == []
    assert find_pipeline_files(repo / "pipelines" / "churn.yaml") == [
        repo / "pipelines" / "churn.yaml"
    ]


def test_find_pipeline_by_name(repo: Path) -> None:
    found = find_pipeline(repo, repo / "pipelines", "drift-check")
    assert found is not None
    assert found.name == "drift-check"
    assert found.file == "pipelines/nested/drift.yml"


def test_find_pipeline_by_path(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    by_absolute = find_pipeline(repo, repo / "pipelines", str(repo / "pipelines" / "churn.yaml"))
    assert by_absolute is not None
    assert by_absolute.name == "churn-retrain"
    by_repo_relative = find_pipeline(repo, repo / "pipelines", "pipelines/churn.yaml")
    assert by_repo_relative is not None
    assert by_repo_relative.file == "pipelines/churn.yaml"
    monkeypatch.chdir(repo / "pipelines")
    by_cwd_relative = find_pipeline(repo, repo / "pipelines", "nested/drift.yml")
    assert by_cwd_relative is not None
    assert by_cwd_relative.name == "drift-check"


def test_find_pipeline_not_found_suggests_a_name(repo: Path) -> None:
    with pytest.raises(NotFound) as caught:
        find_pipeline(repo, repo / "pipelines", "churn-retrian")
    message = str(caught.value)
    assert "no pipeline named 'churn-retrian' in pipelines/" in message
    assert "(did you mean 'churn-retrain'?)" in message
    assert "hint:" in message
    assert find_pipeline(repo, repo / "pipelines", "nothing-close", must_exist=False) is None


def test_find_pipeline_reports_the_problems_of_the_file_with_that_name(repo: Path) -> None:
    with pytest.raises(PipelineInvalid, match=r"pipelines/broken\.yaml:2: steps: expected a list"):
        find_pipeline(repo, repo / "pipelines", "broken")


def test_find_pipeline_invalid_file_by_path(repo: Path) -> None:
    with pytest.raises(PipelineInvalid, match="steps: expected a list"):
        find_pipeline(repo, repo / "pipelines", "pipelines/broken.yaml")


# Hostile documents ------------------------------------------------------------------------


def test_alias_bombs_are_refused_quickly() -> None:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(PipelineInvalid, match="too large once YAML aliases are expanded"):
        load_text("\n".join(lines) + "\n")


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(PipelineInvalid, match="nests more than 100 levels deep"):
        load_text("name: deep\nconfig: " + "[" * 150 + "]" * 150 + "\n")


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(PipelineInvalid, match="nests more than 100 levels deep"):
        load_text("name: loop\nsteps: &s\n  - name: a\n    config: {again: *s}\n")


def test_oversize_text_is_refused() -> None:
    with pytest.raises(PipelineInvalid, match="larger than"):
        load_text("#" * (16 * 1024**2 + 1))
