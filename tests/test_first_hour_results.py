"""Issue 15, the first hour: results that were wrong or silent, each shown through the CLI.

A `when` reading a metric the step never wrote, `sluice retry` and `finally`/`cache: false`
steps, `sluice graph` and a finally step's needs, `tick --now` and drift cooldowns, a claimed
cron slot, and which workspace files a step's cache key covers by default.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import git, make_repo, sluice

GATE = """
name: gate
params: {{min_accuracy: 0.8}}
defaults: {{image: {image}}}
steps:
  - name: evaluate
    run: {write}
  - name: deploy
    needs: [evaluate]
    when: "steps.evaluate.metrics.accuracy >= params.min_accuracy"
    run: echo deploying
"""
TO_CWD = """'echo "{\\"accuracy\\": 0.858}" > metrics.json'"""  # the mistake: not /sluice/outputs
TO_OUTPUTS = """'echo "{\\"accuracy\\": 0.858}" > /sluice/outputs/metrics.json'"""
OTHER_KEY = """'echo "{\\"acc\\": 0.858}" > /sluice/outputs/metrics.json'"""


def no_github() -> dict[str, str | None]:
    """The runner's own GITHUB_* variables (when tests run in Actions) must not leak in."""
    return {k: None for k in os.environ if k.startswith("GITHUB_")}


def run_json(repo: Path, *args: str, env: dict[str, str | None] | None = None) -> Any:
    done = sluice("run", *args, "--json", repo=repo, env={**no_github(), **(env or {})})
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout), done


@pytest.mark.docker
def test_a_when_reading_a_metric_the_step_never_wrote_says_so(
    tmp_path: Path, busybox_image: str
) -> None:
    from engine.adapters.github_env import run_summary
    from engine.core.manifest import RunManifest

    write = {"to-cwd.yaml": TO_CWD, "other-key.yaml": OTHER_KEY, "outputs.yaml": TO_OUTPUTS}
    repo = make_repo(
        tmp_path,
        {
            file: GATE.replace("name: gate", f"name: {file.removesuffix('.yaml')}").format(
                image=busybox_image, write=text
            )
            for file, text in write.items()
        },
    )

    manifest, done = run_json(repo, "to-cwd")
    # decided: a warning, not a failure (a missing value is null, and the gate stays shut)
    assert done.returncode == 0 and manifest["status"] == "succeeded"
    deploy = manifest["steps"]["deploy"]
    assert deploy["status"] == "skipped"
    assert deploy["reason"] == (
        "when is false: steps.evaluate.metrics.accuracy >= params.min_accuracy "
        "(null >= 0.8 is false)"
    )
    (warning,) = deploy["warnings"]
    assert warning.startswith("`accuracy` is missing: evaluate wrote no metrics.json")
    assert "/sluice/outputs/metrics.json" in warning
    assert f"warning: deploy: {warning}" in done.stderr  # said while the run goes
    summary = run_summary(RunManifest.model_validate(manifest), None, None)
    assert "**Warnings**" in summary
    assert "deploy: \\`accuracy\\` is missing: evaluate wrote no metrics.json" in summary

    manifest, done = run_json(repo, "other-key")
    (warning,) = manifest["steps"]["deploy"]["warnings"]
    assert (
        warning == "`accuracy` is missing: evaluate wrote metrics without `accuracy` (it wrote acc)"
    )

    # the metric is there: no warning, and a false `when` shows the values it compared
    manifest, done = run_json(repo, "outputs", "-p", "min_accuracy=0.9")
    deploy = manifest["steps"]["deploy"]
    assert deploy["warnings"] == []
    assert deploy["reason"] == (
        "when is false: steps.evaluate.metrics.accuracy >= params.min_accuracy (0.858 < 0.9)"
    )
    manifest, _ = run_json(repo, "outputs")
    assert manifest["steps"]["deploy"]["status"] == "succeeded"


FINALLY_NEEDS = """
name: fin
defaults: {image: busybox}
steps:
  - {name: pick, run: "true"}
  - {name: publish, needs: [pick], run: "true"}
finally:
  - {name: summary, needs: [pick], run: "true"}
  - {name: tidy, needs: [summary], run: "true"}
"""


def test_graph_keeps_a_finally_steps_needs(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"fin.yaml": FINALLY_NEEDS})

    def graph(fmt: str) -> str:
        done = sluice("graph", "fin", "--format", fmt, repo=repo)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert graph("text").endswith("finally:\n  summary  (needs pick)\n  tidy  (needs summary)\n")
    mermaid = graph("mermaid").splitlines()
    assert "  s_pick --> s_summary" in mermaid
    assert "  s_summary --> s_tidy" in mermaid
    dot = graph("dot")
    assert '"pick" -> "summary";' in dot and '"summary" -> "tidy";' in dot
    edges = json.loads(graph("json"))["edges"]
    assert ["pick", "summary"] in edges and ["summary", "tidy"] in edges


RETRIED = """
name: retried
defaults: {{image: {image}}}
steps:
  - name: stamp
    cache: false
    run: echo stamping
  - name: train
    run: 'test -e go && echo "{{\\"n\\": 1}}" > /sluice/outputs/metrics.json'
finally:
  - name: notify
    needs: [train]
    run: 'if [ -e /sluice/inputs/train/metrics.json ]; then echo ok; else echo broken; fi'
"""


@pytest.mark.docker
def test_retry_runs_finally_and_cache_false_steps_again(tmp_path: Path, busybox_image: str) -> None:
    repo = make_repo(tmp_path, {"retried.yaml": RETRIED.format(image=busybox_image)})
    first, done = run_json(repo, "retried")
    assert done.returncode == 1
    assert first["steps"]["notify"]["status"] == "succeeded"
    assert "[notify] broken" in done.stderr

    (repo / "go").write_text("")
    retry = sluice("retry", first["run_id"], "--json", repo=repo, env=no_github())
    assert retry.returncode == 0, retry.stderr
    again = json.loads(retry.stdout)
    steps = again["steps"]
    assert steps["train"]["status"] == "succeeded"
    # the finally step reports the retry, not the original: it ran, and saw train's outputs
    assert steps["notify"]["status"] == "succeeded", steps["notify"]
    assert steps["notify"]["cached_from"] is None
    assert "[notify] ok" in retry.stderr
    # a `cache: false` step (a side effect) happens again for the retry
    assert steps["stamp"]["status"] == "succeeded", steps["stamp"]
    assert len(steps["stamp"]["attempts"]) == 1
    assert "[stamp] stamping" in retry.stderr


WHOLE_REPO = """
name: whole
defaults: {{image: {image}}}
steps:
  - name: train
    run: cat src/model.py > /sluice/outputs/model.txt; ls -A
"""
EVERYTHING = """
name: everything
defaults: {{image: {image}}}
steps:
  - name: readme
    workspace: [.]
    run: cat README.md
"""


@pytest.mark.docker
def test_editing_docs_reruns_nothing_and_a_code_change_says_how_to_narrow(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(
        tmp_path,
        {
            "whole.yaml": WHOLE_REPO.format(image=busybox_image),
            "everything.yaml": EVERYTHING.format(image=busybox_image),
        },
        {"src/model.py": "EPOCHS = 1\n", "README.md": "# demo\n", "docs/guide.txt": "g\n"},
        commit="first",
    )
    first, done = run_json(repo, "whole")
    assert first["status"] == "succeeded", done.stderr
    listing = [line for line in done.stderr.splitlines() if line.startswith("[train] ")]
    assert "[train] src" in listing
    assert "[train] README.md" not in listing and "[train] docs" not in listing  # not copied
    assert run_json(repo, "everything")[0]["status"] == "succeeded"

    (repo / "README.md").write_text("# demo, documented\n")
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "ci.yml").write_text("on: push\n")
    again, _ = run_json(repo, "whole")
    assert again["steps"]["train"]["status"] == "cached"
    # `workspace: [.]` takes every file, docs too: it runs again
    assert run_json(repo, "everything")[0]["steps"]["readme"]["status"] == "succeeded"

    (repo / "src" / "model.py").write_text("EPOCHS = 2\n")
    dry = sluice("run", "whole", "--dry-run", "--json", repo=repo, env=no_github())
    assert dry.returncode == 0, dry.stderr
    verdicts = {d["step"]: d for d in json.loads(dry.stdout)}
    assert verdicts["train"]["reason"] == (
        "workspace files changed (src/model.py); declare `workspace: [paths]` to narrow"
    )
    dry = sluice("run", "everything", "--dry-run", "--json", repo=repo, env=no_github())
    (verdict,) = json.loads(dry.stdout)
    assert verdict["reason"] == "workspace files changed (src/model.py)"  # named: no advice


def origin_clone(tmp_path: Path, pipelines: dict[str, str]) -> Path:
    """A runner's clone of a bare origin holding these pipelines (results go to origin)."""
    seed = make_repo(tmp_path, pipelines, name="seed", origin=True)
    clone = tmp_path / "runner"
    git(tmp_path, "clone", "-q", str(tmp_path / "origin.git"), str(clone))
    assert seed.exists()
    return clone


MONITOR = """
name: monitor
triggers:
  - cron: "0 * * * *"
steps:
  - name: check
    image: {image}
    run: 'echo "{{\\"drift_detected\\": true}}" > /sluice/outputs/metrics.json'
"""
BOUND = """
name: retrain
triggers:
  - drift: {{monitor: monitor, when: "metrics.drift_detected", cooldown: 6h}}
steps:
  - {{name: train, image: {image}, run: echo retraining}}
"""


@pytest.mark.docker
def test_tick_now_times_drift_cooldowns_too(tmp_path: Path, busybox_image: str) -> None:
    repo = origin_clone(
        tmp_path,
        {
            "monitor.yaml": MONITOR.format(image=busybox_image),
            "retrain.yaml": BOUND.format(image=busybox_image),
        },
    )
    done = sluice("tick", "--now", "2026-11-25T10:05:00Z", "--json", repo=repo, env=no_github())
    assert done.returncode == 0, done.stderr
    monitor, retrained = json.loads(done.stdout)
    assert retrained["trigger"]["kind"] == "drift"
    assert retrained["trigger"]["payload"]["cooldown_until"] == "2026-11-25T16:05:00.000Z"
    # run ids keep the wall clock: "the latest run" is the one that started last
    assert not monitor["run_id"].startswith("20261125T")
    assert not retrained["run_id"].startswith("20261125T")
    # an hour later by that clock: still cooling down
    later = sluice("tick", "--now", "2026-11-25T11:05:00Z", "--json", repo=repo, env=no_github())
    assert [m["pipeline"] for m in json.loads(later.stdout)] == ["monitor"], later.stderr
    assert "suppressed" in later.stderr


NIGHTLY = """
name: nightly
triggers:
  - cron: "0 2 * * *"
steps:
  - name: work
    image: {image}
    run: test -e go
"""


@pytest.mark.docker
def test_a_claimed_slot_says_which_run_holds_it_and_how_to_rerun(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = origin_clone(tmp_path, {"nightly.yaml": NIGHTLY.format(image=busybox_image)})
    now = "2026-11-25T02:05:00Z"
    first = sluice("tick", "--now", now, "--json", repo=repo, env=no_github())
    assert first.returncode == 1, first.stderr
    (failed,) = json.loads(first.stdout)
    run_id = failed["run_id"]
    claim = json.loads(
        git(tmp_path / "origin.git", "show", "sluice-results:claims/cron/nightly/20261125T0200Z")
    )
    assert claim["run_id"] == run_id

    again = sluice("tick", "--now", now, "--json", repo=repo, env=no_github())
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == []
    assert "1 due slot already claimed: not run again" in again.stderr
    assert (
        f"nightly@20261125T0200Z: held by run {run_id}, which failed: "
        f"to run it again, `sluice retry {run_id}`"
    ) in again.stderr

    # the advice works
    (repo / "go").write_text("")
    retried = sluice("retry", run_id, "--json", repo=repo, env=no_github())
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["status"] == "succeeded"


@pytest.mark.docker
def test_the_summary_says_why_a_step_ran_and_how_to_narrow(
    tmp_path: Path, busybox_image: str
) -> None:
    from engine.adapters.github_env import run_summary
    from engine.core.manifest import RunManifest

    repo = make_repo(
        tmp_path,
        {"whole.yaml": WHOLE_REPO.format(image=busybox_image)},
        {"src/model.py": "EPOCHS = 1\n"},
        commit="first",
    )
    run_json(repo, "whole")
    (repo / "src" / "model.py").write_text("EPOCHS = 2\n")
    again, _ = run_json(repo, "whole")
    why = "workspace files changed (src/model.py); declare `workspace: [paths]` to narrow"
    assert again["steps"]["train"]["reason"] == f"not cached: {why}"
    summary = run_summary(RunManifest.model_validate(again), None, None)
    assert "| train | ✅ succeeded | 1 |" in summary
    assert "not cached: workspace files changed \\(src/model.py\\); declare" in summary
