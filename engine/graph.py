"""The step DAG: levels, topological order, cycles named, and text/mermaid/dot/json renderings."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


class CycleError(ValueError):
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
                stack.extend(self.needs[name])
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
    known = {name: tuple(dict.fromkeys(d for d in deps if d in needs)) for name, deps in needs.items()}
    level_of: dict[str, int] = {}
    remaining = dict(known)
    levels: list[tuple[str, ...]] = []
    while remaining:
        ready = [n for n, deps in remaining.items() if all(d in level_of for d in deps)]
        if not ready:
            cycle = find_cycle(remaining)
            raise CycleError(cycle or sorted(remaining))
        for name in ready:
            level_of[name] = len(levels)
            del remaining[name]
        levels.append(tuple(ready))
    order = tuple(name for level in levels for name in level)
    return Dag(needs=known, order=order, levels=tuple(levels), finally_steps=tuple(finally_steps))


def render_text(dag: Dag, statuses: Mapping[str, str] | None = None) -> str:
    lines = []
    for index, level in enumerate(dag.levels):
        lines.append(f"level {index}:")
        for name in level:
            after = f"  (needs {', '.join(dag.needs[name])})" if dag.needs[name] else ""
            status = f"  [{statuses[name]}]" if statuses and name in statuses else ""
            lines.append(f"  {name}{after}{status}")
    if dag.finally_steps:
        lines.append("finally:")
        lines.extend(
            f"  {name}" + (f"  [{statuses[name]}]" if statuses and name in statuses else "")
            for name in dag.finally_steps
        )
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


def render_mermaid(dag: Dag, statuses: Mapping[str, str] | None = None) -> str:
    lines = ["flowchart LR"]
    for name in [*dag.order, *dag.finally_steps]:
        lines.append(f'  {_node_id(name)}["{name}"]')
    for dep, step in dag.edges:
        lines.append(f"  {_node_id(dep)} --> {_node_id(step)}")
    last = [n for n in dag.order if n not in {d for d, _ in dag.edges}]
    for fin in dag.finally_steps:
        for name in last:
            lines.append(f"  {_node_id(name)} -.-> {_node_id(fin)}")
    for status, style in _MERMAID_STYLE.items():
        lines.append(f"  classDef {status} {style}")
    for name, status in (statuses or {}).items():
        if status in _MERMAID_STYLE:
            lines.append(f"  class {_node_id(name)} {status}")
    return "\n".join(lines) + "\n"


def render_dot(dag: Dag) -> str:
    lines = ["digraph pipeline {", "  rankdir=LR;"]
    for name in dag.order:
        lines.append(f'  "{name}";')
    for name in dag.finally_steps:
        lines.append(f'  "{name}" [style=dashed];')
    for dep, step in dag.edges:
        lines.append(f'  "{dep}" -> "{step}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_json(dag: Dag) -> str:
    return json.dumps(
        {
            "levels": [list(level) for level in dag.levels],
            "edges": [list(edge) for edge in dag.edges],
            "finally": list(dag.finally_steps),
        },
        indent=2,
    )


def render(dag: Dag, fmt: str) -> str:
    """Render in one of: text, mermaid, dot, json."""
    if fmt == "text":
        return render_text(dag)
    if fmt == "mermaid":
        return render_mermaid(dag)
    if fmt == "dot":
        return render_dot(dag)
    if fmt == "json":
        return render_json(dag) + "\n"
    raise ValueError(f"unknown graph format {fmt!r}")


__all__ = ["CycleError", "Dag", "build", "find_cycle", "render", "render_mermaid", "render_text"]
