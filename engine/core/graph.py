"""The step DAG: levels, topological order, cycles named, and text/mermaid/dot/json renderings."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from engine.errors import InvalidInput


class CycleError(InvalidInput, ValueError):
    """`needs` form a cycle; `cycle` lists it closed, e.g. ['a', 'b', 'c', 'a']."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("cycle in needs: " + " -> ".join(cycle))


@dataclass(frozen=True)
class Dag:
    """Steps and their needs; `finally_steps` run after every main step, whatever happened."""

    needs: Mapping[str, tuple[str, ...]]
    order: tuple[str, ...]  # topological, stable with respect to declaration order
    levels: tuple[tuple[str, ...], ...]
    finally_steps: tuple[str, ...] = ()

    @property
    def edges(self) -> list[tuple[str, str]]:
        return [(dep, step) for step in self.order for dep in self.needs[step]]

    def dependents(self) -> dict[str, list[str]]:
        """Step -> the steps that need it directly."""
        out: dict[str, list[str]] = {name: [] for name in self.order}
        for dep, step in self.edges:
            out[dep].append(step)
        return out

    def ancestors(self, step: str) -> set[str]:
        """Every step `step` needs, directly or not."""
        seen: set[str] = set()
        stack = list(self.needs[step])
        while stack:
            name = stack.pop()
            if name not in seen:
                seen.add(name)
                stack.extend(d for d in self.needs[name] if d not in seen)
        return seen


def find_cycle(needs: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle among `needs` (closed: first name repeated last), or None. Iterative DFS."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(needs, white)
    for start in needs:
        if color[start] != white:
            continue
        path: list[str] = []
        stack: list[tuple[str, Iterable[str]]] = [(start, iter(needs[start]))]
        color[start] = grey
        path.append(start)
        while stack:
            node, children = stack[-1]
            advanced = False
            for child in children:
                if child not in color:
                    continue
                if color[child] == grey:
                    return [*path[path.index(child) :], child]
                if color[child] == white:
                    color[child] = grey
                    path.append(child)
                    stack.append((child, iter(needs[child])))
                    advanced = True
                    break
            if not advanced:
                color[node] = black
                path.pop()
                stack.pop()
    return None


def build(needs: Mapping[str, Sequence[str]], finally_steps: Sequence[str] = ()) -> Dag:
    """Lay out `needs` (step -> steps it needs; unknown names must be checked beforehand).

    Level 0 holds the steps with no needs; each later level the steps whose needs all sit
    on earlier levels. Raises CycleError naming the cycle.
    """
    known = {
        name: tuple(dict.fromkeys(d for d in deps if d in needs)) for name, deps in needs.items()
    }
    # Kahn's algorithm: linear, where re-scanning every step for each level is quadratic.
    waiting = {name: len(deps) for name, deps in known.items()}
    dependents: dict[str, list[str]] = {name: [] for name in known}
    for name, deps in known.items():
        for dep in deps:
            dependents[dep].append(name)
    level_of = dict.fromkeys((name for name, count in waiting.items() if not count), 0)
    queue = deque(level_of)
    while queue:
        name = queue.popleft()
        for child in dependents[name]:
            waiting[child] -= 1
            if not waiting[child]:
                level_of[child] = 1 + max(level_of[dep] for dep in known[child])
                queue.append(child)
    if len(level_of) < len(known):
        remaining = {name: deps for name, deps in known.items() if name not in level_of}
        cycle = find_cycle(remaining)
        raise CycleError(cycle or sorted(remaining))
    grouped: list[list[str]] = [[] for _ in range(1 + max(level_of.values(), default=-1))]
    for name in known:  # declaration order within a level
        grouped[level_of[name]].append(name)
    levels = [tuple(level) for level in grouped]
    order = tuple(name for level in levels for name in level)
    return Dag(needs=known, order=order, levels=tuple(levels), finally_steps=tuple(finally_steps))


def with_finally(main: Dag, final_needs: Mapping[str, Sequence[str]]) -> Dag:
    """`main` with its `finally` steps: laid out among themselves (levels after every main
    step), each keeping all its needs, main steps included (which `build` would drop as
    unknown). The loader's DAG; raises CycleError for a cycle among the finally steps.

    >>> dag = with_finally(build({"pick": [], "publish": ["pick"]}), {"summary": ["pick"]})
    >>> dag.finally_steps, dag.needs["summary"]
    (('summary',), ('pick',))
    """
    final = build(final_needs)
    kept = {
        name: tuple(dict.fromkeys(d for d in deps if d in main.needs or d in final_needs))
        for name, deps in final_needs.items()
    }
    return Dag(
        needs={**main.needs, **kept},
        order=main.order,
        levels=main.levels,
        finally_steps=final.order,
    )


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


def render_text(
    dag: Dag, statuses: Mapping[str, str] | None = None, where: Placement | None = None
) -> str:
    def line(name: str) -> str:
        placed = placement_text(where[name]) if where and name in where else ""
        status = f"  [{statuses[name]}]" if statuses and name in statuses else ""
        return f"  {name}{_needs_text(dag, name)}{'  ' + placed if placed else ''}{status}"

    lines = []
    for index, level in enumerate(dag.levels):
        lines.append(f"level {index}:")
        lines.extend(line(name) for name in level)
    if dag.finally_steps:
        lines.append("finally:")
        lines.extend(line(name) for name in dag.finally_steps)
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


def _node_id(name: str) -> str:
    return "s_" + name.replace("-", "_")


def render_mermaid(
    dag: Dag, statuses: Mapping[str, str] | None = None, where: Placement | None = None
) -> str:
    lines = ["flowchart LR"]
    for name in [*dag.order, *dag.finally_steps]:
        placed = placement_text(where[name]) if where and name in where else ""
        label = f"{name}<br/><small>{placed}</small>" if placed else name
        lines.append(f'  {_node_id(name)}["{label}"]')
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
        if status in _MERMAID_STYLE:
            lines.append(f"  class {_node_id(name)} {status}")
    return "\n".join(lines) + "\n"


def render_dot(dag: Dag, where: Placement | None = None) -> str:
    lines = ["digraph pipeline {", "  rankdir=LR;"]
    final = set(dag.finally_steps)
    for name in [*dag.order, *dag.finally_steps]:
        placed = placement_text(where[name]) if where and name in where else ""
        attrs = [f'label="{name}\\n{placed}"'] if placed else []
        attrs += ["style=dashed"] if name in final else []
        lines.append(f'  "{name}"' + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    for dep, step in _all_edges(dag):
        lines.append(f'  "{dep}" -> "{step}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_json(dag: Dag, where: Placement | None = None) -> str:
    """`{"levels": [...], "edges": [...]}`; `finally` steps make the last levels, since
    they run after every main step. With `runners` when some step has a `runs_on` or an
    `environment` (jobs mode): step -> {runs_on, environment}."""
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
    return json.dumps(document, indent=2)


def render(dag: Dag, fmt: str, where: Placement | None = None) -> str:
    """Render in one of: text, mermaid, dot, json; `where`: each step's runner labels and
    GitHub environment (jobs mode), shown beside it."""
    if fmt == "text":
        return render_text(dag, where=where)
    if fmt == "mermaid":
        return render_mermaid(dag, where=where)
    if fmt == "dot":
        return render_dot(dag, where)
    if fmt == "json":
        return render_json(dag, where) + "\n"
    raise ValueError(f"unknown graph format {fmt!r}")


__all__ = [
    "CycleError",
    "Dag",
    "build",
    "find_cycle",
    "render",
    "render_mermaid",
    "render_text",
    "with_finally",
]
