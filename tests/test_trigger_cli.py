"""`sluice trigger` as a GitHub job runs it (real git with a bare origin on disk, real Docker),
and engine.adapters.github_env's edges: event files, changed files, outputs, summaries, annotations."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import git, make_repo, sluice

EVENTS = Path(__file__).parent / "events"
CHECKOUT = Path(__file__).resolve().parents[1]

TRAIN = """
name: train
triggers:
  - push: {{paths: ["src/**"]}}
params: {{epochs: 2}}
baseline: {{step: fit}}
defaults: {{image: {image}}}
steps:
  - name: prepare
    run: echo preparing
  - name: fit
    needs: [prepare]
    env: {{EPOCHS: "${{{{ params.epochs }}}}"}}
    run: 'echo "{{\\"accuracy\\": 0.9, \\"epochs\\": $EPOCHS}}" > /sluice/outputs/metrics.json'
"""
GREET = """
name: greet
triggers:
  - webhook: {{event: greet}}
params: {{name: world}}
steps:
  - name: hello
    image: {image}
    env: {{NAME: "${{{{ params.name }}}}"}}
    run: 'echo "hello $NAME"; test ! -e injected && test ! -e /injected'
"""
EXITS = """
name: exits
triggers:
  - cron: "* * * * *"
params: {{code: 0}}
steps:
  - name: only
    image: {image}
    env: {{CODE: "${{{{ params.code }}}}"}}
    run: 'exit "$CODE"'
"""
BAD = """\
name: bad
steps:
  - name: a
    image: busybox
    run: "true"
    needz: [b]
"""


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    git(repo, "push", "-q", "origin", "main")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path, busybox_image: str) -> Path:
    """A clone of a bare origin with two pipelines, their first commit pushed."""
    work = make_repo(
        tmp_path,
        files={
            "pipelines/train.yaml": textwrap.dedent(TRAIN).format(image=busybox_image),
            "pipelines/greet.yaml": textwrap.dedent(GREET).format(image=busybox_image),
            "pipelines/exits.yaml": textwrap.dedent(EXITS).format(image=busybox_image),
            "src/model.py": "EPOCHS = 2\n",
            "README.md": "# demo\n",
        },
        commit="first",
        origin=True,
    )
    (tmp_path / "cwd").mkdir()
    return work


def push_event(
    tmp_path: Path, before: str, after: str, files: list[str] | None = None, name: str = "push"
) -> Path:
    """A GitHub push payload; `files` is its commit list (empty: only git's diff can tell)."""
    payload: dict[str, Any] = json.loads((EVENTS / "push.json").read_text())
    payload.update(before=before, after=after)
    head = {**payload["head_commit"], "id": after, "added": [], "removed": []}
    head["modified"] = files or []
    payload["commits"] = [head]
    payload["head_commit"] = head
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(payload))
    return path


def trigger(
    repo: Path,
    event_name: str,
    event_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    # The runner's own GITHUB_* variables (when these tests run in Actions) must not leak in.
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("GITHUB_")}
    # It runs in another folder (to see what lands there); sluice() imports this checkout.
    return sluice(
        *("trigger", "--json", "--event-name", event_name, "--event-path", str(event_path)),
        *args,
        repo=repo,
        env={**clean, **(env or {})},
        cwd=repo.parent / "cwd",
        process=True,
    )


def on_origin(repo: Path, run: dict[str, Any]) -> bool:
    path = f"sluice-results:runs/{run['pipeline']}/{run['run_id']}/manifest.json"
    origin = repo.parent / "origin.git"
    found = subprocess.run(["git", "--git-dir", str(origin), "cat-file", "-e", path], check=False)
    return found.returncode == 0


@pytest.mark.docker
def test_a_push_touching_watched_paths_runs_the_pipeline_and_reports_to_github(
    tmp_path: Path, repo: Path
) -> None:
    first = git(repo, "rev-parse", "HEAD")
    second = commit(repo, {"src/model.py": "EPOCHS = 3\n"}, "tune")
    outputs, summary = tmp_path / "output.txt", tmp_path / "summary.md"
    outputs.write_text("earlier=kept\n")
    github = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_STEP_SUMMARY": str(summary),
    }

    done = trigger(repo, "push", push_event(tmp_path, first, second), env=github)

    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)
    assert [r["pipeline"] for r in runs] == ["train"]
    run = runs[0]
    assert run["status"] == "succeeded"
    assert run["trigger"]["kind"] == "push"
    assert run["trigger"]["payload"]["files"] == ["src/model.py"]
    assert run["trigger"]["payload"]["source"] == "git diff"  # the commit list was empty
    assert run["steps"]["fit"]["metrics"] == {"accuracy": 0.9, "epochs": 2}
    assert on_origin(repo, run)
    assert "::group::sluice: train (push)" in done.stderr
    assert "::endgroup::" in done.stderr
    assert outputs.read_text() == f"earlier=kept\nrun-ids={run['run_id']}\nstatus=succeeded\n"
    text = summary.read_text()
    assert "| Step | Status | Attempts | Duration | Note |" in text
    assert "| prepare | ✅ succeeded | 1 |" in text
    assert "```mermaid\nflowchart LR\n" in text
    assert "  s_prepare --> s_fit\n" in text
    assert "  class s_fit succeeded\n" in text
    assert "| fit | `accuracy` | 0.9 |" in text

    # The next push compares its metrics with the baseline: the run above.
    third = commit(repo, {"src/model.py": "EPOCHS = 4\n"}, "tune again")
    summary.write_text("")
    again = trigger(repo, "push", push_event(tmp_path, second, third), env=github)
    assert again.returncode == 0, again.stderr
    later = json.loads(again.stdout)[0]
    assert later["baseline_run"] == run["run_id"]
    text = summary.read_text()
    assert f"| Step | Metric | Value | Baseline `{run['run_id']}` |" in text
    assert "| fit | `accuracy` | 0.9 | 0.9 |" in text
    assert outputs.read_text().endswith(f"run-ids={later['run_id']}\nstatus=succeeded\n")


@pytest.mark.docker
def test_a_push_of_unrelated_files_runs_nothing(tmp_path: Path, repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    second = commit(repo, {"README.md": "# demo, documented\n"}, "docs")
    outputs, summary = tmp_path / "output.txt", tmp_path / "summary.md"
    env = {"GITHUB_OUTPUT": str(outputs), "GITHUB_STEP_SUMMARY": str(summary)}

    done = trigger(repo, "push", push_event(tmp_path, first, second), env=env)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    assert "nothing to run" in done.stderr
    assert outputs.read_text() == "run-ids=\nstatus=skipped\n"
    assert "nothing ran" in summary.read_text()
    assert not (repo / ".sluice" / "runs").exists()


@pytest.mark.docker
def test_an_invalid_pipeline_stops_a_push_with_annotations(tmp_path: Path, repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    second = commit(repo, {"pipelines/bad.yaml": BAD, "src/model.py": "EPOCHS = 5\n"}, "oops")
    summary = tmp_path / "summary.md"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}

    done = trigger(repo, "push", push_event(tmp_path, first, second), env=env)

    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "pipelines/bad.yaml:6: unknown key 'needz'" in done.stderr
    assert "::error file=pipelines/bad.yaml,line=6::unknown key 'needz'" in done.stderr
    assert "nothing was run" in done.stderr
    assert "| `pipelines/bad.yaml` | 6 |" in summary.read_text()
    assert not (repo / ".sluice" / "runs").exists()

    # Outside GitHub Actions the problems are printed without workflow commands.
    plain = trigger(repo, "push", push_event(tmp_path, first, second))
    assert plain.returncode == 2
    assert "::error" not in plain.stderr


@pytest.mark.docker
def test_a_shallow_clone_fetches_before_else_falls_back_to_the_event_commit_list(
    tmp_path: Path, repo: Path
) -> None:
    first = git(repo, "rev-parse", "HEAD")
    second = commit(repo, {"src/model.py": "EPOCHS = 6\n"}, "tune")
    shallow = tmp_path / "shallow"
    origin = (tmp_path / "origin.git").as_uri()
    subprocess.run(["git", "clone", "-q", "--depth", "1", origin, str(shallow)], check=True)
    missing = subprocess.run(["git", "-C", str(shallow), "cat-file", "-e", first], check=False)
    assert missing.returncode != 0  # `before` is not in this clone

    # the engine fetches `before` from origin by id and diffs as usual
    event = push_event(tmp_path, first, second, files=["src/model.py"])
    done = trigger(shallow, "push", event, "--no-push")
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)
    assert [r["pipeline"] for r in runs] == ["train"]
    assert runs[0]["trigger"]["payload"]["source"] == "git diff"

    # a `before` that origin does not have either (a force-push dropped it): the commit list
    gone = "1" * 40
    event = push_event(tmp_path, gone, second, files=["src/model.py"])
    done = trigger(shallow, "push", event, "--no-push")
    assert done.returncode == 0, done.stderr
    assert "using the files listed in the event's commits" in done.stderr
    assert "Traceback" not in done.stderr
    runs = json.loads(done.stdout)
    assert [r["pipeline"] for r in runs] == ["train"]
    assert runs[0]["trigger"]["payload"]["source"] == "commit list"
    assert runs[0]["status"] == "succeeded"


@pytest.mark.docker
def test_an_injection_payload_stays_data(tmp_path: Path, repo: Path) -> None:
    attack = "$(touch injected)"
    payload: dict[str, Any] = json.loads((EVENTS / "repository_dispatch.json").read_text())
    payload["action"] = "greet"
    payload["client_payload"] = {"params": {"name": attack}}
    event = tmp_path / "dispatch.json"
    event.write_text(json.dumps(payload))
    outputs = tmp_path / "output.txt"

    done = trigger(
        repo, "repository_dispatch", event, "--no-push", env={"GITHUB_OUTPUT": str(outputs)}
    )

    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)[0]
    assert run["pipeline"] == "greet"
    assert run["trigger"]["kind"] == "webhook"
    assert run["params"] == {"name": attack}
    assert run["steps"]["hello"]["status"] == "succeeded"  # nor was it created in the step
    assert f"[hello] hello {attack}" in done.stderr  # reached the step as text
    for folder in (repo, repo.parent / "cwd", tmp_path):
        assert not list(folder.rglob("injected")), folder
    assert outputs.read_text() == f"run-ids={run['run_id']}\nstatus=succeeded\n"


@pytest.mark.docker
def test_a_dispatched_run_that_fails_exits_1_with_status_failed(tmp_path: Path, repo: Path) -> None:
    payload: dict[str, Any] = json.loads((EVENTS / "workflow_dispatch.json").read_text())
    payload["inputs"] = {"pipeline": "pipelines/exits.yaml", "params": '{"code": 4}'}
    event = tmp_path / "dispatch.json"
    event.write_text(json.dumps(payload))
    outputs, summary = tmp_path / "output.txt", tmp_path / "summary.md"
    env = {"GITHUB_OUTPUT": str(outputs), "GITHUB_STEP_SUMMARY": str(summary)}

    done = trigger(repo, "workflow_dispatch", event, "--no-push", env=env)

    assert done.returncode == 1, done.stderr
    run = json.loads(done.stdout)[0]
    assert run["trigger"]["kind"] == "workflow_dispatch"
    assert run["params"] == {"code": 4}
    assert run["status"] == "failed"
    assert run["steps"]["only"]["attempts"][0]["exit_code"] == 4
    assert outputs.read_text() == f"run-ids={run['run_id']}\nstatus=failed\n"
    assert "### ❌ failed: exits" in summary.read_text()


@pytest.mark.docker
def test_dispatch_params_of_the_wrong_type_are_refused_before_anything_runs(
    tmp_path: Path, repo: Path
) -> None:
    payload: dict[str, Any] = json.loads((EVENTS / "workflow_dispatch.json").read_text())
    payload["inputs"] = {"pipeline": "train", "params": '{"epochs": "many"}'}
    event = tmp_path / "dispatch.json"
    event.write_text(json.dumps(payload))

    done = trigger(repo, "workflow_dispatch", event)

    assert done.returncode == 2
    assert "param 'epochs' takes a whole number" in done.stderr
    assert done.stdout == ""
    assert not (repo / ".sluice" / "runs").exists()


@pytest.mark.docker
def test_a_schedule_event_is_handed_to_tick_or_explained(tmp_path: Path, repo: Path) -> None:
    done = trigger(repo, "schedule", EVENTS / "schedule.json", "--no-push")
    assert "Traceback" not in done.stderr
    tick = CHECKOUT / "engine" / "cli" / "tick.py"
    if not tick.exists():
        assert done.returncode == 2
        assert "the schedule event runs `sluice tick`" in done.stderr
    else:
        assert done.returncode == 0, done.stderr
        runs = json.loads(done.stdout)  # the slot of this minute, for the every-minute cron
        assert [(r["pipeline"], r["trigger"]["kind"]) for r in runs] == [("exits", "cron")]


# --- engine.adapters.github_env: the edges, without Docker ---------------------------------------------


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, list[str]]:
    """A plain git repository with three commits: add, modify + rename, delete."""
    work = tmp_path / "history"
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    shas: list[str] = []
    for files in (
        {"src/a.py": "a\n", "docs/old.md": "old text that is long enough to be a rename\n"},
        {"src/a.py": "b\n", "docs/new.md": "old text that is long enough to be a rename\n"},
    ):
        for name, text in files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(text)
        if len(shas) == 1:
            (work / "docs" / "old.md").unlink()
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", "change")
        shas.append(git(work, "rev-parse", "HEAD"))
    return work, shas


def test_changed_files_asks_git_and_lists_both_sides_of_a_rename(
    history: tuple[Path, list[str]],
) -> None:
    from engine.adapters.github_env import changed_files

    work, (first, second) = history
    assert changed_files(work, first, second) == ["docs/new.md", "docs/old.md", "src/a.py"]


@pytest.mark.parametrize(
    "before",
    [
        None,
        "0" * 40,  # a new branch
        "f" * 40,  # not in this clone (shallow)
        "--output=/tmp/sluice-pwned",  # never read as a git option
        "HEAD~1",  # only commit ids: the payload names commits, not revisions
        12345,
    ],
)
def test_changed_files_is_none_whenever_git_cannot_say(
    history: tuple[Path, list[str]], before: object
) -> None:
    from engine.adapters.github_env import changed_files

    work, (_, second) = history
    assert changed_files(work, before, second) is None
    assert not Path("/tmp/sluice-pwned").exists()


def test_changed_files_outside_a_git_repository_is_none(tmp_path: Path) -> None:
    from engine.adapters.github_env import changed_files

    assert changed_files(tmp_path, "1" * 40, "2" * 40) is None


def test_read_event_takes_overrides_then_the_runner_variables(tmp_path: Path) -> None:
    from engine.adapters.github_env import read_event
    from engine.errors import InvalidInput, NotFound, UsageError

    path = tmp_path / "event.json"
    path.write_text('{"action": "go"}')
    env = {"GITHUB_EVENT_NAME": "repository_dispatch", "GITHUB_EVENT_PATH": str(path)}
    assert read_event(env).name == "repository_dispatch"
    assert read_event(env, name="push").name == "push"
    assert read_event({}, name="push", path=str(path)).payload == {"action": "go"}
    with pytest.raises(UsageError, match="--event-path"):
        read_event({}, name="push")
    with pytest.raises(NotFound, match="no such file"):
        read_event({}, name="push", path=str(tmp_path / "missing.json"))
    path.write_text("{not json")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        read_event(env)
    path.write_text("[]")
    with pytest.raises(InvalidInput, match="must be a JSON object"):
        read_event(env)


def test_outputs_use_the_heredoc_form_for_several_lines(tmp_path: Path) -> None:
    from engine.adapters.github_env import output_text, write_outputs

    assert output_text({"status": "succeeded", "run-ids": "a b"}) == (
        "status=succeeded\nrun-ids=a b\n"
    )
    text = output_text({"notes": "one\ntwo"})
    delimiter = text.splitlines()[-1]
    assert delimiter.startswith("ghadelimiter_")
    assert text == f"notes<<{delimiter}\none\ntwo\n{delimiter}\n"
    out = tmp_path / "output"
    out.write_text("before=1\n")
    write_outputs(out, {"status": "failed"})
    assert out.read_text() == "before=1\nstatus=failed\n"


def test_annotations_escape_as_github_documents() -> None:
    import io

    from engine.adapters.github_env import annotate, annotation, group
    from engine.errors import Problem

    problem = Problem("pipelines/a,b:c.yaml", 0, "100% wrong\r\nsee: docs")
    line = annotation(problem)
    assert line == "::error file=pipelines/a%2Cb%3Ac.yaml,line=1::100%25 wrong%0D%0Asee: docs"
    stream = io.StringIO()
    annotate([problem], {}, stream)  # outside Actions: nothing
    with group("quiet", {}, stream):
        pass
    assert stream.getvalue() == ""
    annotate([problem], {"GITHUB_ACTIONS": "true"}, stream, level="warning")
    with group("run 50%", {"GITHUB_ACTIONS": "true"}, stream):
        stream.write("inside\n")
    assert stream.getvalue().splitlines() == [
        line.replace("::error", "::warning"),
        "::group::run 50%25",
        "inside",
        "::endgroup::",
    ]


def test_summary_escapes_untrusted_text_and_says_when_nothing_ran() -> None:
    from engine.adapters.github_env import summary
    from engine.core.manifest import RunManifest, RunStatus, StepRecord

    assert "nothing to run" in summary([], {}, {})
    manifest = RunManifest(
        run_id="20261124T100000Z-abcdef",
        pipeline="p",
        pipeline_file="pipelines/p.yaml",
        pipeline_sha256="0" * 64,
        started_at="2026-11-24T10:00:00.000Z",
        status=RunStatus.failed,
        steps={"s": StepRecord(status="failed", metrics={"a|<b>": 1})},
    )
    text = summary([manifest], {}, {})
    assert "| s | ❌ failed | 0 |  |  |" in text
    assert "`a\\|<b>`" in text  # a code span: shown as typed
    assert "```mermaid" not in text  # no DAG given


def test_summary_notes_say_where_a_step_came_from_or_why_it_did_not_run() -> None:
    from engine.adapters.github_env import summary
    from engine.core.manifest import RunManifest, StepRecord

    manifest = RunManifest(
        run_id="20261124T100000Z-abcdef",
        pipeline="p",
        pipeline_file="pipelines/p.yaml",
        pipeline_sha256="0" * 64,
        started_at="2026-11-24T10:00:00.000Z",
        steps={
            "fit": StepRecord(status="cached", cached_from="20261123T100000Z-000001"),
            "deploy": StepRecord(status="skipped", reason="when is false: a > b | c"),
            "notify": StepRecord(status="succeeded", reason="ran"),
        },
    )
    text = summary([manifest], {}, {})
    assert "| fit | 💾 cached | 0 |  | cached from `20261123T100000Z-000001` |" in text
    assert "| deploy | ⏭️ skipped | 0 |  | when is false: a \\> b \\| c |" in text
    assert "| notify | ✅ succeeded | 0 |  |  |" in text


def test_a_dispatched_run_carries_the_hop_count_on(tmp_path: Path) -> None:
    from engine.app.trigger import carry_hops as _carry_hops

    github_env = tmp_path / "github_env"
    env = {"GITHUB_ENV": str(github_env)}
    _carry_hops({"action": "retrain", "client_payload": {"sluice_hops": 2}}, env)
    assert env["SLUICE_DISPATCH_HOPS"] == "2"
    assert github_env.read_text() == "SLUICE_DISPATCH_HOPS=2\n"
    hostile = {"GITHUB_ENV": str(tmp_path / "other")}
    _carry_hops({"client_payload": {"sluice_hops": "1\nEVIL=1"}}, hostile)
    assert hostile["SLUICE_DISPATCH_HOPS"] == "0"  # only a whole number is carried
    assert (tmp_path / "other").read_text() == "SLUICE_DISPATCH_HOPS=0\n"
