"""The step DAG: levels, topological order, cycles named (drawn by engine.core.graph_render).

A fanned-out step (engine.core.fanout) is one node of the DAG as its file reads; a run's DAG
holds its instances too (`expanded`); `collapse` folds them back in.
"""

from __future__ import annotations

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


TIMES = "\N{MULTIPLICATION SIGN}"  # `train` and 4 instances: drawn as one node, "train" TIMES "4"


@dataclass(frozen=True)
class Fan:
    """A fanned-out step as drawn: its instances, in order, and what sets how many there
    are when a list param does (`foreach params.regions`), else ''."""

    instances: tuple[str, ...]
    over: str = ""

    def label(self, name: str) -> str:
        """The name, a multiplication sign and the count: `train` + TIMES + `4`; and what
        sets the count, `(foreach params.regions)`, when a list param does."""
        return f"{name} {TIMES}{len(self.instances)}" + (f" ({self.over})" if self.over else "")


Fans = Mapping[str, Fan]


def collapse(dag: Dag, groups: Mapping[str, Sequence[str]]) -> Dag:
    """A run's DAG drawn as its pipeline file reads: each group's instances folded into the
    group, which needs what they need. A DAG without those instances comes back as it is.

    >>> dag = build({"prep": [], "t[1]": ["prep"], "t[2]": ["prep"], "t": ["t[1]", "t[2]"]})
    >>> collapse(dag, {"t": ["t[1]", "t[2]"]}).levels
    (('prep',), ('t',))
    """
    owner = {name: group for group, names in groups.items() for name in names}
    if not any(name in dag.needs for name in owner):
        return dag
    final = set(dag.finally_steps)
    main: dict[str, list[str]] = {}
    for name, deps in dag.needs.items():
        if name in owner or name in final:
            continue
        found = [d for i in groups.get(name, ()) for d in dag.needs.get(i, ())]
        main[name] = [owner.get(d, d) for d in [*found, *deps] if owner.get(d, d) != name]
    fin = {n: [owner.get(d, d) for d in dag.needs.get(n, ())] for n in dag.finally_steps}
    return with_finally(build(main), fin)


def expanded(dag: Dag, fans: Fans) -> Dag:
    """The DAG a run executes: each fanned-out step's instances needing what it needs, and
    the step (its group) needing every instance. An expanded DAG comes back as it is."""
    if not fans or any(i in dag.needs for fan in fans.values() for i in fan.instances):
        return dag
    final = set(dag.finally_steps)
    main: dict[str, list[str]] = {}
    for name, deps in dag.needs.items():
        if name in final:
            continue
        fan = fans.get(name)
        for instance in fan.instances if fan else ():
            main[instance] = list(deps)
        main[name] = list(fan.instances) if fan else list(deps)
    return with_finally(build(main), {n: list(dag.needs.get(n, ())) for n in dag.finally_steps})


__all__ = [
    "CycleError",
    "Dag",
    "Fan",
    "Fans",
    "build",
    "collapse",
    "expanded",
    "find_cycle",
    "with_finally",
]
