"""Pull-request previews (issue 17): real `pull_request` payloads -> preview runs; the planner's
preview rules; the sticky comment's body; its REST calls against a loopback API (pagination,
create then edit, 403); and `sluice trigger` end to end with real git and real Docker."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import git, make_repo, sluice
from pr_api import (
    CommentsApi,
    as_deleted_head,
    as_fork,
    comment_html,
    pointing_at,
    pr_event,
)

from engine.adapters.github_comments import CommentFailed, Comments
from engine.app import preview as app_preview
from engine.app.production import check_promotable
from engine.core import charts, pr_comment
from engine.core.expressions import parse
from engine.core.manifest import RunManifest, RunStatus, StepRecord, StepStatus, Trigger
from engine.core.parse import LoadedPipeline, load_text
from engine.core.planner import Action, Planner
from engine.core.preview import held_because, verdict_of
from engine.core.triggers.github import plan
from engine.errors import InvalidInput, UsageError

DOCS_IMAGE = Path(__file__).resolve().parents[1] / "docs/img/pr-comment.png"
GATED = """
name: churn
triggers:
  - push: {paths: ["src/**"]}
baseline: {step: deploy}
defaults: {image: busybox}
steps:
  - {name: train, run: "true", secrets: [MLFLOW_TOKEN]}
  - {name: evaluate, needs: [train], run: "true"}
  - name: review
    needs: [evaluate]
    approval: true
    run: "true"
  - name: deploy
    type: deployment
    needs: [review]
    when: "not baseline or steps.evaluate.metrics.roc_auc >= baseline.steps.evaluate.metrics.roc_auc - 0.02"
    run: "true"
"""
OTHER = """
name: other
triggers:
  - push: {paths: ["docs/**"]}
steps:
  - {name: only, image: busybox, run: "true"}
"""
CRON_ONLY = """
name: nightly
triggers:
  - cron: "0 2 * * *"
steps:
  - {name: only, image: busybox, run: "true"}
"""


def _load(text: str, file: str) -> LoadedPipeline:
    return load_text(textwrap.dedent(text), file)


PIPELINES = [
    _load(GATED, "pipelines/churn.yaml"),
    _load(OTHER, "pipelines/other.yaml"),
    _load(CRON_ONLY, "pipelines/nightly.yaml"),
]


# --- the event -> preview runs ----------------------------------------------------------------


@pytest.mark.parametrize("action", ["opened", "synchronize", "reopened"])
def test_a_pull_request_that_changes_code_previews_the_pipelines_it_concerns(action: str) -> None:
    event = pr_event(action)
    runs = plan("pull_request", event, PIPELINES, changed_files=["src/train.py", "README.md"])
    assert isinstance(runs, list)
    assert [r.pipeline for r in runs] == ["churn"]
    trigger = runs[0].trigger
    assert trigger.kind == "pull_request" and trigger.event == "pull_request"
    pr = event["pull_request"]
    assert trigger.payload["number"] == event["number"] == 2
    assert trigger.payload["head_sha"] == pr["head"]["sha"]
    assert trigger.payload["base_ref"] == pr["base"]["ref"] == "master"
    assert trigger.payload["fork"] is False
    assert trigger.payload["files"] == ["src/train.py"]
    assert trigger.payload["head_repo"] == trigger.payload["base_repo"] == "Codertocat/Hello-World"


def test_a_changed_pipeline_file_is_previewed_even_without_a_push_trigger() -> None:
    runs = plan(
        "pull_request", pr_event("opened"), PIPELINES, changed_files=["pipelines/nightly.yaml"]
    )
    assert [r.pipeline for r in runs] == ["nightly"]  # type: ignore[union-attr]


@pytest.mark.parametrize("action", ["closed", "labeled", "assigned", "edited_missing"])
def test_other_actions_start_nothing(action: str) -> None:
    event = pr_event("opened")
    event["action"] = action
    assert plan("pull_request", event, PIPELINES, changed_files=["src/a.py"]) == []


def test_when_git_cannot_diff_every_pipeline_with_a_push_trigger_is_previewed() -> None:
    runs = plan("pull_request", pr_event("opened"), PIPELINES, changed_files=None)
    assert [r.pipeline for r in runs] == ["churn", "other"]  # type: ignore[union-attr]
    assert runs[0].trigger.payload["source"].startswith("unknown")  # type: ignore[index]


def test_a_fork_and_a_deleted_head_repository_are_forks() -> None:
    fork = plan("pull_request", as_fork(pr_event("opened")), PIPELINES, changed_files=["src/x"])
    assert fork[0].trigger.payload["fork"] is True  # type: ignore[index]
    assert fork[0].trigger.payload["head_repo"] == "Octocoders/Hello-World"  # type: ignore[index]
    gone = plan(
        "pull_request", as_deleted_head(pr_event("synchronize")), PIPELINES, changed_files=["src/x"]
    )
    assert gone[0].trigger.payload["fork"] is True  # type: ignore[index]
    assert gone[0].trigger.payload["head_repo"] is None  # type: ignore[index]


def test_a_malformed_payload_is_invalid_input_and_untrusted_text_stays_data() -> None:
    event = pr_event("opened")
    event["pull_request"]["head"]["sha"] = "--upload-pack=touch /tmp/x"
    with pytest.raises(InvalidInput, match=r"head\.sha is not a commit id"):
        plan("pull_request", event, PIPELINES, changed_files=[])
    event = pr_event("opened")
    event["pull_request"]["head"]["ref"] = "$(id)`rm -rf /`" + "x" * 1000
    runs = plan("pull_request", event, PIPELINES, changed_files=["src/a"])
    assert runs[0].trigger.payload["head_ref"].startswith("$(id)")  # type: ignore[index]
    assert len(runs[0].trigger.payload["head_ref"]) == 256  # type: ignore[index]


# --- the planner in a preview -------------------------------------------------------------------


def _context(
    kind: str, *, fork: bool = False, auc: float = 0.91, prod: float | None = 0.95
) -> dict[str, Any]:
    steps = {
        "train": {"status": "succeeded", "metrics": {}},
        "evaluate": {"status": "succeeded", "metrics": {"roc_auc": auc}},
        "review": {"status": "succeeded", "metrics": {}},
    }
    baseline = None
    if prod is not None:
        baseline = {"steps": {"evaluate": {"status": "succeeded", "metrics": {"roc_auc": prod}}}}
    payload = {"fork": fork, "number": 7}
    return {
        "params": {},
        "steps": steps,
        "baseline": baseline,
        "trigger": {"kind": kind, "event": kind, "scheduled_for": None, "payload": payload},
    }


def _decide(
    kind: str, statuses: dict[str, StepStatus], **ctx: Any
) -> dict[str, tuple[Action, str]]:
    loaded = PIPELINES[0]
    planner = Planner(loaded.dag, {s.name: s for s in loaded.steps})
    decisions = planner.next(statuses, _context(kind, **ctx))
    return {d.step: (d.action, d.reason) for d in decisions}


DONE = StepStatus.succeeded
PENDING = StepStatus.pending


def test_in_a_preview_a_deployment_is_skipped_with_the_verdict_its_when_gives() -> None:
    statuses = {"train": DONE, "evaluate": DONE, "review": DONE, "deploy": PENDING}
    held = _decide("pull_request", statuses, auc=0.91, prod=0.95)
    assert held["deploy"] == (
        Action.skip,
        "preview: would be held: roc_auc 0.91 < production 0.95 \u2212 0.02",
    )
    passes = _decide("pull_request", statuses, auc=0.96, prod=0.95)
    assert passes["deploy"] == (Action.skip, "preview: would deploy")
    first = _decide("pull_request", statuses, auc=0.5, prod=None)  # no production yet
    assert first["deploy"] == (Action.skip, "preview: would deploy")
    # the same gate outside a preview runs the step, or skips it without a verdict
    assert _decide("push", statuses, auc=0.96)["deploy"][0] is Action.run
    real = _decide("push", statuses, auc=0.91)["deploy"]
    assert real[0] is Action.skip and "preview" not in real[1]


def test_in_a_preview_an_approval_does_not_pause() -> None:
    statuses = {"train": DONE, "evaluate": DONE, "review": PENDING, "deploy": PENDING}
    assert _decide("pull_request", statuses)["review"][0] is Action.run
    assert _decide("push", statuses)["review"][0] is Action.wait_approval


def test_in_a_fork_preview_a_step_naming_a_secret_is_skipped_saying_why() -> None:
    statuses = {"train": PENDING, "evaluate": PENDING, "review": PENDING, "deploy": PENDING}
    action, reason = _decide("pull_request", statuses, fork=True)["train"]
    assert action is Action.skip
    assert "fork" in reason and "MLFLOW_TOKEN" in reason
    assert _decide("pull_request", statuses, fork=False)["train"][0] is Action.run
    assert _decide("push", statuses, fork=True)["train"][0] is Action.run  # a push has no fork


def test_the_held_verdict_names_params_and_plain_values() -> None:
    expr = parse(
        "steps.evaluate.metrics.accuracy >= params.min_accuracy and steps.train.status == 'succeeded'"
    )
    context = {
        "params": {"min_accuracy": 0.9},
        "steps": {"evaluate": {"metrics": {"accuracy": 0.8}}, "train": {"status": "succeeded"}},
    }
    assert held_because(expr, context) == "accuracy 0.8 < min_accuracy 0.9"


# --- promote ----------------------------------------------------------------------------------


def _manifest(run_id: str, kind: str = "push", **metrics: float) -> RunManifest:
    trigger = Trigger(
        kind=kind,
        event=kind,
        payload={"number": 7, "base_ref": "main"} if kind == "pull_request" else {},
    )
    return RunManifest(
        run_id=run_id,
        pipeline="churn",
        pipeline_file="pipelines/churn.yaml",
        pipeline_sha256="0" * 64,
        trigger=trigger,
        status=RunStatus.succeeded,
        started_at="2026-12-01T10:00:00Z",
        steps={
            "train": StepRecord(status=StepStatus.succeeded, type="training"),
            "evaluate": StepRecord(
                status=StepStatus.succeeded, type="evaluation", metrics=dict(metrics)
            ),
            "deploy": StepRecord(status=StepStatus.succeeded, type="deployment"),
        },
    )


def test_promote_refuses_a_preview_run() -> None:
    preview = _manifest("20261201T100000Z-aaaaaa", "pull_request", roc_auc=0.9)
    with pytest.raises(UsageError, match="preview of pull request #7"):
        check_promotable(preview, "deploy")
    check_promotable(
        _manifest("20261201T100000Z-bbbbbb", roc_auc=0.9), "deploy"
    )  # a push run is fine


# --- the comment's body -------------------------------------------------------------------------


def _preview_run(**overrides: Any) -> RunManifest:
    run = _manifest("20261203T120000Z-cccccc", "pull_request", roc_auc=0.91)
    run.steps["train"].status = StepStatus.cached
    run.steps["train"].cached_from = "20261202T100000Z-dddddd"
    run.steps["deploy"].status = StepStatus.skipped
    run.steps[
        "deploy"
    ].reason = "preview: would be held: roc_auc 0.91 < production 0.95 \u2212 0.02"
    run.params = {"lr": 0.2, "depth": 4}
    for key, value in overrides.items():
        setattr(run, key, value)
    return run


def _history(count: int) -> list[RunManifest]:
    runs = []
    for index in range(count):
        run = _manifest(
            f"202612{index % 28 + 1:02d}T10{index % 60:02d}00Z-{index:06x}",
            roc_auc=0.94 + index / 1000,
        )
        run.params = {"lr": 0.1, "depth": 4}
        runs.append(run)
    return runs


def _comment(run: RunManifest, history: list[RunManifest]) -> pr_comment.Preview:
    loaded = PIPELINES[0]
    return pr_comment.Preview(
        run=run,
        dag=loaded.dag,
        directions={"evaluate.roc_auc": "higher"},
        production=_manifest("20261130T090000Z-abcdef", roc_auc=0.95) if history else None,
        base_latest=history[-1] if history else None,
        history=history,
        base_ref="main",
        run_url="https://github.com/o/r/actions/runs/1/attempts/1",
        manifest_url="https://github.com/o/r/blob/sluice-results/runs/churn/x/manifest.json",
    )


def test_the_comment_shows_verdict_metrics_params_steps_dag_chart_and_links() -> None:
    history = _history(5)
    text = pr_comment.body(_comment(_preview_run(), history))
    assert text.startswith(pr_comment.marker("churn") + "\n")
    assert "**would be held**: roc_auc 0.91 &lt; production 0.95 \u2212 0.02" in text
    assert "| metric | this PR | production | main (latest) |" in text
    assert "| `evaluate.roc_auc` | 0.91 | 0.95 (-0.04 🔴▼) | 0.944 (-0.034 🔴▼) |" in text
    assert "| `lr` | 0.1 | 0.2 |" in text and "`depth`" not in text
    assert "cached from 20261202T100000Z-dddddd" in text
    assert text.count("```mermaid") == 2
    assert "flowchart LR" in text and "xychart-beta" in text and '"PR #7"' in text
    assert "[CI run](<https://github.com/o/r/actions/runs/1/attempts/1>)" in text
    assert "[manifest](<https://github.com/o/r/blob/sluice-results/" in text


def test_a_fork_comment_says_its_record_stayed_on_the_runner() -> None:
    found = _comment(_preview_run(), _history(2))
    fork = pr_comment.Preview(**{**found.__dict__, "pushed": False})
    text = pr_comment.body(fork)
    assert "From a fork" in text and "[manifest]" not in text


def test_a_huge_comment_is_cut_under_githubs_limit_with_a_note_and_no_half_diagram() -> None:
    run = _preview_run()
    for index in range(3000):
        run.steps[f"step-{index:04d}"] = StepRecord(status=StepStatus.skipped, reason="x" * 40)
    text = pr_comment.body(_comment(run, _history(3)))
    assert len(text) <= pr_comment.MAX_BODY
    assert text.rstrip().endswith(pr_comment.CUT_NOTE)
    assert text.count("```") % 2 == 0
    assert text.startswith(pr_comment.marker("churn"))
    whole = pr_comment.body(_comment(run, _history(3)), limit=None)
    assert len(whole) > pr_comment.MAX_BODY and pr_comment.CUT_NOTE not in whole


def test_verdict_of_reads_only_a_previews_reason() -> None:
    assert (
        verdict_of(StepRecord(status=StepStatus.skipped, reason="preview: would deploy"))
        == "would deploy"
    )
    assert verdict_of(StepRecord(status=StepStatus.skipped, reason="when is false: x")) is None


def test_the_comment_renders_its_mermaid_with_mermaids_own_renderer_and_in_chromium(
    tmp_path: Path,
) -> None:
    """Both diagrams drawn by mermaid itself, then the whole comment as a page in headless
    Chromium: the chart's highlighted point (this PR) and the table are there.
    SLUICE_DOCS_IMAGES=1 also writes the screenshot to docs/img/pr-comment.png."""
    mermaid_render = pytest.importorskip("mermaid_render")
    text = pr_comment.body(_comment(_preview_run(), _history(8)))
    svgs = mermaid_render.render_markdown(text, tmp_path / "render")
    assert len(svgs) == 2
    assert "s_deploy" in svgs[0] or "deploy" in svgs[0]
    highlight = charts.HIGHLIGHT_COLOUR.lower()
    assert highlight in svgs[1].lower()  # this PR's bar
    page = tmp_path / "comment.html"
    page.write_text(comment_html(text, svgs))
    dom = mermaid_render.dump_dom(page)
    assert "would be held" in dom and "evaluate.roc_auc" in dom and "<svg" in dom
    png = mermaid_render.screenshot(page, tmp_path / "comment.png", width=960, height=1100)
    pixels = mermaid_render.png_pixels(png)
    assert len(pixels) > 50, "the screenshot is blank"
    assert pixels[mermaid_render.hex_colour(charts.HIGHLIGHT_COLOUR)] > 20
    if os.environ.get("SLUICE_DOCS_IMAGES") == "1":
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, DOCS_IMAGE)


# --- the REST calls -------------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[CommentsApi]:
    server = CommentsApi().start()
    yield server
    server.stop()


def test_the_first_push_creates_the_comment_and_the_second_edits_it(api: CommentsApi) -> None:
    comments = Comments("o/r", 7, token="t0ken", api_url=api.url)
    marker = pr_comment.marker("churn")
    first = comments.upsert(marker, marker + "\nfirst")
    second = Comments("o/r", 7, token="t0ken", api_url=api.url).upsert(marker, marker + "\nsecond")
    again = Comments("o/r", 7, token="t0ken", api_url=api.url).upsert(marker, marker + "\nsecond")
    assert (first.action, second.action, again.action) == ("created", "updated", "unchanged")
    assert first.comment_id == second.comment_id
    writes = [(r.method, r.path) for r in api.writes()]
    assert writes == [
        ("POST", "/repos/o/r/issues/7/comments"),
        ("PATCH", f"/repos/o/r/issues/comments/{first.comment_id}"),
    ]
    assert [c["body"] for c in api.comments[7]] == [marker + "\nsecond"]
    assert all(r.authorization == "Bearer t0ken" for r in api.requests)
    other = Comments("o/r", 7, token="t", api_url=api.url).upsert(
        pr_comment.marker("other"), pr_comment.marker("other") + "\nx"
    )
    assert other.action == "created" and len(api.comments[7]) == 2  # one per pipeline


def test_the_marker_is_found_on_page_3_following_the_link_header(api: CommentsApi) -> None:
    marker = pr_comment.marker("churn")
    api.seed(7, 250, at=230, marked=marker + "\nold report")
    # someone quoting the marker mid-comment is not the sticky comment
    api.comments[7][10]["body"] = "see " + marker
    comments = Comments("o/r", 7, token="t", api_url=api.url)
    posted = comments.upsert(marker, marker + "\nnew report")
    assert posted.action == "updated" and posted.comment_id == api.comments[7][230]["id"]
    gets = [r.path for r in api.requests if r.method == "GET"]
    assert gets == [
        "/repos/o/r/issues/7/comments?per_page=100",
        "/repos/o/r/issues/7/comments?per_page=100&page=2",
        "/repos/o/r/issues/7/comments?per_page=100&page=3",
    ]
    assert api.comments[7][230]["body"] == marker + "\nnew report"
    assert api.comments[7][10]["body"] == "see " + marker


def test_a_bots_marked_comment_wins_over_a_users_copy(api: CommentsApi) -> None:
    marker = pr_comment.marker("churn")
    api.seed(7, 150, at=120, marked=marker + "\nthe bot's report")
    api.comments[7][5]["body"] = marker + "\na user pasted the marker first"  # a User's
    posted = Comments("o/r", 7, token="t", api_url=api.url).upsert(marker, marker + "\nnew")
    assert posted.comment_id == api.comments[7][120]["id"]
    assert api.comments[7][5]["body"].endswith("pasted the marker first")
    # with a personal token the report is a user's own comment: still found and edited
    api.comments[7][120]["body"] = "gone"
    posted = Comments("o/r", 7, token="t", api_url=api.url).upsert(marker, marker + "\nnewer")
    assert posted.action == "updated" and posted.comment_id == api.comments[7][5]["id"]


def test_a_next_page_on_another_host_is_not_followed() -> None:
    comments = Comments("o/r", 7, token="secret", api_url="https://api.github.com")
    with pytest.raises(CommentFailed, match="another host"):
        comments._next('<https://evil.example/steal?page=2>; rel="next"')
    assert (
        comments._next('<https://api.github.com/x?page=2>; rel="next"')
        == "https://api.github.com/x?page=2"
    )


def test_a_403_is_one_clear_warning_and_no_failure(api: CommentsApi) -> None:
    api.forbid = True
    with pytest.raises(CommentFailed) as caught:
        Comments("o/r", 7, token="t", api_url=api.url).upsert("<!-- m -->", "<!-- m -->x")
    assert caught.value.forbidden and "pull-requests: write" in str(caught.value.hint)
    found = [_comment(_preview_run(), _history(2)), _comment(_preview_run(), _history(2))]
    api.requests.clear()
    logs: list[str] = []
    warnings: list[str] = []
    env = {"GITHUB_TOKEN": "t", "GITHUB_API_URL": api.url, "GITHUB_REPOSITORY": "o/r"}
    app_preview.post_comments(found, env, logs.append, warnings.append)
    assert len(warnings) == 1  # the second pipeline is not tried again
    assert "403" in warnings[0] and "Resource not accessible by integration" in warnings[0]
    assert "pull-requests: write" in warnings[0]
    assert len([r for r in api.requests if r.method == "POST"]) == 1


# --- end to end: sluice trigger with real git and Docker ----------------------------------------------

E2E = """
name: churn
triggers:
  - push: {{paths: ["src/**"]}}
baseline: {{step: deploy}}
metrics: {{evaluate.roc_auc: higher}}
defaults: {{image: {image}}}
steps:
  - name: train
    type: training
    workspace: [src/train.sh]
    run: sh src/train.sh
  - name: evaluate
    type: evaluation
    needs: [train]
    workspace: [src/evaluate.sh]
    run: sh src/evaluate.sh
  - name: deploy
    type: deployment
    needs: [evaluate]
    approval: true
    when: "not baseline or steps.evaluate.metrics.roc_auc >= baseline.steps.evaluate.metrics.roc_auc - 0.02"
    run: echo deployed
"""
E2E_NO_METRICS_FIELD = E2E.replace("metrics: {{evaluate.roc_auc: higher}}\n", "")
EVALUATE = "echo '{{\"roc_auc\": {auc}}}' > /sluice/outputs/metrics.json\n"


def _results(repo: Path, where: str = "sluice-results") -> list[str]:
    listed = git(repo, "ls-tree", "-r", "--name-only", where)
    return sorted({p.split("/")[2] for p in listed.splitlines() if p.startswith("runs/churn/")})


def _trigger(repo: Path, tmp: Path, event: dict[str, Any], api: CommentsApi, name: str) -> Any:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(event))
    summary = tmp / f"{name}.summary.md"
    env = {
        "GITHUB_TOKEN": "t0ken",
        "GITHUB_API_URL": api.url,
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(tmp / f"{name}.out"),
    }
    done = sluice(
        "trigger",
        "--event-name",
        "pull_request",
        "--event-path",
        str(path),
        "--json",
        repo=repo,
        env=env,
        process=True,
    )
    return done, summary


@pytest.mark.docker
def test_a_pull_request_preview_end_to_end(
    tmp_path: Path, busybox_image: str, api: CommentsApi
) -> None:
    try:
        text = E2E.format(image=busybox_image)
        _load(text, "pipelines/churn.yaml")
    except Exception:  # the `metrics:` field is H5's; without it directions come from the gate
        text = E2E_NO_METRICS_FIELD.format(image=busybox_image)
    repo = make_repo(
        tmp_path,
        files={
            "pipelines/churn.yaml": text,
            "src/train.sh": "echo training > /sluice/outputs/model.txt\n",
            "src/evaluate.sh": EVALUATE.format(auc=0.95),
        },
        origin=True,
    )
    # main: a push run makes production (its deploy succeeds: approved by hand)
    done = sluice("run", "churn", "--json", repo=repo, process=True)
    main_run = json.loads(done.stdout)
    assert main_run["status"] == "waiting_approval", done.stderr
    done = sluice("approve", main_run["run_id"], repo=repo, process=True)
    assert done.returncode == 0, done.stderr
    base = git(repo, "rev-parse", "HEAD")
    production_before = git(repo, "show", "sluice-results:production/churn.json")

    # the pull request makes the model worse by changing only evaluate
    git(repo, "checkout", "-q", "-b", "worse")
    (repo / "src/evaluate.sh").write_text(EVALUATE.format(auc=0.90))
    git(repo, "commit", "-qam", "evaluate differently")
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "push", "-q", "origin", "worse")
    event = pointing_at(pr_event("opened"), head=head, base=base)
    done, summary = _trigger(repo, tmp_path, event, api, "opened")
    assert done.returncode == 0, done.stderr
    [run] = json.loads(done.stdout)
    assert run["trigger"]["kind"] == "pull_request"
    assert run["trigger"]["payload"]["number"] == 2
    assert run["trigger"]["payload"]["head_sha"] == head
    assert run["trigger"]["payload"]["base_ref"] == "main"
    steps = run["steps"]
    assert steps["train"]["status"] == "cached"  # shared with main's run
    assert steps["train"]["cached_from"] == main_run["run_id"]
    assert steps["evaluate"]["status"] == "succeeded"
    assert steps["deploy"]["status"] == "skipped"
    assert steps["deploy"]["reason"] == (
        "preview: would be held: roc_auc 0.9 < production 0.95 \u2212 0.02"
    )
    assert git(repo, "show", "sluice-results:production/churn.json") == production_before
    # same repository: the record is pushed
    assert run["run_id"] in _results(repo, "origin/sluice-results") or run["run_id"] in _results(
        tmp_path / "origin.git"
    )
    [created] = api.writes()
    assert created.method == "POST" and created.path == "/repos/o/r/issues/2/comments"
    body = created.body["body"]
    assert body.startswith(pr_comment.marker("churn"))
    assert "**would be held**" in body and "production" in body and "xychart-beta" in body
    assert "cached from " + main_run["run_id"] in body
    assert "would be held" in summary.read_text()
    done = sluice("promote", run["run_id"], repo=repo, process=True)
    assert done.returncode == 2 and "preview" in done.stderr

    # a second push to the pull request edits the same comment
    (repo / "src/evaluate.sh").write_text(EVALUATE.format(auc=0.96))
    git(repo, "commit", "-qam", "evaluate better")
    head = git(repo, "rev-parse", "HEAD")
    event = pointing_at(pr_event("synchronize"), head=head, base=base)
    done, _ = _trigger(repo, tmp_path, event, api, "synchronize")
    assert done.returncode == 0, done.stderr
    [run2] = json.loads(done.stdout)
    assert run2["steps"]["deploy"]["reason"] == "preview: would deploy"
    writes = api.writes()
    assert [w.method for w in writes] == ["POST", "PATCH"]
    assert len(api.comments[2]) == 1 and "**would deploy**" in api.comments[2][0]["body"]
    assert git(repo, "show", "sluice-results:production/churn.json") == production_before


@pytest.mark.docker
def test_a_fork_preview_pushes_nothing_and_a_403_is_a_warning(
    tmp_path: Path, busybox_image: str, api: CommentsApi
) -> None:
    text = E2E_NO_METRICS_FIELD.format(image=busybox_image).replace(
        "    run: sh src/train.sh", "    run: sh src/train.sh\n    secrets: [MLFLOW_TOKEN]"
    )
    repo = make_repo(
        tmp_path,
        files={
            "pipelines/churn.yaml": text,
            "src/train.sh": "echo training > /sluice/outputs/model.txt\n",
            "src/evaluate.sh": EVALUATE.format(auc=0.95),
        },
        origin=True,
    )
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "from-fork")
    (repo / "src/evaluate.sh").write_text(EVALUATE.format(auc=0.90))
    git(repo, "commit", "-qam", "a fork's change")
    head = git(repo, "rev-parse", "HEAD")
    api.forbid = True  # a fork's token is read-only
    event = as_fork(pointing_at(pr_event("opened"), head=head, base=base))
    done, summary = _trigger(repo, tmp_path, event, api, "fork")
    assert done.returncode == 0, done.stderr
    [run] = json.loads(done.stdout)
    assert run["trigger"]["payload"]["fork"] is True
    assert run["steps"]["train"]["status"] == "skipped"
    assert "MLFLOW_TOKEN" in run["steps"]["train"]["reason"]
    assert done.stderr.count("warning") == 1 and "pull-requests: write" in done.stderr
    remote = git(tmp_path / "origin.git", "branch", "--list", "sluice-results")
    assert remote == ""  # nothing pushed
    report = summary.read_text()
    assert report.startswith("## ") or pr_comment.marker("churn") in report
    assert "From a fork" in report and "MLFLOW_TOKEN" in report


def test_a_preview_never_becomes_production_even_when_its_baseline_step_succeeds() -> None:
    from engine.adapters.memory_results import MemoryResultsBranch
    from engine.run.records import History

    history = History(MemoryResultsBranch())
    run = _manifest("20261203T120000Z-eeeeee", "pull_request", roc_auc=0.99)
    history.record(run, logs={}, components={}, baseline_step="evaluate", newly_done={"evaluate"})
    assert history.pointer("churn") is None
    assert history.production("churn", "evaluate") is None
    push_run = _manifest("20261203T130000Z-ffffff", roc_auc=0.9)
    history.record(
        push_run, logs={}, components={}, baseline_step="evaluate", newly_done={"evaluate"}
    )
    found = history.production("churn", "evaluate")
    assert found is not None and found.run_id == push_run.run_id  # the test can fail


# --- the files a pull request changes, from git ------------------------------------------------


def _place(repo: Path, logs: list[str]) -> Any:
    from engine.app.runs import Place
    from engine.core.config import RepoConfig

    return Place(repo, RepoConfig(), None, logs.append)


def test_the_changed_files_are_the_pull_requests_own_not_what_the_base_did_since(
    tmp_path: Path,
) -> None:
    from engine.app.trigger import pull_request_files

    repo = make_repo(tmp_path, files={"src/a.py": "a\n", "docs/x.md": "x\n"}, commit="start")
    fork_point = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "src/a.py").write_text("changed\n")
    git(repo, "commit", "-qam", "feature")
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    (repo / "docs/x.md").write_text("base moved on\n")
    git(repo, "commit", "-qam", "base")
    base = git(repo, "rev-parse", "HEAD")
    assert base != fork_point
    logs: list[str] = []
    event = pointing_at(pr_event("synchronize"), head=head, base=base)
    assert pull_request_files(_place(repo, logs), event) == ["src/a.py"]
    assert logs == []


def test_a_shallow_clone_compares_base_and_head_fetched_from_origin(tmp_path: Path) -> None:
    from engine.app.trigger import pull_request_files

    origin = make_repo(tmp_path, files={"src/a.py": "a\n", "docs/x.md": "x\n"}, commit="start")
    git(origin, "checkout", "-q", "-b", "feature")
    (origin / "src/a.py").write_text("changed\n")
    git(origin, "commit", "-qam", "feature")
    head = git(origin, "rev-parse", "HEAD")
    git(origin, "checkout", "-q", "main")
    (origin / "docs/x.md").write_text("base moved on\n")
    git(origin, "commit", "-qam", "base")
    base = git(origin, "rev-parse", "HEAD")
    git(origin, "config", "uploadpack.allowReachableSHA1InWant", "true")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--depth=1", "--no-local", f"file://{origin}", str(clone))
    logs: list[str] = []
    event = pointing_at(pr_event("opened"), head=head, base=base)
    # no history to find the fork point in: the base's own change is listed too (a pipeline
    # may be previewed needlessly, never left out)
    assert pull_request_files(_place(clone, logs), event) == ["docs/x.md", "src/a.py"]
    event["pull_request"]["head"]["sha"] = "f" * 40  # a commit nobody has
    assert pull_request_files(_place(clone, logs), event) is None
    assert "previewing every pipeline with a push trigger" in logs[-1]


def test_a_shallow_checkout_of_githubs_merge_commit_lists_exactly_the_prs_files(
    tmp_path: Path,
) -> None:
    from engine.app.trigger import pull_request_files

    origin = make_repo(tmp_path, files={"src/a.py": "a\n", "docs/x.md": "x\n"}, commit="start")
    git(origin, "checkout", "-q", "-b", "feature")
    (origin / "src/a.py").write_text("changed\n")
    git(origin, "commit", "-qam", "feature")
    head = git(origin, "rev-parse", "HEAD")
    git(origin, "checkout", "-q", "main")
    (origin / "docs/x.md").write_text("base moved on\n")
    git(origin, "commit", "-qam", "base")
    base = git(origin, "rev-parse", "HEAD")
    # what GitHub makes as refs/pull/N/merge: the base tip merged with the head
    git(origin, "checkout", "-q", "-b", "pull-2-merge")
    git(origin, "merge", "-q", "--no-ff", "-m", "Merge feature into main", "feature")
    git(origin, "checkout", "-q", "main")
    git(origin, "config", "uploadpack.allowReachableSHA1InWant", "true")
    clone = tmp_path / "clone"
    git(
        tmp_path, "clone", "-q", "--depth=1", "--no-local", "--branch", "pull-2-merge",
        f"file://{origin}", str(clone),
    )  # fmt: skip
    logs: list[str] = []
    event = pointing_at(pr_event("opened"), head=head, base=base)
    assert pull_request_files(_place(clone, logs), event) == ["src/a.py"]
    assert logs == []


MONITOR = """
name: watch
triggers:
  - push: {{paths: ["src/**"]}}
steps:
  - name: drift
    image: {image}
    run: |
      echo '{{"drift_detected": true}}' > /sluice/outputs/metrics.json
"""
BOUND = """
name: retrain
triggers:
  - drift: {{monitor: watch}}
steps:
  - {{name: train, image: {image}, run: "true"}}
"""


@pytest.mark.docker
def test_a_previewed_monitor_starts_no_drift_run(
    tmp_path: Path, busybox_image: str, api: CommentsApi
) -> None:
    repo = make_repo(
        tmp_path,
        files={
            "pipelines/watch.yaml": MONITOR.format(image=busybox_image),
            "pipelines/retrain.yaml": BOUND.format(image=busybox_image),
            "src/data.csv": "a\n",
        },
        commit="start",
    )
    base = git(repo, "rev-parse", "HEAD")
    (repo / "src/data.csv").write_text("b\n")
    git(repo, "commit", "-qam", "new data")
    event = pointing_at(pr_event("opened"), head=git(repo, "rev-parse", "HEAD"), base=base)
    done, _ = _trigger(repo, tmp_path, event, api, "monitor")
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)
    assert [(r["pipeline"], r["trigger"]["kind"]) for r in runs] == [("watch", "pull_request")]
    assert runs[0]["steps"]["drift"]["metrics"] == {"drift_detected": True}
    assert "runs/retrain/" not in git(repo, "ls-tree", "-r", "--name-only", "sluice-results")
    # the same run by hand does start the bound pipeline: the binding holds
    done = sluice("run", "watch", "--json", repo=repo, process=True)
    assert done.returncode == 0, done.stderr
    listed = git(repo, "ls-tree", "-r", "--name-only", "sluice-results")
    assert "runs/retrain/" in listed, done.stderr


def test_a_fork_preview_keeps_its_outputs_on_the_runner(tmp_path: Path) -> None:
    from engine.core.config import RepoConfig
    from engine.run.options import RunOptions

    repo = make_repo(tmp_path, files={"a.txt": "a\n"}, commit="start")
    remote = RepoConfig(artifacts="s3://team-bucket/sluice")
    options = RunOptions(params={})
    logs: list[str] = []
    app_preview.fork_options(options, remote, repo, logs.append)
    assert options.artifacts is not None
    assert options.artifacts.url.startswith("file://")
    assert options.artifacts.url.endswith(".sluice/artifacts")
    assert "s3://team-bucket/sluice" in logs[0]
    same = RunOptions(params={})
    app_preview.fork_options(same, RepoConfig(), repo, logs.append)
    assert same.artifacts is None and len(logs) == 1  # a local store is kept as it is


# --- the generated workflow ---------------------------------------------------------------------


def _generated(tmp_path: Path) -> dict[str, Any]:
    import yaml

    repo = make_repo(
        tmp_path,
        files={"pipelines/churn.yaml": textwrap.dedent(GATED), "sluice.yaml": "{}\n"},
        commit="start",
    )
    done = sluice("workflow", "generate", repo=repo)
    assert done.returncode == 0, done.stderr
    path = repo / ".github/workflows/sluice.yml"
    from workflow_validators import validate_workflow

    assert validate_workflow(path) == []  # check-jsonschema, zizmor, GitHub's own parser
    text = path.read_text()
    assert "pull_request_target" not in text
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def test_the_workflow_previews_pull_requests_with_only_the_permissions_they_need(
    tmp_path: Path,
) -> None:
    workflow = _generated(tmp_path)
    on = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as true
    assert on["pull_request"] == {
        "types": ["opened", "synchronize", "reopened"],
        "paths": on["push"]["paths"],
    }
    jobs = workflow["jobs"]
    assert jobs["sluice"]["if"] == "github.event_name != 'pull_request'"
    assert jobs["preview"]["if"] == "github.event_name == 'pull_request'"
    assert jobs["preview"]["permissions"] == {"contents": "write", "pull-requests": "write"}
    assert jobs["sluice"]["permissions"] == {"contents": "write"}
    assert jobs["preview"]["steps"] == jobs["sluice"]["steps"]
    assert workflow["permissions"] == {}


# --- the Action, as the runner runs it on a pull_request event --------------------------------------


@pytest.mark.docker
def test_the_action_previews_a_pull_request_and_comments(
    engine_image: str, tmp_path: Path, busybox_image: str, api: CommentsApi
) -> None:
    from test_action import Workspace, _runner_folders, run_action

    ws = Workspace(tmp_path, f"pr-{os.urandom(3).hex()}")
    ws.repo.mkdir()
    (ws.repo / "pipelines").mkdir()
    pipeline = E2E_NO_METRICS_FIELD.format(image=busybox_image).replace(
        "name: churn", f"name: {ws.name}"
    )
    (ws.repo / "pipelines/churn.yaml").write_text(pipeline)
    (ws.repo / "src").mkdir()
    (ws.repo / "src/train.sh").write_text("echo training > /sluice/outputs/model.txt\n")
    (ws.repo / "src/evaluate.sh").write_text(EVALUATE.format(auc=0.95))
    git(ws.repo, "init", "-q", "-b", "main")
    git(ws.repo, "add", "-A")
    git(ws.repo, "commit", "-qm", "start")
    git(tmp_path, "init", "-q", "--bare", str(ws.origin))
    git(ws.repo, "remote", "add", "origin", str(ws.origin))
    git(ws.repo, "push", "-q", "origin", "main")
    base = git(ws.repo, "rev-parse", "HEAD")
    git(ws.repo, "checkout", "-q", "-b", "tune")
    (ws.repo / "src/evaluate.sh").write_text(EVALUATE.format(auc=0.97))
    git(ws.repo, "commit", "-qam", "tune")
    git(ws.repo, "push", "-q", "origin", "tune")
    head = git(ws.repo, "rev-parse", "HEAD")
    _runner_folders(ws)  # the checkout is the runner user's from here on
    payload = pointing_at(pr_event("opened"), head=head, base=base)
    # the API stand-in listens on the host's loopback: the Action joins the host's network
    env = {"GITHUB_API_URL": api.url, "GITHUB_TOKEN": "t0ken"}
    done = run_action(engine_image, ws, "pull_request", payload, s3_env=env)
    assert done.returncode == 0, done.stderr
    [run_id] = ws.outputs()["run-ids"][0].split()
    manifest = ws.manifest(run_id)  # a same-repository preview pushes its record
    assert manifest["trigger"]["kind"] == "pull_request"
    assert manifest["trigger"]["payload"]["head_sha"] == head
    assert manifest["steps"]["deploy"]["reason"] == "preview: would deploy"
    [created] = api.writes()
    assert created.path == "/repos/o/r/issues/2/comments"
    assert created.authorization == "Bearer t0ken"
    assert created.body["body"].startswith(pr_comment.marker(ws.name))
    assert "**would deploy**" in created.body["body"]
    assert pr_comment.marker(ws.name) in ws.summary()
