"""A RunDiff as terminal text and as markdown (pure; `sluice diff` and `--md`)."""

from __future__ import annotations

from engine.core.run_diff import RunDiff, delta_text, md_cell, number, step_source
from engine.core.suggest import counted, literal


def _short(digest: str | None) -> str:
    return f"sha256:{digest[:12]}" if digest else "—"


def _pipeline_line(diff: RunDiff) -> str:
    a, b = diff.a, diff.b
    if a.pipeline != b.pipeline:
        return f"pipelines differ: {a.pipeline} ({a.pipeline_file}) and {b.pipeline} ({b.pipeline_file})"
    if diff.pipeline_changed:
        return (
            f"pipeline file {b.pipeline_file}: changed "
            f"({a.pipeline_sha256[:12]} -> {b.pipeline_sha256[:12]})"
        )
    return f"pipeline file {b.pipeline_file}: unchanged"


def _commit(commit: str | None) -> str:
    return commit[:12] if commit else "no commit"


def diff_text(diff: RunDiff) -> str:
    """Plain lines for a terminal; the caller makes untrusted text printable."""
    a, b = diff.a, diff.b
    lines = [
        f"{a.run_id} -> {b.run_id}",
        f"  status   {a.status} -> {b.status}",
        f"  commit   {_commit(a.commit)} -> {_commit(b.commit)}",
        f"  {_pipeline_line(diff)}",
    ]
    lines.append(
        f"params: {counted(len(diff.params), 'differs', 'differ')}"
        if diff.params
        else "params: the same"
    )
    width = max((len(p.name) for p in diff.params), default=0)
    for p in diff.params:
        before = "(absent)" if p.change == "added" else literal(p.old)
        after = "(absent)" if p.change == "removed" else literal(p.new)
        lines.append(f"  {p.name:<{width}}  {before} -> {after}")
    lines.append("metrics:" if diff.metrics else "metrics: none recorded")
    width = max((len(m.key) for m in diff.metrics), default=0)
    for m in diff.metrics:
        change = delta_text(m, markdown=False)
        lines.append(f"  {m.key:<{width}}  {number(m.old)} -> {number(m.new)}  {change}".rstrip())
    lines.append("steps:")
    width = max((len(s.name) for s in diff.steps), default=0)
    for s in diff.steps:
        before = step_source(s.old_status, s.old_cached_from)
        after = step_source(s.new_status, s.new_cached_from)
        mark = "" if s.changed else "  (same)"
        lines.append(f"  {s.name:<{width}}  {before} -> {after}{mark}")
    kept = f", {diff.unchanged_outputs} unchanged" if diff.unchanged_outputs else ""
    lines.append(f"outputs: {len(diff.outputs)} changed{kept}")
    for o in diff.outputs:
        lines.append(
            f"  {o.step}/{o.path}  {o.change}: {_short(o.old_sha256)} -> {_short(o.new_sha256)}"
        )
    return "\n".join(lines)


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _head(*cells: str) -> list[str]:
    return [_row(*cells), "|" + " --- |" * len(cells)]


def diff_markdown(diff: RunDiff) -> str:
    """Markdown: a heading, then tables of params, metrics, steps and changed outputs."""
    a, b = diff.a, diff.b
    lines = [
        f"### `{md_cell(a.run_id)}` → `{md_cell(b.run_id)}`",
        "",
        *_head("", "run A", "run B"),
        _row("run", f"`{md_cell(a.run_id)}`", f"`{md_cell(b.run_id)}`"),
        _row("status", md_cell(a.status), md_cell(b.status)),
        _row("trigger", md_cell(a.trigger), md_cell(b.trigger)),
        _row("started", md_cell(a.started_at), md_cell(b.started_at)),
        _row("commit", f"`{_commit(a.commit)}`", f"`{_commit(b.commit)}`"),
        "",
        f"**Pipeline:** {md_cell(_pipeline_line(diff))}",
        "",
        "#### Params",
        "",
    ]
    if diff.params:
        lines += _head("param", "run A", "run B")
        for p in diff.params:
            before = "*(absent)*" if p.change == "added" else f"`{md_cell(literal(p.old))}`"
            after = "*(absent)*" if p.change == "removed" else f"`{md_cell(literal(p.new))}`"
            lines.append(_row(f"`{md_cell(p.name)}`", before, after))
    else:
        lines.append("The same params.")
    lines += ["", "#### Metrics", ""]
    if diff.metrics:
        lines += _head("metric", "run A", "run B", "change")
        for m in diff.metrics:
            cells = (md_cell(number(m.old)), md_cell(number(m.new)), md_cell(delta_text(m)))
            lines.append(_row(f"`{md_cell(m.key)}`", *cells))
    else:
        lines.append("No metrics recorded.")
    lines += ["", "#### Steps", "", *_head("step", "run A", "run B", "")]
    for s in diff.steps:
        before = md_cell(step_source(s.old_status, s.old_cached_from))
        after = md_cell(step_source(s.new_status, s.new_cached_from))
        lines.append(_row(f"`{md_cell(s.name)}`", before, after, "changed" if s.changed else ""))
    lines += ["", "#### Outputs that changed", ""]
    if diff.outputs:
        lines += _head("output", "change", "run A", "run B")
        for o in diff.outputs:
            name = f"`{md_cell(o.step)}/{md_cell(o.path)}`"
            lines.append(
                _row(name, o.change, f"`{_short(o.old_sha256)}`", f"`{_short(o.new_sha256)}`")
            )
    else:
        lines.append("None.")
    if diff.unchanged_outputs:
        lines += ["", f"{counted(diff.unchanged_outputs, 'output')} unchanged."]
    return "\n".join(lines) + "\n"
