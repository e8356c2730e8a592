"""Fan-out steps in a run (engine.core.fanout): the run's expanded pipeline, a group's fan-in
index, the inputs of a step that needs a group, and the limits on a group's instances
(`max_parallel`, `fail_fast`). The executor applies what this module decides."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.core import fanout, fingerprint
from engine.core.expand import expand
from engine.core.manifest import (
    DONE_OK,
    TERMINAL,
    ArtifactPointer,
    RunManifest,
    StepRecord,
    StepStatus,
)
from engine.core.parse import LoadedPipeline
from engine.core.spec import ResolvedStep
from engine.ports import ArtifactStore
from engine.run.options import RunOptions

INDEX = "index.json"  # a group's one output: its fan-in index
GONE = "no longer in the pipeline file"


def expanded(loaded: LoadedPipeline, options: RunOptions) -> LoadedPipeline:
    """The run's pipeline: fan-out steps expanded for its params (a resumed run: the paused
    run's own; a retry: the retried run's, which app/runs.py passes as `options.params`).

    Raises FanOutError (exit 2) before anything runs when the params make a fan-out empty,
    too big, or give `run` a value it cannot take."""
    params = options.resume.params if options.resume is not None else options.params
    return expand(loaded, params)


def record_fields(step: ResolvedStep) -> dict[str, Any]:
    """What a step's manifest record says of its fan-out (nothing for a plain step)."""
    return {
        "instance_of": step.instance_of,
        "matrix": dict(step.matrix) if step.instance_of else None,
        "instances": list(step.instances),
    }


def line_up(manifest: RunManifest, steps: Sequence[ResolvedStep]) -> None:
    """A resumed run's records made to match its expanded steps: a step new to the file
    pends, and a record of a step the file lost, not finished, is cancelled (it cannot run)."""
    known = {step.name for step in steps}
    for step in steps:
        if step.name not in manifest.steps:
            manifest.steps[step.name] = StepRecord(
                type=step.type.value,
                image=step.image if isinstance(step.image, str) else "build",
                needs=list(step.needs),
                is_finally=step.is_finally,
                **record_fields(step),
            )
    for name, record in manifest.steps.items():
        if name not in known and record.status not in TERMINAL:
            record.status, record.reason = StepStatus.cancelled, GONE


# ---- a group settles ------------------------------------------------------------------------


def index_bytes(group: ResolvedStep, records: Mapping[str, StepRecord]) -> bytes:
    """The fan-in index as `/sluice/inputs/<group>/index.json` holds it."""
    return (json.dumps(fanout.index(group, records), indent=2) + "\n").encode()


def store_index(
    group: ResolvedStep, records: Mapping[str, StepRecord], store: ArtifactStore, work: Path
) -> ArtifactPointer:
    """Write the group's index to the artifact store (through a file under `work`)."""
    path = work / group.name / INDEX
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(index_bytes(group, records))
    return store.put_file(path)


# ---- fan-in ---------------------------------------------------------------------------------


def inputs(
    step: ResolvedStep, steps: Mapping[str, ResolvedStep], records: Mapping[str, StepRecord]
) -> dict[str, dict[str, ArtifactPointer]]:
    """Folder under /sluice/inputs -> the outputs put there, for each need that succeeded
    (or was cached). A group gives `<group>` (its index.json) and `<group>/<instance>` for
    each of its instances that succeeded or was cached."""
    given: dict[str, dict[str, ArtifactPointer]] = {}
    for dep in step.needs:
        record = records[dep]
        if record.status not in DONE_OK:
            continue
        given[dep] = dict(record.outputs)
        need = steps.get(dep)
        for instance in need.instances if need is not None else ():
            done = records.get(instance)
            if done is not None and done.status in DONE_OK:
                given[f"{dep}/{instance}"] = dict(done.outputs)
    return given


def _index_digest(group: ResolvedStep, records: Mapping[str, StepRecord]) -> str:
    """The index as a cache key sees it: `cached` counts as `succeeded`, so that a step
    after a sweep taken from the cache keeps its key."""
    entries = fanout.index(group, records)
    for entry in entries:
        if entry["status"] == StepStatus.cached.value:
            entry["status"] = StepStatus.succeeded.value
    return fingerprint.digest(entries)


def digests(
    step: ResolvedStep,
    given: Mapping[str, Mapping[str, ArtifactPointer]],
    steps: Mapping[str, ResolvedStep],
    records: Mapping[str, StepRecord],
) -> dict[str, dict[str, str]]:
    """What the cache key of `step` sees of its inputs: each file's sha256; a group's
    index by its content (statuses, values, metrics), every instance's outputs by theirs."""
    found = {key: {p: o.sha256 for p, o in outs.items()} for key, outs in given.items()}
    for dep in step.needs:
        need = steps.get(dep)
        if need is not None and need.is_group and dep in found:
            found[dep] = {INDEX: _index_digest(need, records)}
    return found


# ---- limits on a group's instances ----------------------------------------------------------


def may_start(name: str, running: set[str], steps: Mapping[str, ResolvedStep]) -> bool:
    """Whether the group of instance `name` has room for it (`max_parallel`)."""
    group = steps[name].instance_of
    spec = steps[group].fanout if group is not None else None
    if spec is None or spec.max_parallel is None:
        return True
    busy = sum(1 for other in running if steps[other].instance_of == group)
    return busy < spec.max_parallel


def halted(name: str, steps: Mapping[str, ResolvedStep], records: Mapping[str, StepRecord]) -> bool:
    """Whether `name` is an instance of a group that `fail_fast` stopped: its failures
    exceed what it allows, so no instance of it is tried again."""
    group = steps[name].instance_of
    if group is None:
        return False
    spec = steps[group]
    return fanout.should_stop(spec, {i: records[i].status for i in spec.instances})


def to_cancel(
    name: str, steps: Mapping[str, ResolvedStep], records: Mapping[str, StepRecord]
) -> tuple[list[str], list[str], str]:
    """`fail_fast`: once instance `name` failed and its group's failures exceed what it
    allows, (the group's instances not running: pending, or waiting to be tried again,
    which are cancelled now; those running, which are stopped and end cancelled; why)."""
    if not halted(name, steps, records):
        return [], [], ""
    group = steps[name].instance_of
    assert group is not None
    waiting: list[str] = []
    running: list[str] = []
    for other in steps[group].instances:
        record = records[other]
        if record.status is StepStatus.pending:
            waiting.append(other)
        elif record.status is StepStatus.running and record.attempts:
            # an attempt that ended, not yet tried again, is waiting; else it runs
            ended = record.attempts[-1].outcome is not None
            (waiting if ended else running).append(other)
    return waiting, running, f"fail_fast: {name} failed"


def explain_group(
    group: ResolvedStep, runs: set[str], records: dict[str, StepRecord]
) -> tuple[str, bool, str]:
    """`--dry-run`'s verdict on a group: cached when none of its instances runs (`runs`:
    the steps that would run; the group joins them when one of its instances does)."""
    count = len(group.instances)
    ran = [name for name in group.instances if name in runs]
    if ran:
        runs.add(group.name)
        return group.name, False, f"{len(ran)} of its {count} instances run"
    # what a step after it sees: the sweep taken from the cache, as the run will settle it
    records[group.name].status = StepStatus.cached
    return group.name, True, f"all {count} instances cached"


def judged(records: Mapping[str, StepRecord]) -> list[StepStatus]:
    """The statuses a run's own status follows from: an instance whose group succeeded
    counts as its group does (a failure the group allows does not fail the run)."""
    return [
        record.status
        for record in records.values()
        if record.instance_of is None
        or (group := records.get(record.instance_of)) is None
        or group.status not in DONE_OK
    ]
