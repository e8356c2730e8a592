"""`sluice report`: a pipeline's metrics history from a real results branch, as markdown whose
mermaid blocks mermaid's own renderer draws, and as one HTML page that headless Chromium
opens, with its chart points counted in the DOM and a screenshot that is not blank.

SLUICE_DOCS_IMAGES=1 also writes the screenshot to docs/img/report.png (docs/reports.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from engine.adapters.fake_runtime import FakeOutcome
from engine.adapters.github_env import run_summary
from engine.adapters.pipeline_files import load_file
from engine.core.charts import HIGHLIGHT_COLOUR, LINE_COLOUR, Point, fenced, mermaid_xychart
from engine.core.manifest import RunManifest
from engine.ports import ContainerSpec
from tests.conftest import git, make_repo, sluice
from tests.mermaid_render import (
    dump_dom,
    hex_colour,
    mermaid_blocks,
    png_pixels,
    render_markdown,
    screenshot,
)
from tests.run_history import Recorded

DOCS_IMAGE = Path(__file__).parent.parent / "docs" / "img" / "report.png"
# n per run: auc 0.9 + n/100 (higher is better), rmse 1/n (lower is better)
SERIES = (1, 3, 2, 5, 4, 6, 5, 7)


@pytest.fixture
def history(tmp_path: Path) -> tuple[Recorded, list[RunManifest]]:
    recorded = Recorded(tmp_path)
    return recorded, [recorded.run(n=n, note=f"run {i}") for i, n in enumerate(SERIES)]


def report(repo: Path, *args: str) -> str:
    done = sluice("report", *args, repo=repo)
    assert done.returncode == 0, done.stderr
    return done.stdout


def table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("| `2")]


def test_markdown_has_the_history_table_and_a_chart_of_the_gate_metric(
    history: tuple[Recorded, list[RunManifest]],
) -> None:
    recorded, runs = history
    text = report(recorded.repo, "model")
    assert text.startswith(f"## Metrics history: `model` ({len(runs)} runs)\n")
    rows = table_rows(text)
    assert [row.split("`")[1] for row in rows] == [m.run_id for m in runs]  # oldest first
    header = next(line for line in text.splitlines() if line.startswith("| run |"))
    assert header.split(" | ")[4:] == ["`evaluate.auc`", "`evaluate.rmse`", "`evaluate.passed` |"]
    # the second run (n=3) beat the first (n=1): auc up is better, rmse down is better
    assert "| 0.93 (+0.02 🟢▲) | 0.3333 (-0.6667 🟢▼) | true |" in rows[1]
    assert "| 0.92 (-0.01 🔴▼) | 0.5 (+0.1667 🔴▲) |" in rows[2]
    # deploy's gate lets a model within 0.02 of production through: the last run is production
    assert f"Production: `{runs[-1].run_id}`" in text
    assert rows[-1].startswith(f"| `{runs[-1].run_id}` ★ |")
    (chart,) = mermaid_blocks(text)
    assert 'title "evaluate.auc (higher is better)"' in chart
    values = [f"{0.9 + n / 100:.2f}".rstrip("0") for n in SERIES]
    assert f"  line [{', '.join(values)}]" in chart


HOSTILE = [
    Point('quote " and [brackets]; semi', 0.5),
    Point("newline\nand %% comment", -0.25),
    Point("entity #quot; and #35;", 0.5),
    Point("", 1e-7),
    Point("big", 123456789.5),
]
# (points, the highlighted extra point): edge cases of values and labels
CHARTS: list[tuple[list[Point], Point | None]] = [
    ([Point("11-24 10:00", 0.95), Point("11-25 10:00", 0.96)], Point("PR #12", 0.94)),
    ([Point("only", 0.9)], None),
    ([], Point("PR #1", 0.9)),
    ([Point("a", 5), Point("b", 5), Point("c", 5)], Point("PR", 5)),
    (HOSTILE, Point('PR "#7"; <b>x</b>', -3)),
]


def test_every_mermaid_block_renders_with_mermaids_renderer(
    history: tuple[Recorded, list[RunManifest]], tmp_path: Path
) -> None:
    recorded, runs = history
    blocks = mermaid_blocks(report(recorded.repo, "model"))
    blocks += mermaid_blocks(report(recorded.repo, "model", "--metric", "evaluate.rmse"))
    loaded = load_file(recorded.repo / "pipelines" / "model.yaml", recorded.repo)
    blocks += mermaid_blocks(run_summary(runs[-1], loaded.dag, runs[-2]))  # the job summary's DAG
    assert len(blocks) == 3
    title = 'roc_auc "over" main; #quot; and\nthis PR'
    blocks += [mermaid_xychart(title, "roc_auc", points, extra) for points, extra in CHARTS]

    svgs = render_markdown("\n\n".join(fenced(block) for block in blocks), tmp_path / "render")

    assert "evaluate.auc (higher is better)" in svgs[0]
    assert "evaluate.rmse (lower is better)" in svgs[1]
    assert all(f">{name}<" in svgs[2] for name in runs[-1].steps)  # every step of the DAG
    for svg, (points, extra) in zip(svgs[3:], CHARTS, strict=True):
        bars = re.findall(rf'<rect[^>]*fill="{HIGHLIGHT_COLOUR}"', svg)
        assert len(bars) == (len(points) + 1 if extra else 0)  # the extra point and the floors
        assert "roc_auc 'over' main #quot and this PR" in svg


def test_a_diagram_mermaid_refuses_fails_the_check(tmp_path: Path) -> None:
    broken = fenced("xychart-beta\n  x-axis [a, b\n  line [1, 2]")
    with pytest.raises(AssertionError, match="Parse error"):
        render_markdown(broken, tmp_path / "render")


def test_the_html_report_opens_in_chromium_with_every_point_drawn(
    history: tuple[Recorded, list[RunManifest]], tmp_path: Path
) -> None:
    recorded, runs = history
    page = tmp_path / "site" / "index.html"
    done = sluice("report", "model", "--html", "-o", str(page), repo=recorded.repo)
    assert done.returncode == 0, done.stderr
    assert f"wrote {page} ({len(runs)} runs of model)" in done.stderr
    html = page.read_text()
    assert "<script" not in html.lower()
    # self-contained: the only URL is the SVG namespace
    assert set(re.findall(r"https?://[^\s\"')]+", html)) == {"http://www.w3.org/2000/svg"}

    dom = dump_dom(page)
    charts = re.findall(r"<svg.*?</svg>", dom, re.S)
    assert len(charts) == 2  # auc and rmse; `passed` is a boolean, not charted
    for chart in charts:
        assert len(re.findall(r'<circle class="point', chart)) == len(runs)
        assert len(re.findall(r'<circle class="point highlight"', chart)) == 1  # production
    assert "evaluate.auc (higher is better)" in charts[0]
    assert len(re.findall(r"<tr", dom)) == len(runs) + 1

    png = screenshot(page, tmp_path / "report.png", width=1100, height=900)
    pixels = png_pixels(png)
    assert len(pixels) > 50, "the screenshot is blank"
    assert pixels[hex_colour(LINE_COLOUR)] > 200  # the lines and points
    assert pixels[hex_colour(HIGHLIGHT_COLOUR)] > 20  # production's points
    if os.environ.get("SLUICE_DOCS_IMAGES") == "1":
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, DOCS_IMAGE)


def test_last_n_and_metric(history: tuple[Recorded, list[RunManifest]]) -> None:
    recorded, runs = history
    text = report(recorded.repo, "model", "--last", "3", "--metric", "evaluate.rmse")
    assert "(the last 3 runs)" in text
    assert [row.split("`")[1] for row in table_rows(text)] == [m.run_id for m in runs[-3:]]
    (chart,) = mermaid_blocks(text)
    assert 'title "evaluate.rmse (lower is better)"' in chart
    done = sluice("report", "model", "--metric", "evaluate.f1", repo=recorded.repo)
    assert done.returncode == 2
    assert "no run of model recorded metric 'evaluate.f1'; metrics: evaluate.auc," in done.stderr


def test_unknown_pipeline_exits_2_and_a_deleted_one_still_reports(
    history: tuple[Recorded, list[RunManifest]],
) -> None:
    recorded, runs = history
    done = sluice("report", "modle", repo=recorded.repo)
    assert done.returncode == 2
    assert "no pipeline named 'modle'" in done.stderr and "did you mean 'model'" in done.stderr
    git(recorded.repo, "rm", "-q", "pipelines/model.yaml")
    git(recorded.repo, "commit", "-q", "-m", "retire the model")
    text = report(recorded.repo, "model", "--md")
    assert len(table_rows(text)) == len(runs)
    assert "🟢" not in text  # no file, no directions: signs only
    assert "+0.02 ▲" in text


def test_no_runs_yet(tmp_path: Path) -> None:
    recorded = Recorded(tmp_path)
    text = report(recorded.repo, "model")
    assert "No finished runs recorded yet." in text
    html = report(recorded.repo, "model", "--html")
    assert "<!DOCTYPE html>" in html and "No finished runs recorded yet." in html


def test_untrusted_names_from_the_branch_stay_text(tmp_path: Path) -> None:
    recorded = Recorded(tmp_path)
    nasty = '<img src=x onerror="alert(1)">|`x'

    def evaluate(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        return FakeOutcome(files={"metrics.json": json.dumps({nasty: 0.5, "auc": 0.9}).encode()})

    recorded.runtime.steps["evaluate"] = evaluate
    recorded.run(n=1)
    recorded.run(n=2)
    html = report(recorded.repo, "model", "--html")
    assert "<img" not in html and "&lt;img src=x" in html
    md = report(recorded.repo, "model")
    assert "<img" not in md and '&lt;img src=x onerror="alert(1)"&gt;\\|' in md
    for block in mermaid_blocks(md):
        assert "<img" not in block


@pytest.mark.docker
def test_runs_in_real_containers_diff_and_report(tmp_path: Path, busybox_image: str) -> None:
    pipeline = f"""
    name: score
    params: {{score: 1}}
    defaults: {{image: {busybox_image}, workspace: false}}
    steps:
      - name: fit
        env: {{SCORE: "${{{{ params.score }}}}"}}
        run: |
          echo "{{\\"accuracy\\": 0.$SCORE}}" > /sluice/outputs/metrics.json
      - name: ship
        type: deployment
        needs: [fit]
        when: "steps.fit.metrics.accuracy >= 0.5"
        run: "true"
    """
    repo = make_repo(tmp_path, {"score.yaml": pipeline}, commit="score")
    ids = []
    for score in (6, 8, 7):
        done = sluice("run", "score", "-p", f"score={score}", "--json", repo=repo)
        assert done.returncode == 0, done.stderr
        ids.append(json.loads(done.stdout)["run_id"])
    found = json.loads(sluice("diff", ids[0], ids[1], "--json", repo=repo).stdout)
    (accuracy,) = found["metrics"]
    assert (accuracy["a"], accuracy["b"], accuracy["verdict"]) == (0.6, 0.8, "better")
    assert found["params"] == [{"name": "score", "a": 6, "b": 8, "change": "changed"}]
    text = report(repo, "score")
    assert "| 0.8 (+0.2 🟢▲) |" in text and "| 0.7 (-0.1 🔴▼) |" in text
