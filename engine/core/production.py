"""Production rules: which run is production, how deploy, promote and rollback move it (pure)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.core.manifest import Name, RunManifest

PRODUCTION_SCHEMA = "sluice/production/v1"
KEPT = 100  # entries (and lineage) the pointer keeps; every entry also has its own file
IMPLIED_FROM_RUNS = 100  # a branch without a pointer: production is read back from these runs

Action = Literal["deploy", "promote", "rollback"]


class ProductionEntry(BaseModel):
    """One change of a pipeline's production run (`seq` counts them from 1)."""

    seq: int = 0  # 0: not recorded (implied by an older results branch)
    run_id: Name  # names read from the results branch are checked (core/names.py)
    step: Name
    action: Action
    by: str = ""
    at: str = ""
    previous: Name | None = None  # the run that was production before this entry


class Production(ProductionEntry):
    """`production/<pipeline>.json`: the current entry, what rollback walks back through,
    and the latest entries, newest first."""

    model_config = ConfigDict(populate_by_name=True)

    schema_: str = Field(default=PRODUCTION_SCHEMA, alias="schema")
    pipeline: Name
    lineage: list[Name] = Field(default_factory=list)  # oldest first; the last is run_id
    history: list[ProductionEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _current_ends_the_lineage(self) -> Production:
        if not self.lineage or self.lineage[-1] != self.run_id:
            self.lineage = [*self.lineage, self.run_id]
        return self

    def entry(self) -> ProductionEntry:
        """The current entry alone."""
        return ProductionEntry.model_validate(self.model_dump(include=_ENTRY_FIELDS))

    def rollback_target(self) -> str | None:
        """The run production was before the current one, rolled-back runs left out."""
        return self.lineage[-2] if len(self.lineage) > 1 else None

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2) + "\n"


_ENTRY_FIELDS = set(ProductionEntry.model_fields)
# Given the current production (None: there is none), the change to make:
# (run id, baseline step, action), or None to leave production as it is.
Decide = Callable[[Production | None], tuple[str, str, Action] | None]


def advance(
    current: Production | None,
    *,
    pipeline: str,
    run_id: str,
    step: str,
    action: Action,
    by: str,
    at: str,
    seq: int,
) -> Production:
    """Production after one more entry.

    The lineage is a stack: deploy and promote push the run; a rollback to a run that
    is in it pops back to that run's last place, so two rollbacks in a row go two steps
    back; a rollback (`--to`) to a run that never was production pushes it.

    >>> p = advance(None, pipeline="p", run_id="a", step="s", action="deploy", by="", at="", seq=1)
    >>> advance(p, pipeline="p", run_id="b", step="s", action="promote", by="", at="", seq=2).lineage
    ['a', 'b']
    """
    lineage = list(current.lineage) if current else []
    earlier = lineage[:-1]
    if action == "rollback" and run_id in earlier:
        lineage = earlier[: len(earlier) - earlier[::-1].index(run_id)]
    else:
        lineage.append(run_id)
    entry = ProductionEntry(
        seq=seq,
        run_id=run_id,
        step=step,
        action=action,
        by=by,
        at=at,
        previous=current.run_id if current else None,
    )
    history = [entry, *(current.history if current else [])][:KEPT]
    return Production(
        **entry.model_dump(), pipeline=pipeline, lineage=lineage[-KEPT:], history=history
    )


def implied(
    pipeline: str, step: str, succeeded: Iterable[str], latest: str | None, exclude: str | None
) -> Production | None:
    """Production on a branch from before the pointer existed.

    It was always the latest run where `step` succeeded (`latest`, from the index), so the
    runs where it succeeded (`succeeded`) are its lineage; `exclude` leaves out a run being
    recorded right now.

    >>> implied("p", "s", ["b", "a"], "c", None).lineage
    ['a', 'b', 'c']
    """
    found = sorted(succeeded)
    lineage = [r for r in found if r != latest] + ([latest] if latest else [])
    lineage = [r for r in lineage if r != exclude]
    if not lineage:
        return None
    return Production(
        pipeline=pipeline, run_id=lineage[-1], step=step, action="deploy", lineage=lineage
    )


def deploy_once(run_id: str, step: str) -> Decide:
    """The change a run whose baseline step just succeeded asks for: deploy it, unless it
    already was (recording again after a failed push must not add a second entry)."""

    def decide(current: Production | None) -> tuple[str, str, Action] | None:
        if current is not None and (
            current.run_id == run_id
            or any(e.run_id == run_id and e.action == "deploy" for e in current.history)
        ):
            return None
        return run_id, step, "deploy"

    return decide


def deployer(manifest: RunManifest, step: str) -> str:
    """Who deployed: whoever approved the step, else the run's trigger."""
    approvers = [
        a.get("by", "")
        for a in manifest.approvals
        if a.get("step") == step and a.get("decision") == "approve"
    ]
    return approvers[-1] if approvers and approvers[-1] else f"{manifest.trigger.kind} run"


def last_seq(names: Iterable[str]) -> int:
    """The greatest entry number among the names of a pipeline's production entries.

    >>> last_seq(["00000001.json", "00000012.json", "notes.txt"])
    12
    """
    seqs = [int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit()]
    return max(seqs, default=0)
