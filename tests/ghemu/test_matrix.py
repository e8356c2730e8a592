"""The emulator's `strategy.matrix` (tests/ghemu/matrix.py): GitHub's expansion (cross
product, include/exclude, a vector from an expression), each combination a job of its own
(its runner, folder, `matrix` and `strategy` contexts, display name), max-parallel,
fail-fast, the matrix job's result for its dependents, and the errors GitHub gives."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import make_repo

from ghemu import Evaluator, Options, WorkflowRun, max_overlap, parse
from ghemu.matrix import MatrixError, combinations


def test_the_cross_product_varies_the_last_vector_fastest_and_exclude_drops_partial_matches() -> (
    None
):
    matrix = {"os": ["linux", "mac"], "v": [1, 2], "exclude": [{"os": "mac", "v": 1}]}
    assert combinations(matrix) == [
        {"os": "linux", "v": 1},
        {"os": "linux", "v": 2},
        {"os": "mac", "v": 2},
    ]
    assert combinations({"os": ["linux", "mac"], "v": [1, 2], "exclude": [{"os": "mac"}]}) == [
        {"os": "linux", "v": 1},
        {"os": "linux", "v": 2},
    ]


def test_include_extends_matching_combinations_or_adds_its_own() -> None:
    matrix = {
        "py": ["3.11", "3.12"],
        "db": ["pg", "sqlite"],
        "include": [
            {"tier": "fast"},  # extends every combination
            {"tier": "slow", "db": "pg"},  # overwrites an added value, never an original
            {"py": "3.12", "extra": "lint"},
            {"py": "3.13"},  # extends none: a combination of its own
            {"py": "3.13", "db": "pg"},  # extends no include's own: another one
        ],
    }
    assert combinations(matrix) == [
        {"py": "3.11", "db": "pg", "tier": "slow"},
        {"py": "3.11", "db": "sqlite", "tier": "fast"},
        {"py": "3.12", "db": "pg", "tier": "slow", "extra": "lint"},
        {"py": "3.12", "db": "sqlite", "tier": "fast", "extra": "lint"},
        {"py": "3.13"},
        {"py": "3.13", "db": "pg"},
    ]
    assert combinations({"include": [{"a": 1}, {"a": 2}]}) == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ({"x": []}, "Matrix vector 'x' does not contain any values"),
        ({}, "Matrix must define at least one vector"),
        ({"x": [1], "exclude": [{"x": 1}]}, "Matrix must define at least one vector"),
        ({"x": "a"}, "Matrix vector 'x' must be a sequence"),
        ({"x": list(range(257))}, "at most 256"),
    ],
)
def test_matrices_github_refuses(matrix: dict[str, Any], message: str) -> None:
    with pytest.raises(MatrixError, match=message):
        combinations(matrix)


# --- matrix jobs run by the emulator ----------------------------------------------------------


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    make_repo(tmp_path, files={"README.md": "hello\n"}, origin=True)
    return tmp_path / "origin.git"


def _run(workflow: str, gh_evaluator: Evaluator, origin: Path, **options: Any) -> WorkflowRun:
    opts = Options(origin=origin, work=origin.parent / "runners", grace=2, **options)
    return WorkflowRun(parse(textwrap.dedent(workflow)), gh_evaluator, opts)


SWEEP = """\
name: sweep
on: workflow_dispatch
jobs:
  plan:
    runs-on: ubuntu-latest
    outputs: {names: "${{ steps.p.outputs.names }}"}
    steps:
      - id: p
        run: |
          echo 'names={"train": ["t-a", "t-b", "t-c"]}' >> "$GITHUB_OUTPUT"
  train:
    needs: plan
    name: ${{ matrix.instance }}
    runs-on: ubuntu-latest
    strategy:
      matrix:
        instance: ${{ fromJSON(needs.plan.outputs.names)['train'] }}
      fail-fast: false
      max-parallel: 2
    outputs: {last: "${{ steps.w.outputs.me }}"}
    steps:
      - id: w
        run: |
          test ! -e mine  # a fresh folder of its own
          echo "${{ matrix.instance }} ${{ strategy.job-index }}/${{ strategy.job-total }}" > mine
          echo "me=${{ matrix.instance }}" >> "$GITHUB_OUTPUT"
          cp mine "${{ vars.SEEN }}/${{ matrix.instance }}-$RUNNER_NAME"
  after:
    needs: train
    runs-on: ubuntu-latest
    steps:
      - run: |
          test "${{ needs.train.result }}" = success && test -n "${{ needs.train.outputs.last }}"
  plain:
    needs: plan
    runs-on: ${{ matrix.os }}
    strategy:
      matrix: {os: [linux, mac], v: [1]}
    steps:
      - run: test "${{ matrix.os }}" != windows
"""


def test_each_combination_is_a_job_of_its_own_with_its_matrix_at_most_max_parallel(
    gh_evaluator: Evaluator, origin: Path, tmp_path: Path
) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    run = _run(SWEEP, gh_evaluator, origin, vars={"SEEN": str(seen)}, pools={"ubuntu-latest": 3})
    record = run.run(timeout=120)
    assert record.results() == {
        "plan": "success",
        "train": "success",
        "after": "success",
        "plain": "success",
    }, record.describe()
    train = record.jobs["train"]
    assert [one.name for one in train.instances] == ["t-a", "t-b", "t-c"]
    assert [one.matrix for one in train.instances] == [
        {"instance": n} for n in ("t-a", "t-b", "t-c")
    ]
    assert train.runner is None  # the combinations hold the runners
    assert max_overlap(train.instances) <= 2
    files = {p.name.split("-ubuntu")[0]: p.read_text().strip() for p in seen.iterdir()}
    assert files == {"t-a": "t-a 0/3", "t-b": "t-b 1/3", "t-c": "t-c 2/3"}
    assert train.outputs["last"] in ("t-a", "t-b", "t-c")  # the last to finish wins
    plain = record.jobs["plain"]
    assert [one.name for one in plain.instances] == ["plain (linux, 1)", "plain (mac, 1)"]
    assert [one.runner for one in plain.instances] == ["linux-1", "mac-1"]  # runs-on: matrix.os
    assert len(record.every()) == 2 + 3 + 2  # plan, after; 3 + 2 combinations


FAILING = """\
name: failing
on: workflow_dispatch
jobs:
  m:
    runs-on: ubuntu-latest
    strategy:
      matrix: {{n: [1, 2, 3, 4]}}
      max-parallel: 2
      {fail_fast}
    steps:
      - run: |
          if [ "${{{{ matrix.n }}}}" = 1 ]; then exit 7; fi
          if [ "${{{{ matrix.n }}}}" = 2 ]; then sleep {sleep}; fi
  dependent:
    needs: m
    runs-on: ubuntu-latest
    steps: [{{run: "true"}}]
  report:
    needs: m
    if: always()
    runs-on: ubuntu-latest
    steps:
      - run: test "${{{{ needs.m.result }}}}" = failure
"""


def test_fail_fast_cancels_the_combinations_running_and_those_not_started(
    gh_evaluator: Evaluator, origin: Path
) -> None:
    workflow = FAILING.format(fail_fast="", sleep=120)  # fail-fast: true by default
    record = _run(workflow, gh_evaluator, origin, pools={"ubuntu-latest": 2}).run(timeout=120)
    results = [one.result for one in record.jobs["m"].instances]
    assert results == ["failure", "cancelled", "cancelled", "cancelled"], record.describe()
    assert [one.runner for one in record.jobs["m"].instances[2:]] == [None, None]
    assert record.results() == {"m": "failure", "dependent": "skipped", "report": "success"}
    assert record.result == "failure"


def test_without_fail_fast_every_combination_runs_and_the_matrix_job_still_fails(
    gh_evaluator: Evaluator, origin: Path
) -> None:
    workflow = FAILING.format(fail_fast="fail-fast: false", sleep=0)
    record = _run(workflow, gh_evaluator, origin, pools={"ubuntu-latest": 2}).run(timeout=120)
    results = [one.result for one in record.jobs["m"].instances]
    assert results == ["failure", "success", "success", "success"], record.describe()
    assert record.results() == {"m": "failure", "dependent": "skipped", "report": "success"}


EMPTY = """\
name: empty
on: workflow_dispatch
jobs:
  plan:
    runs-on: ubuntu-latest
    outputs: {names: "${{ steps.p.outputs.names }}"}
    steps:
      - id: p
        run: |
          echo 'names=[]' >> "$GITHUB_OUTPUT"
  m:
    needs: plan
    if: IF
    runs-on: ubuntu-latest
    strategy:
      matrix: {instance: "${{ fromJSON(needs.plan.outputs.names) }}"}
    steps: [{run: "true"}]
  after:
    needs: m
    runs-on: ubuntu-latest
    steps: [{run: "true"}]
"""


def test_an_empty_vector_fails_the_job_as_github_does_unless_its_if_keeps_it_from_starting(
    gh_evaluator: Evaluator, origin: Path
) -> None:
    record = _run(EMPTY.replace("IF", "success()"), gh_evaluator, origin).run(timeout=60)
    assert record.results() == {"plan": "success", "m": "failure", "after": "skipped"}
    assert record.jobs["m"].error == (
        "Error when evaluating 'strategy' for job 'm'. "
        "Matrix vector 'instance' does not contain any values"
    )
    assert record.jobs["m"].instances == [] and record.result == "failure"
    # the `if` comes first: a job that does not start never expands its matrix
    guarded = EMPTY.replace("IF", "${{ needs.plan.outputs.names != '[]' }}")
    record = _run(guarded, gh_evaluator, origin).run(timeout=60)
    assert record.results() == {"plan": "success", "m": "skipped", "after": "skipped"}
    assert record.result == "success"


def test_a_job_s_if_cannot_read_matrix(gh_evaluator: Evaluator, origin: Path) -> None:
    workflow = EMPTY.replace("IF", "matrix.instance != 'x'").replace(
        "echo 'names=[]'", "echo 'names=[\"x\"]'"
    )
    record = _run(workflow, gh_evaluator, origin).run(timeout=60)
    assert record.results()["m"] == "failure"
    assert "Unrecognized named-value: 'matrix'" in record.jobs["m"].error
    assert json.dumps(record.results())  # still a plain record


def test_a_run_cancelled_during_a_matrix_cancels_its_running_and_queued_combinations(
    gh_evaluator: Evaluator, origin: Path
) -> None:
    workflow = FAILING.format(fail_fast="", sleep=120).replace("max-parallel: 2", "max-parallel: 1")
    workflow = workflow.replace("exit 7", "sleep 120").replace("= failure", "= cancelled")
    run = _run(workflow, gh_evaluator, origin, pools={"ubuntu-latest": 2}).start()
    try:
        run.wait_for(
            lambda r: bool(r.jobs["m"].instances) and r.jobs["m"].instances[0].started is not None,
            60,
        )
    finally:
        run.cancel()
    record = run.wait(120)
    assert [one.result for one in record.jobs["m"].instances] == ["cancelled"] * 4
    assert [one.runner is None for one in record.jobs["m"].instances] == [False] + [True] * 3
    assert record.results() == {"m": "cancelled", "dependent": "cancelled", "report": "success"}
    assert record.result == "cancelled"
