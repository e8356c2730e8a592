"""The step DAG drawn: text by level, mermaid, Graphviz dot, JSON.

A fanned-out step (engine.core.fanout) is drawn as one node labelled with its instance count
(Fan.label), or, `expand`ed, as a box holding one node per instance. Instance names hold
`[ ] = , . ~ #`: mermaid and dot see them only as quoted labels, never as ids.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence

from engine.core.graph import Dag, Fans, build, expanded


def _all_edges(dag: Dag) -> list[tuple[str, str]]:
    """Main edges, then the needs of `finally` steps (which `Dag.edges` leaves out)."""
    final = [(dep, step) for step in dag.finally_steps for dep in dag.needs.get(step, ())]
    return [*dag.edges, *final]


def _needs_text(dag: Dag, name: str) -> str:
    needs = dag.needs.get(name, ())
    return f"  (needs {', '.join(needs)})" if needs else ""


Placement = Mapping[str, tuple[Sequence[str], str | None]]  # step -> (runs_on, environment)


def placement_text(placed: tuple[Sequence[str], str | None]) -> str:
    """Where a step runs in jobs mode, in words ('' for the defaults).

    >>> placement_text((["self-hosted", "gpu"], "production"))
    'runs on self-hosted, gpu; environment production'
    """
    labels, environment = placed
    parts = [f"runs on {', '.join(labels)}"] if labels else []
    parts += [f"environment {environment}"] if environment else []
    return "; ".join(parts)


def _title(name: str, fans: Fans | None) -> str:
    return fans[name].label(name) if fans and name in fans else name


def render_text(
    dag: Dag,
    statuses: Mapping[str, str] | None = None,
    where: Placement | None = None,
    *,
    fans: Fans | None = None,
    expand: bool = False,
) -> str:
    """By level; a fanned-out step as its Fan.label, with `expand` its instances beneath it."""

    def status(name: str) -> str:
        return f"  [{statuses[name]}]" if statuses and name in statuses else ""

    def lines_of(name: str) -> list[str]:
        placed = placement_text(where[name]) if where and name in where else ""
        shown = f"{_title(name, fans)}{_needs_text(dag, name)}{'  ' + placed if placed else ''}"
        own = [f"  {shown}{status(name)}"]
        if expand and fans and name in fans:
            own += [f"    {instance}{status(instance)}" for instance in fans[name].instances]
        return own

    lines = []
    for index, level in enumerate(dag.levels):
        lines.append(f"level {index}:")
        lines.extend(line for name in level for line in lines_of(name))
    if dag.finally_steps:
        lines.append("finally:")
        lines.extend(line for name in dag.finally_steps for line in lines_of(name))
    return "\n".join(lines) + "\n"


_MERMAID_STYLE = {
    "succeeded": "fill:#d4edda,stroke:#28a745",
    "cached": "fill:#d1ecf1,stroke:#17a2b8",
    "failed": "fill:#f8d7da,stroke:#dc3545",
    "upstream_failed": "fill:#f8d7da,stroke:#dc3545,stroke-dasharray:4",
    "skipped": "fill:#eeeeee,stroke:#999999",
    "waiting_approval": "fill:#fff3cd,stroke:#ffc107",
    "cancelled": "fill:#eeeeee,stroke:#6c757d,stroke-dasharray:4",
    "running": "fill:#fff3cd,stroke:#ffc107",
}
_STEP_NAME = re.compile(r"^[a-z0-9-]+$")


def _node_id(name: str) -> str:
    """A mermaid id: `s_` and the step name (`-` as `_`); any other name (an instance's
    `train[lr=0.1]`) as its letters and digits, `_H` and a digest of it, so that no two
    names share an id and none holds what mermaid reads as syntax.

    >>> _node_id("deploy-model"), _node_id("train[lr=0.1]")
    ('s_deploy_model', 's_train_lr_0_1__Hded34b03')
    """
    if _STEP_NAME.match(name):
        return "s_" + name.replace("-", "_")
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return "s_" + re.sub(r"[^A-Za-z0-9]", "_", name)[:48] + "_H" + digest


def _mermaid_label(text: str) -> str:
    """Text inside a quoted mermaid label: `#` and `"` as mermaid's entity codes."""
    return text.replace("#", "#35;").replace('"', "#quot;")


def render_mermaid(
    dag: Dag,
    statuses: Mapping[str, str] | None = None,
    where: Placement | None = None,
    *,
    fans: Fans | None = None,
    expand: bool = False,
) -> str:
    """A flowchart; with `expand` a fanned-out step is a subgraph of its instances, its
    edges drawn to and from the subgraph."""
    lines = ["flowchart LR"]
    drawn: set[str] = set()
    for name in [*dag.order, *dag.finally_steps]:
        placed = placement_text(where[name]) if where and name in where else ""
        label = _mermaid_label(_title(name, fans))
        label = f"{label}<br/><small>{placed}</small>" if placed else label
        if expand and fans and name in fans:
            lines.append(f'  subgraph {_node_id(name)}["{label}"]')
            lines.append("    direction LR")  # instances stacked as one column (one rank)
            for instance in fans[name].instances:
                lines.append(f'    {_node_id(instance)}["{_mermaid_label(instance)}"]')
                drawn.add(instance)
            lines.append("  end")
            continue
        lines.append(f'  {_node_id(name)}["{label}"]')
        drawn.add(name)
    for dep, step in _all_edges(dag):
        lines.append(f"  {_node_id(dep)} --> {_node_id(step)}")
    # Dotted: "after every main step", drawn from the last ones to each finally step that
    # needs no other finally step (those come after it anyway), where no need is drawn.
    last = [n for n in dag.order if n not in {d for d, _ in dag.edges}]
    final = set(dag.finally_steps)
    for fin in dag.finally_steps:
        needs = dag.needs.get(fin, ())
        if any(d in final for d in needs):
            continue
        for name in last:
            if name not in needs:
                lines.append(f"  {_node_id(name)} -.-> {_node_id(fin)}")
    for status, style in _MERMAID_STYLE.items():
        lines.append(f"  classDef {status} {style}")
    for name, status in (statuses or {}).items():
        if status in _MERMAID_STYLE and name in drawn:  # a name not drawn has no node
            lines.append(f"  class {_node_id(name)} {status}")
    return "\n".join(lines) + "\n"


def _dot_id(name: str, placed: str = "") -> str:
    """A quoted dot string; `placed` on a second line."""
    lines = [text.replace("\\", "\\\\").replace('"', '\\"') for text in (name, placed) if text]
    return '"' + "\\n".join(lines) + '"'


def render_dot(
    dag: Dag, where: Placement | None = None, *, fans: Fans | None = None, expand: bool = False
) -> str:
    """Graphviz; with `expand` a fanned-out step is a cluster of its instances, its edges
    drawn to and from the cluster's border (`compound`)."""
    boxed = {name: fan for name, fan in (fans or {}).items() if expand and name in dag.needs}
    lines = ["digraph pipeline {", "  rankdir=LR;"] + (["  compound=true;"] if boxed else [])
    final = set(dag.finally_steps)
    for name in [*dag.order, *dag.finally_steps]:
        placed = placement_text(where[name]) if where and name in where else ""
        title = _title(name, fans)
        if name in boxed:
            lines.append(f"  subgraph {_dot_id('cluster_' + name)} {{")
            lines.append(f"    label={_dot_id(title, placed)};")
            lines.extend(f"    {_dot_id(instance)};" for instance in boxed[name].instances)
            lines.append("  }")
            continue
        attrs = [f"label={_dot_id(title, placed)}"] if title != name or placed else []
        attrs += ["style=dashed"] if name in final else []
        lines.append(f"  {_dot_id(name)}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    for dep, step in _all_edges(dag):
        ends, attrs = [dep, step], []
        if dep in boxed:  # from the cluster: one edge, from its first instance, cut at its border
            ends[0] = boxed[dep].instances[0]
            attrs.append(f"ltail={_dot_id('cluster_' + dep)}")
        if step in boxed:
            ends[1] = boxed[step].instances[0]
            attrs.append(f"lhead={_dot_id('cluster_' + step)}")
        tail = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"  {_dot_id(ends[0])} -> {_dot_id(ends[1])}{tail};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_json(
    dag: Dag, where: Placement | None = None, *, fans: Fans | None = None, expand: bool = False
) -> str:
    """`{"levels": [...], "edges": [...]}`; `finally` steps make the last levels, since
    they run after every main step. With `runners` when some step has a `runs_on` or an
    `environment` (jobs mode): step -> {runs_on, environment}. With fan-out, `instances`:
    step -> its instance names; `expand` lays out the DAG a run executes (instances as
    steps, each fanned-out step needing all of its own)."""
    if expand and fans:
        dag = expanded(dag, fans)
    names = set(dag.finally_steps)
    final = build({n: [d for d in dag.needs.get(n, ()) if d in names] for n in dag.finally_steps})
    runners = {
        name: {"runs_on": list(labels), "environment": environment}
        for name, (labels, environment) in (where or {}).items()
        if labels or environment
    }
    document: dict[str, object] = {
        "levels": [list(level) for level in (*dag.levels, *final.levels)],
        "edges": [list(edge) for edge in _all_edges(dag)],
    }
    if runners:
        document["runners"] = runners
    if fans:
        document["instances"] = {name: list(fan.instances) for name, fan in fans.items()}
    return json.dumps(document, indent=2)


def render(
    dag: Dag,
    fmt: str,
    where: Placement | None = None,
    *,
    fans: Fans | None = None,
    expand: bool = False,
) -> str:
    """Render in one of: text, mermaid, dot, json; `where`: each step's runner labels and
    GitHub environment (jobs mode), shown beside it; `fans`: the fanned-out steps (of
    `dag` as its file reads, not expanded), drawn with their count, or with `expand` with
    every instance."""
    if fmt == "text":
        return render_text(dag, where=where, fans=fans, expand=expand)
    if fmt == "mermaid":
        return render_mermaid(dag, where=where, fans=fans, expand=expand)
    if fmt == "dot":
        return render_dot(dag, where, fans=fans, expand=expand)
    if fmt == "json":
        return render_json(dag, where, fans=fans, expand=expand) + "\n"
    raise ValueError(f"unknown graph format {fmt!r}")


__all__ = ["Placement", "placement_text", "render", "render_mermaid", "render_text"]
