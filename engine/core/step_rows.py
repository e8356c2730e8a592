"""A run's steps as rows to show people: each fanned-out step, then its instances beneath.

The manifest keeps every instance as a step record of its own (`instance_of`, `matrix`) and
the step itself as a group record (`instances`, its settled status, a tally as `reason`).
Summaries show the group's row and, indented, its instances by their whole names
(`train[lr=0.1,depth=4]`, as `sluice logs` takes them); a large sweep shows the instances that did not end well and one row
counting the rest (the manifest, `sluice show --json`, keeps them all).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.core.graph import Dag, Fan, collapse
from engine.core.graph_render import render_mermaid
from engine.core.manifest import StepRecord, StepStatus

LIMIT = 20  # instances shown one by one; past it, only those that did not end well
_WELL = frozenset({StepStatus.succeeded, StepStatus.cached, StepStatus.skipped})


@dataclass(frozen=True)
class Row:
    """One line of a summary: a step (depth 0) or an instance under its step (depth 1);
    or (`record` None) the count of a group's instances not shown, `rest` by status."""

    name: str  # the manifest's name for it
    shown: str  # as shown: its name, whole (what `sluice logs` takes); '' for a count
    record: StepRecord | None
    depth: int = 0
    rest: tuple[tuple[str, int], ...] = ()

    @property
    def is_group(self) -> bool:
        return self.record is not None and bool(self.record.instances)

    @property
    def count(self) -> int:
        """How many instances a `rest` row stands for."""
        return sum(n for _, n in self.rest)


def rows(steps: Mapping[str, StepRecord], limit: int | None = LIMIT) -> list[Row]:
    """The steps in manifest order, each group's instances listed right after its row (a run
    lays out the instances before their group; the group's row stays where it stands).
    `limit`: past that many instances, only those that did not end well are listed (at most
    `limit` of them) and one row counts the rest; None lists them all."""
    owner = {i: name for name, rec in steps.items() for i in rec.instances if i in steps}
    found: list[Row] = []
    for name, record in steps.items():
        if name in owner:
            continue  # under its group
        found.append(Row(name, name, record))
        if record.instances:
            found += _instances(name, [i for i in record.instances if i in steps], steps, limit)
    return found


def _instances(
    group: str, names: list[str], steps: Mapping[str, StepRecord], limit: int | None
) -> list[Row]:
    listed = names
    if limit is not None and len(names) > limit:
        listed = [n for n in names if steps[n].status not in _WELL][:limit]
    out = [Row(n, n, steps[n], 1) for n in listed]
    hidden = [n for n in names if n not in set(listed)]
    if hidden:
        counts: dict[str, int] = {}
        for n in hidden:
            counts[steps[n].status.value] = counts.get(steps[n].status.value, 0) + 1
        out.append(Row(group, "", None, 1, tuple(counts.items())))
    return out


def rest_text(row: Row) -> str:
    """`... and 60 more instances (58 succeeded, 2 skipped)`.

    >>> rest_text(Row("t", "", None, 1, (("succeeded", 58), ("skipped", 2))))
    '... and 60 more instances (58 succeeded, 2 skipped)'
    """
    parts = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in row.rest)
    noun = "instance" if row.count == 1 else "instances"
    return f"... and {row.count} more {noun} ({parts})"


def shown_names(steps: Mapping[str, StepRecord], limit: int | None = LIMIT) -> list[str]:
    """The steps and instances `rows` lists, by their manifest names."""
    return [row.name for row in rows(steps, limit) if row.record is not None]


def mermaid(steps: Mapping[str, StepRecord], dag: Dag) -> str:
    """A run's DAG coloured by status (no fence), a fanned-out step as one node with its
    count, whether `dag` is the file's or a run's (which holds the instances)."""
    groups = {name: tuple(r.instances) for name, r in steps.items() if r.instances}
    statuses = {name: record.status.value for name, record in steps.items()}
    fans = {name: Fan(instances) for name, instances in groups.items()}
    return render_mermaid(collapse(dag, groups), statuses, fans=fans).rstrip("\n")
