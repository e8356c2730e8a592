"""A pipeline's metrics history as markdown (a table and a mermaid chart) or as one
self-contained HTML page (inline SVG charts, inline styles, no script, nothing fetched).
Pure: the caller reads the runs and writes the text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

from engine.core.charts import Point, fenced, mermaid_xychart, svg_line_chart
from engine.core.manifest import RunManifest
from engine.core.metric_goals import Direction, direction_of, main_metric
from engine.core.run_diff import Value, delta_text, md_cell, metric_delta, metric_values, number

MAX_COLUMNS = 8  # metrics in the table; the main metric and those with a direction first


@dataclass(frozen=True)
class History:
    """What a report shows: runs oldest first, and what the pipeline says about metrics."""

    pipeline: str
    runs: Sequence[RunManifest]
    directions: Mapping[str, Direction] = field(default_factory=dict)
    production: str | None = None  # the production run's id, when there is one
    metric: str | None = None  # the chart's metric (default: main_metric)
    asked: int = 0  # how many runs were asked for (`--last N`)

    def values(self) -> list[dict[str, Value]]:
        return [metric_values(run) for run in self.runs]

    def keys(self) -> list[str]:
        """The metrics shown: the main one, then those with a direction, then the others."""
        found = list(dict.fromkeys(k for values in self.values() for k in values))
        main = self.main()
        ordered = sorted(found, key=lambda k: (k != main, direction_of(self.directions, k) is None))
        return ordered[:MAX_COLUMNS]

    def main(self) -> str | None:
        keys = [k for values in self.values() for k, v in values.items() if _plottable(v)]
        if self.metric is not None:
            return self.metric
        return main_metric(self.directions, keys)

    def points(self, key: str) -> tuple[list[Point], int | None]:
        """The runs that have metric `key` as points, and the production run's index."""
        labels = run_labels(self.runs)
        found: list[Point] = []
        production = None
        for run, values, name in zip(self.runs, self.values(), labels, strict=True):
            value = values.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                if run.run_id == self.production:
                    production = len(found)
                found.append(Point(name, float(value)))
        return found, production


def _plottable(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def run_labels(runs: Sequence[RunManifest]) -> list[str]:
    """`11-24 10:00` per run (from its start), with the run id's tail where two collide."""
    short = [f"{r.started_at[5:10]} {r.started_at[11:16]}".strip() or r.run_id for r in runs]
    return [
        f"{label} {run.run_id[-6:]}" if short.count(label) > 1 else label
        for label, run in zip(short, runs, strict=True)
    ]


def _cells(history: History, keys: Sequence[str]) -> list[list[tuple[str, str]]]:
    """Per run, per key: (value text, change against the previous run that had it)."""
    rows, last = [], dict[str, Value]()
    for values in history.values():
        row = []
        for key in keys:
            value = values.get(key)
            if value is None:
                row.append(("—", ""))
                continue
            previous = last.get(key)
            change = ""
            if previous is not None:
                moved = metric_delta(key, previous, value, direction_of(history.directions, key))
                change = "" if moved.delta is None or moved.verdict == "same" else delta_text(moved)
            row.append((number(value), change))
            last[key] = value
        rows.append(row)
    return rows


def _caption(history: History) -> str:
    n = len(history.runs)
    runs = "1 run" if n == 1 else f"{n} runs"
    return f"the last {runs}" if history.asked and n >= history.asked else runs


def report_markdown(history: History) -> str:
    """`## Metrics history: <pipeline>`, a mermaid chart of the main metric, then a table."""
    lines = [f"## Metrics history: `{md_cell(history.pipeline)}` ({_caption(history)})", ""]
    if not history.runs:
        return "\n".join([*lines, "No finished runs recorded yet."]) + "\n"
    if history.production:
        lines += [f"Production: `{md_cell(history.production)}`", ""]
    main = history.main()
    if main is not None:
        points, _ = history.points(main)
        if points:
            goal = direction_of(history.directions, main)
            better = f" ({goal} is better)" if goal else ""
            lines += [
                fenced(mermaid_xychart(f"{main}{better}", main.split(".", 1)[-1], points)),
                "",
            ]
    keys = history.keys()
    head = ["run", "started", "trigger", "status", *(f"`{md_cell(k)}`" for k in keys)]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for run, row in zip(history.runs, _cells(history, keys), strict=True):
        star = " ★" if run.run_id == history.production else ""
        cells = [
            f"`{md_cell(run.run_id)}`{star}",
            md_cell(run.started_at),
            md_cell(run.trigger.kind),
            run.status.value,
            *(md_cell(f"{value} ({change})" if change else value) for value, change in row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if history.production:
        lines += ["", "★ production."]
    if not keys:
        lines += ["", "These runs recorded no metrics."]
    return "\n".join(lines) + "\n"


_STYLE = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       color: #1f2328; margin: 2rem auto; max-width: 1100px; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; white-space: nowrap; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.production td { background: #fff8e5; }
.better { color: #1a7f37; } .worse { color: #cf222e; } .change { color: #59636e; }
.chart .grid { stroke: #eaeef2; } .chart .line { stroke-width: 2; }
.chart .tick { font-size: 10px; fill: #59636e; } .chart .chart-title { font-weight: 600; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
"""


def _change_span(change: str) -> str:
    if not change:
        return ""
    kind = "better" if "🟢" in change else "worse" if "🔴" in change else "change"
    text = change.replace("🟢", "").replace("🔴", "")
    return f' <span class="{kind}">{escape(text)}</span>'


def report_html(history: History, *, generator: str = "sluice") -> str:
    """One HTML page: a chart per numeric metric (the main one first and wide), then the table."""
    title = f"Metrics history: {history.pipeline}"
    body = [f"<h1>{escape(title)}</h1>", f"<p>{escape(_caption(history))}"]
    if history.production:
        body[-1] += f"; production: <code>{escape(history.production)}</code> (★)"
    body[-1] += ".</p>"
    keys = history.keys()
    charts = []
    for key in keys:
        points, production = history.points(key)
        if not points:
            continue
        goal = direction_of(history.directions, key)
        name = f"{key} ({goal} is better)" if goal else key
        wide = key == history.main()
        charts.append(
            svg_line_chart(
                name,
                points,
                highlight=production,
                width=1000 if wide else 480,
                height=280 if wide else 220,
            )
        )
    if charts:
        body += ['<div class="charts">', *charts, "</div>"]
    elif history.runs:
        body.append("<p>These runs recorded no numeric metrics.</p>")
    if history.runs:
        body.append("<h2>Runs</h2>")
        head = ["run", "started", "trigger", "status", *keys]
        body += ["<table>", "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
        for run, row in zip(history.runs, _cells(history, keys), strict=True):
            mark = ' class="production"' if run.run_id == history.production else ""
            star = " ★" if mark else ""
            cells = [
                f"<td><code>{escape(run.run_id)}</code>{star}</td>",
                f"<td>{escape(run.started_at)}</td>",
                f"<td>{escape(run.trigger.kind)}</td>",
                f"<td>{escape(run.status.value)}</td>",
                *(f'<td class="num">{escape(v)}{_change_span(c)}</td>' for v, c in row),
            ]
            body.append(f"<tr{mark}>" + "".join(cells) + "</tr>")
        body.append("</table>")
    else:
        body.append("<p>No finished runs recorded yet.</p>")
    body.append(f"<p><small>Made by {escape(generator)}.</small></p>")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title>",
            f"<style>{_STYLE}</style>",
            "</head>",
            "<body>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )
