"""The sticky pull-request comment of one preview run, as markdown (pure).

It starts with a hidden marker naming the pipeline (how the comment is found again), then:
the gate's verdict; the metrics beside production and the base branch's latest run, each
delta marked against the metric's direction; the params that differ; each step's status
and where it was cached from; the DAG; the main metric over the base branch's last runs
with this run's value; links to the CI run and the manifest. The pieces are engine.core's
own (run_diff, charts, graph): `sluice diff` and `sluice report` show the same tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.core import step_rows
from engine.core.charts import Point, fenced, mermaid_xychart
from engine.core.graph import Dag
from engine.core.manifest import RunManifest, StepStatus
from engine.core.metric_goals import Direction, main_metric
from engine.core.preview import WOULD_DEPLOY, verdict_of
from engine.core.run_diff import (
    changed_params,
    md_cell,
    metric_values,
    metrics_table,
    number,
    step_source,
)

MAX_BODY = 65_536  # GitHub's limit for a comment, in characters
_ROOM = 1_000  # kept free for the note that says the comment was cut
_STATUS = {
    "succeeded": "✅",
    "failed": "❌",
    "cached": "♻️",
    "skipped": "⏭️",
    "upstream_failed": "⛔",
    "cancelled": "🚫",
    "waiting_approval": "⏸️",
}
CUT_NOTE = (
    "> ✂️ This comment was cut to stay under GitHub's 65,536 characters: "
    "the job summary of the CI run has the whole report."
)


def marker(pipeline: str) -> str:
    """The hidden first line that finds this pipeline's comment on the pull request again."""
    return f"<!-- sluice-preview pipeline={pipeline} -->"


@dataclass(frozen=True)
class Preview:
    """What one preview's comment shows (the caller reads it from the results branch)."""

    run: RunManifest
    dag: Dag | None
    directions: Mapping[str, Direction]
    production: RunManifest | None  # the pipeline's production run (its baseline)
    base_latest: RunManifest | None  # the latest finished run on the base branch
    history: Sequence[RunManifest]  # the base branch's last runs, oldest first
    base_ref: str = "main"
    run_url: str | None = None  # the CI run
    manifest_url: str | None = None  # the manifest on the results branch
    pushed: bool = True  # False: a fork's preview, whose record stayed on the runner


def body(preview: Preview, limit: int | None = MAX_BODY) -> str:
    """The comment; cut (whole sections or table rows, never half a diagram) to `limit`
    characters with a note saying so. `limit` None: the whole report (the job summary)."""
    sections = _sections(preview)
    text = "\n\n".join(sections) + "\n"
    if limit is None or len(text) <= limit:
        return text
    budget = limit - _ROOM
    kept: list[str] = []
    used = 0
    for section in sections:
        if used + len(section) + 2 <= budget:
            kept.append(section)
            used += len(section) + 2
            continue
        if not section.startswith("```"):
            part = _cut_lines(section, budget - used - 2)
            if part:
                kept.append(part)
        break
    return "\n\n".join([*kept, CUT_NOTE]) + "\n"


def _cut_lines(section: str, room: int) -> str:
    """The section's first lines that fit in `room` characters ("" when none do)."""
    lines, used = [], 0
    for line in section.split("\n"):
        if used + len(line) + 1 > room:
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines) if len(lines) > 2 else ""


def _sections(p: Preview) -> list[str]:
    run = p.run
    status = run.status.value
    head = [
        marker(run.pipeline),
        f"### Sluice preview: {md_cell(run.pipeline)} {_STATUS.get(status, '')} {status}",
    ]
    sections = ["\n".join(head), _gate(run), _about(p)]
    if run.error:
        sections.append(f"> **Error:** {md_cell(run.error)}")
    sections.append(_metrics(p))
    params = _params(p)
    if params:
        sections.append(params)
    sections.append(_steps(run))
    if p.dag is not None:
        sections.append(fenced(step_rows.mermaid(run.steps, p.dag)))
    chart = _chart(p)
    if chart:
        sections.append(chart)
    return sections


def _gate(run: RunManifest) -> str:
    """The verdict of each deployment step: would deploy, would be held (and why), or not
    reached (a step it needs failed or was skipped)."""
    lines = []
    for name, record in run.steps.items():
        if record.type != "deployment":
            continue
        verdict = verdict_of(record)
        if verdict is None:
            why = record.reason or record.status.value
            lines.append(f"- ⚪ `{md_cell(name)}`: not reached ({md_cell(why)})")
        elif verdict == WOULD_DEPLOY:
            lines.append(f"- 🟢 `{md_cell(name)}`: **would deploy**")
        else:
            word, _, why = verdict.partition(": ")
            shown = f"**{md_cell(word)}**" + (f": {md_cell(why)}" if why else "")
            lines.append(f"- 🔴 `{md_cell(name)}`: {shown}")
    if not lines:
        return "**Gate:** this pipeline has no deployment step."
    return "**Gate** (preview: nothing was deployed, production is unchanged)\n\n" + "\n".join(
        lines
    )


def _about(p: Preview) -> str:
    run = p.run
    payload = run.trigger.payload
    parts = [f"Run `{md_cell(run.run_id)}`"]
    head = payload.get("head_sha")
    if isinstance(head, str):
        parts.append(f"head `{md_cell(head[:12])}`")
    if run.duration_s is not None:
        parts.append(f"{run.duration_s:.1f}s")
    if p.run_url:
        parts.append(f"[CI run](<{p.run_url}>)")
    if p.manifest_url and p.pushed:
        parts.append(f"[manifest](<{p.manifest_url}>)")
    text = " · ".join(parts)
    if not p.pushed:
        text += (
            "\n\nFrom a fork: this preview's record was not pushed to the results branch "
            "and its steps ran without secrets."
        )
    return text


def _metrics(p: Preview) -> str:
    base = md_cell(p.base_ref)
    others = [("production", p.production), (f"{base} (latest)", p.base_latest)]
    if not metric_values(p.run) and not any(run and metric_values(run) for _, run in others):
        return "**Metrics:** none recorded."
    table = metrics_table(("this PR", p.run), others, p.directions)
    return "**Metrics** (deltas: this PR against each run)\n\n" + table


def _params(p: Preview) -> str:
    against = p.base_latest or p.production
    if against is None:
        return ""
    changes = changed_params(against.params, p.run.params)
    if not changes:
        return ""
    rows = [
        f"| `{md_cell(c.name)}` | {md_cell(number(c.old))} | {md_cell(number(c.new))} |"
        for c in changes
    ]
    head = f"| param | {md_cell(p.base_ref)} | this PR |"
    return "**Params that differ**\n\n" + "\n".join([head, "| --- | --- | --- |", *rows])


def _steps(run: RunManifest) -> str:
    """A row per step; a fanned-out step's instances beneath it (engine.core.step_rows)."""
    rows = []
    for row in step_rows.rows(run.steps):
        record = row.record
        if record is None:
            rows.append(f"| &emsp;{md_cell(step_rows.rest_text(row))} | | |")
            continue
        status = record.status.value
        source = step_source(status, record.cached_from)
        note = record.reason or ""
        if record.status is StepStatus.cached and record.cached_from:
            note = ""
        mark, indent = _STATUS.get(status, ""), "&emsp;↳ " if row.depth else ""
        rows.append(
            f"| {indent}`{md_cell(row.shown)}` | {mark} {md_cell(source)} | {md_cell(note)} |"
        )
    return "**Steps**\n\n" + "\n".join(["| step | status | note |", "| --- | --- | --- |", *rows])


def _labels(run_ids: Sequence[str]) -> list[str]:
    """Short x-axis labels from run ids (`20261124T100000Z-abc123`): the day (`11-24`) when
    no two runs share one, else the day and time (`24 10:00`)."""
    days = [f"{r[4:6]}-{r[6:8]}" if len(r) >= 13 and r[8] == "T" else r for r in run_ids]
    if len(set(days)) == len(days):
        return days
    return [
        f"{r[6:8]} {r[9:11]}:{r[11:13]}" if len(r) >= 13 and r[8] == "T" else r for r in run_ids
    ]


def _chart(p: Preview) -> str:
    """The main metric over the base branch's last runs, then this run's value."""
    mine = metric_values(p.run)
    key = main_metric(p.directions, mine)
    if key is None or isinstance(mine[key], bool):
        return ""
    found: list[tuple[str, float]] = []
    for run in p.history:
        value = metric_values(run).get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            found.append((run.run_id, float(value)))
    if not found:
        return ""
    labels = _labels([run_id for run_id, _ in found])
    points = [Point(label, value) for label, (_, value) in zip(labels, found, strict=True)]
    number_ = p.run.trigger.payload.get("number")
    extra = Point(f"PR #{number_}" if isinstance(number_, int) else "this PR", float(mine[key]))
    title = f"{key}: last {len(points)} runs on {p.base_ref}, and this PR"
    return fenced(mermaid_xychart(title, key, points, extra))
