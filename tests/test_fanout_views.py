"""How fanned-out steps look: the end-of-run table, `sluice show`, the GitHub job summary,
the pull-request comment's steps, and the live reporters, from manifests built by hand."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from conftest import make_repo, sluice

from engine.adapters import github_env
from engine.adapters.console import LiveReporter, PlainReporter
from engine.adapters.git_results import ResultsStore
from engine.core import step_rows
from engine.core.expand import expand
from engine.core.graph import build
from engine.core.manifest import Attempt, Outcome, RunManifest, RunStatus, StepRecord, StepStatus
from engine.core.parse import load_text
from engine.core.run_text import Sweeps, summary_lines

RUN = "20261204T050000Z-abc123"
OK, FAILED = StepStatus.succeeded, StepStatus.failed


def _ran(status: StepStatus, seconds: float = 1.0, tries: int = 1, **fields: object) -> StepRecord:
    outcome = Outcome.succeeded if status is OK else Outcome.failed
    attempts = [
        Attempt(
            number=n,
            outcome=outcome,
            exit_code=0 if status is OK else 1,
            started_at="2026-12-04T05:00:00Z",
            finished_at="2026-12-04T05:00:01Z",
            duration_s=seconds,
        )
        for n in range(1, tries + 1)
    ]
    reason = None if status is OK else "exit code 1"
    return StepRecord.model_validate(
        {"status": status, "attempts": attempts, "reason": reason, **fields}
    )


def _sweep(statuses: list[StepStatus], reason: str, status: StepStatus) -> RunManifest:
    """prep -> train (one instance per status, n=0,1,...) -> select."""
    names = [f"train[n_estimators={50 * (i + 1)},max_depth=3]" for i in range(len(statuses))]
    steps = {"prep": _ran(OK, 0.5)}
    for i, (name, s) in enumerate(zip(names, statuses, strict=True)):
        metrics = {"roc_auc": round(0.8 + i / 1000, 4)} if s is OK else {}
        steps[name] = _ran(
            s,
            tries=1 if s is OK else 2,
            instance_of="train",
            matrix={"n_estimators": 50 * (i + 1), "max_depth": 3},
            needs=["prep"],
            metrics=metrics,
        )
    steps["train"] = StepRecord(status=status, needs=names, instances=names, reason=reason)
    after = StepStatus.succeeded if status is OK else StepStatus.upstream_failed
    steps["select"] = (
        _ran(OK, 0.2, metrics={"best": 0.81})
        if after is OK
        else StepRecord(status=after, needs=["train"], reason="train failed")
    )
    return RunManifest(
        run_id=RUN,
        pipeline="sweep",
        pipeline_file="pipelines/sweep.yaml",
        pipeline_sha256="0" * 64,
        started_at="2026-12-04T05:00:00Z",
        status=RunStatus.succeeded if status is OK else RunStatus.failed,
        steps=steps,
    )


FOUR = [OK, OK, FAILED, OK]
FOUR_REASON = "4 instances: 3 succeeded, 1 failed (allowed failures: 0)"


def test_the_end_of_run_table_groups_instances_under_their_step() -> None:
    assert summary_lines(_sweep(FOUR, FOUR_REASON, FAILED)) == [
        f"run {RUN} (sweep): failed",
        "  prep                                   succeeded        1 attempt      0.5s",
        f"  train                                  failed                                {FOUR_REASON}",
        "    train[n_estimators=50,max_depth=3]   succeeded        1 attempt      1.0s  roc_auc=0.8",
        "    train[n_estimators=100,max_depth=3]  succeeded        1 attempt      1.0s  roc_auc=0.801",
        "    train[n_estimators=150,max_depth=3]  failed           2 attempts     2.0s  exit code 1",
        "    train[n_estimators=200,max_depth=3]  succeeded        1 attempt      1.0s  roc_auc=0.803",
        "  select                                 upstream_failed                       train failed",
    ]


def test_a_succeeded_sweep_still_shows_its_tally() -> None:
    reason = "2 instances: 2 succeeded"
    lines = summary_lines(_sweep([OK, OK], reason, OK))
    assert (
        lines[2]
        == f"  train                                  succeeded                             {reason}"
    )


def _big(failed: set[int], count: int = 64) -> RunManifest:
    statuses = [FAILED if i in failed else OK for i in range(count)]
    reason = f"{count} instances: {count - len(failed)} succeeded, {len(failed)} failed"
    return _sweep(statuses, reason, FAILED)


def test_a_large_sweep_lists_the_failed_instances_and_counts_the_rest() -> None:
    manifest = _big({7, 40})
    lines = summary_lines(manifest)
    assert len(lines) == 1 + 1 + 1 + 2 + 1 + 1  # run, prep, train, 2 failed, the rest, select
    assert re.match(r"    train\[n_estimators=400,max_depth=3\] +failed +2 attempts", lines[3])
    assert re.match(r"    train\[n_estimators=2050,max_depth=3\] +failed +2 attempts", lines[4])
    assert lines[5] == "    ... and 62 more instances (62 succeeded)"
    assert len(manifest.steps) == 67  # the manifest keeps them all


def test_rows_cap_even_the_failed_ones_and_count_what_is_left() -> None:
    found = step_rows.rows(_big(set(range(30))).steps)
    listed = [r for r in found if r.depth and r.record is not None]
    assert len(listed) == step_rows.LIMIT
    (rest,) = [r for r in found if r.record is None]
    assert rest.rest == (("failed", 10), ("succeeded", 34))
    assert step_rows.rest_text(rest) == "... and 44 more instances (10 failed, 34 succeeded)"
    assert len(step_rows.rows(_big(set()).steps, limit=None)) == 3 + 64


def test_an_instance_without_its_group_is_a_row_of_its_own() -> None:
    steps = {"t[1]": _ran(OK, instance_of="t", matrix={"item": 1})}
    assert [(r.shown, r.depth) for r in step_rows.rows(steps)] == [("t[1]", 0)]


# The GitHub job summary and the pull-request comment ------------------------------------------


def _run_dag(manifest: RunManifest) -> object:
    return build({name: list(rec.needs) for name, rec in manifest.steps.items()})


def test_the_job_summary_groups_instances_and_draws_the_step_once() -> None:
    manifest = _sweep(FOUR, FOUR_REASON, FAILED)
    text = github_env.run_summary(manifest, _run_dag(manifest), None)  # type: ignore[arg-type]
    rows = [line for line in text.splitlines() if line.startswith("| ")][2:]
    assert rows[1].startswith("| train | ❌ failed |  |  | 4 instances: 3 succeeded, 1 failed")
    assert rows[2].startswith(
        "| &emsp;↳ train\\[n\\_estimators=50,max\\_depth=3\\] | ✅ succeeded | 1 | 1.0s"
    )
    assert rows[4].startswith(
        "| &emsp;↳ train\\[n\\_estimators=150,max\\_depth=3\\] | ❌ failed | 2 | 2.0s"
    )
    chart = text.split("```mermaid\n")[1].split("```")[0]
    assert 's_train["train \u00d74"]' in chart
    assert "  class s_train failed" in chart
    assert "n_estimators" not in chart  # no instance node, no class line for one
    assert "  s_prep --> s_train\n" in chart and "  s_train --> s_select\n" in chart


def test_the_job_summary_of_a_large_sweep_stays_short() -> None:
    manifest = _big({3})
    text = github_env.summary([manifest], {"sweep": _run_dag(manifest)}, {})  # type: ignore[dict-item]
    assert "| &emsp;... and 63 more instances \\(63 succeeded\\) | | | | |" in text
    assert text.count("n\\_estimators=") == 1 + 0  # the failed one only; its metrics: none
    assert "roc\\_auc" not in text  # the other instances' metrics are in the manifest


def test_the_job_summary_draws_with_the_real_renderer(tmp_path: Path) -> None:
    mermaid_render = pytest.importorskip("mermaid_render")
    manifest = _sweep(FOUR, FOUR_REASON, FAILED)
    text = github_env.run_summary(manifest, _run_dag(manifest), None)  # type: ignore[arg-type]
    (svg,) = mermaid_render.render_markdown(text, tmp_path / "render")
    assert "train \u00d74" in svg and "select" in svg


def test_the_pull_request_comment_lists_instances_under_their_step() -> None:
    from engine.core.pr_comment import _steps

    table = _steps(_big({5}, count=30))
    assert "| train | ❌ failed |" not in table  # the step's name in a code span
    lines = table.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| `train`"))
    assert lines[at + 1].startswith("| &emsp;↳ `train[n_estimators=300,max_depth=3]` | ❌ failed")
    assert lines[at + 2] == "| &emsp;... and 29 more instances (29 succeeded) | | |"


# The live reporters ------------------------------------------------------------------------------


def test_plain_progress_counts_a_sweeps_finished_instances() -> None:
    manifest = _sweep([OK, FAILED, OK], "3 instances", FAILED)
    pending = manifest.model_copy(deep=True)
    for record in pending.steps.values():
        record.status = StepStatus.pending
    out = io.StringIO()
    reporter = PlainReporter(out, show_logs=False)
    reporter.run_started(pending, _run_dag(pending))  # type: ignore[arg-type]
    names = list(pending.steps["train"].instances)
    for name in names:
        reporter.step_changed(name, manifest.steps[name])
    reporter.step_changed("train", manifest.steps["train"])
    said = out.getvalue().splitlines()
    assert said[0] == f"sluice: run {RUN} of sweep started (6 steps, 3 of them instances of train)"
    assert said[1] == f"sluice: {names[0]}: succeeded in 1.0s (train: 1/3 done)"
    assert said[2] == f"sluice: {names[1]}: failed in 2.0s: exit code 1 (train: 2/3 done, 1 failed)"
    assert said[3] == f"sluice: {names[2]}: succeeded in 1.0s (train: 3/3 done, 1 failed)"
    assert said[4] == "sluice: train: failed: 3 instances"


def test_the_live_table_shows_a_64_instance_sweep_in_a_few_rows() -> None:
    from rich.console import Console

    manifest = _big(set())
    start = manifest.model_copy(deep=True)
    for record in start.steps.values():
        record.status = StepStatus.pending
        record.attempts = []
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False, no_color=True)
    reporter = LiveReporter(console, show_logs=False)
    reporter._records = {n: r.model_copy() for n, r in start.steps.items()}
    reporter._sweeps = Sweeps(start.steps)  # as run_started sets them, without a live display
    names = list(start.steps["train"].instances)
    for name in names[:10]:
        reporter.step_changed(name, manifest.steps[name])
    running = StepRecord(status=StepStatus.running, instance_of="train")
    for name in names[10:14]:
        reporter.step_changed(name, running)
    console.print(reporter._table())
    lines = [line.rstrip() for line in out.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1 + 3 + 4  # the header, prep, train, select, 4 running instances
    (train,) = [line for line in lines if line.startswith("train ")]
    assert re.fullmatch(r"train\s+running\s+10/64 done", train)
    shown = [line.split()[0] for line in lines if line.startswith("  ")]
    assert shown == names[10:14]  # markup kept as text


# sluice show, sluice logs, --json ----------------------------------------------------------------


def _recorded(tmp_path: Path, manifest: RunManifest) -> Path:
    repo = make_repo(tmp_path, {"sweep.yaml": "name: sweep\nsteps: []\n"}, commit="init")
    with ResultsStore(repo) as store:
        store.record_run(manifest)
    return repo


def test_show_groups_instances_and_json_keeps_every_record(tmp_path: Path) -> None:
    manifest = _sweep(FOUR, FOUR_REASON, FAILED)
    repo = _recorded(tmp_path, manifest)
    done = sluice("show", RUN, repo=repo, env={"NO_COLOR": "1"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "\x1b" not in done.stdout
    at = next(i for i, line in enumerate(lines) if line.startswith("  train "))
    assert lines[at].endswith(FOUR_REASON)
    assert lines[at + 1].startswith("    train[n_estimators=50,max_depth=3]   succeeded ")
    assert lines[at + 1].endswith("roc_auc=0.8")
    assert not any(" metrics: " in line for line in lines[at:])  # on the instances' rows
    document = json.loads(sluice("show", RUN, "--json", repo=repo).stdout)
    assert list(document["steps"]) == list(manifest.steps)
    assert document["steps"]["train"]["instances"] == list(manifest.steps["train"].instances)
    first = document["steps"]["train[n_estimators=50,max_depth=3]"]
    assert first["instance_of"] == "train"
    assert first["matrix"] == {"n_estimators": 50, "max_depth": 3}


def test_show_of_a_large_sweep_lists_failures_and_json_all(tmp_path: Path) -> None:
    repo = _recorded(tmp_path, _big({9}))
    lines = sluice("show", RUN, repo=repo).stdout.splitlines()
    assert "    ... and 63 more instances (63 succeeded)" in lines
    assert sum("n_estimators=" in line for line in lines) == 1
    document = json.loads(sluice("show", RUN, "--json", repo=repo).stdout)
    assert len(document["steps"]) == 67


def test_logs_of_a_fanned_out_step_names_its_instances(tmp_path: Path) -> None:
    repo = _recorded(tmp_path, _sweep(FOUR, FOUR_REASON, FAILED))
    done = sluice("logs", RUN, "train", repo=repo)
    assert done.returncode == 2
    assert "step 'train' of run" in done.stderr and "is fanned out" in done.stderr
    assert f"`sluice logs {RUN} 'train[n_estimators=50,max_depth=3]'`" in done.stderr
    assert "'train[n_estimators=200,max_depth=3]'" in done.stderr


# The run's DAG, drawn as the file reads ----------------------------------------------------------


def test_a_runs_expanded_dag_is_drawn_collapsed_in_the_summary() -> None:
    loaded = load_text(
        "name: sweep\ndefaults: {image: img}\nsteps:\n"
        "  - {name: prep, run: x}\n"
        "  - {name: train, needs: prep, foreach: [a, b], run: x}\n"
        "  - {name: select, needs: train, run: x}\n",
        "sweep.yaml",
    )
    run = expand(loaded, {})
    manifest = _sweep([OK, OK], "2 instances: 2 succeeded", OK)
    manifest.steps = {
        "prep": manifest.steps["prep"],
        "train[a]": _ran(OK, instance_of="train"),
        "train[b]": _ran(OK, instance_of="train"),
        "train": StepRecord(status=OK, instances=["train[a]", "train[b]"]),
        "select": manifest.steps["select"],
    }
    for dag in (run.dag, loaded.dag):
        chart = step_rows.mermaid(manifest.steps, dag)
        assert 's_train["train \u00d72"]' in chart
        assert "train[a]" not in chart
        assert "  s_prep --> s_train\n  s_train --> s_select\n" in chart


def test_the_live_tables_last_state_shows_a_few_failed_instances_and_the_tally() -> None:
    from rich.console import Console

    manifest = _big(set(range(0, 64, 8)))  # 8 failed
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False, no_color=True)
    reporter = LiveReporter(console, show_logs=False)
    reporter.run_finished(manifest)
    console.print(reporter._table())
    table = out.getvalue().split("step ", 1)[1].splitlines()
    (train,) = [line for line in table if line.startswith("train ")]
    assert re.fullmatch(r"train\s+failed\s+64/64 done, 8 failed", train.rstrip())
    listed = [line.split()[0] for line in table if line.startswith("  train[")]
    assert listed == [f"train[n_estimators={50 * (i + 1)},max_depth=3]" for i in range(0, 40, 8)]


# A real run (Docker) -----------------------------------------------------------------------------


@pytest.mark.docker
def test_a_real_sweep_is_grouped_in_the_run_table_and_in_show(
    tmp_path: Path, busybox_image: str
) -> None:
    text = f"""
    name: real
    defaults: {{image: {busybox_image}}}
    steps:
      - name: train
        matrix: {{n: [1, 2], d: [3, 5]}}
        allow_failures: 1
        run: >-
          test "${{{{ matrix.n }}}}${{{{ matrix.d }}}}" != 25 &&
          echo '{{"auc": 0.${{{{ matrix.n }}}}${{{{ matrix.d }}}}}}' > /sluice/outputs/metrics.json
      - name: pick
        needs: train
        run: "true"
    """
    repo = make_repo(tmp_path, {"real.yaml": text}, commit="real")
    done = sluice("run", "real", "--no-push", repo=repo, env={"NO_COLOR": "1"})
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stderr
    said = done.stderr.splitlines()
    finished = [line for line in said if line.startswith("sluice: train[") and "(train: " in line]
    assert len(finished) == 4
    assert finished[-1].endswith("(train: 4/4 done, 1 failed)")
    table = said[said.index(next(line for line in said if line.startswith("run "))) :]
    at = next(i for i, line in enumerate(table) if line.startswith("  train "))
    assert table[at].endswith("4 instances: 3 succeeded, 1 failed (allowed failures: 1)")
    rows = table[at + 1 : at + 5]
    assert [row.split()[0] for row in rows] == [
        "train[n=1,d=3]",
        "train[n=1,d=5]",
        "train[n=2,d=3]",
        "train[n=2,d=5]",
    ]
    assert rows[0].split()[1:4] == ["succeeded", "1", "attempt"]
    assert "auc=0.13" in rows[0]
    assert rows[3].split()[1] == "failed"
    assert table[at + 5].startswith("  pick ")
    run_id = table[0].split()[1]
    shown = sluice("show", run_id, repo=repo).stdout.splitlines()
    assert [line.split()[0] for line in shown if line.startswith("    train[")] == [
        row.split()[0] for row in rows
    ]
    logs = sluice("logs", run_id, "train", repo=repo)
    assert logs.returncode == 2
    assert "'train[n=2,d=5]'" in logs.stderr
