"""`sluice diff` and `sluice report`: runs read from the results branch, turned into a RunDiff
or a metrics History (engine.core.run_diff, engine.core.report)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from engine.app.reading import find_run, production_of
from engine.core import names
from engine.core.manifest import RunManifest, RunStatus
from engine.core.metric_goals import Direction, directions
from engine.core.parse import LoadedPipeline
from engine.core.report import History
from engine.core.run_diff import RunDiff, diff_runs
from engine.errors import NotFound, SluiceError
from engine.ports import ResultsBranch

# Runs asked of the branch beyond `last`, so that runs still going (left out) do not shorten
# the history.
_SLACK = 20

Find = Callable[[str], LoadedPipeline]


def pipeline_directions(loaded: LoadedPipeline | None) -> dict[str, Direction]:
    """The metrics' preferred directions the pipeline file states; none without a file."""
    return directions(loaded.pipeline) if loaded is not None else {}


def _current(find: Find, name: str) -> LoadedPipeline | None:
    """The pipeline file of that name as it is now; None when it is gone or does not load
    (a diff or report of old runs still works, without directions)."""
    with contextlib.suppress(SluiceError):
        return find(name)
    return None


def diff(store: ResultsBranch, run_a: str, run_b: str, find: Find) -> RunDiff:
    """Run `run_a` against run `run_b`; NotFound (exit 2) for a run the branch does not hold."""
    a, b = find_run(store, run_a), find_run(store, run_b)
    return diff_runs(a, b, pipeline_directions(_current(find, b.pipeline)))


def history(store: ResultsBranch, pipeline: str, last: int) -> list[RunManifest]:
    """The pipeline's last `last` runs that are not still going, oldest first."""
    found = [m for m in store.runs(pipeline, last + _SLACK) if m.status != RunStatus.running]
    # run ids sort by the second a run started; within one second, by its milliseconds
    return sorted(found, key=lambda m: (m.started_at, m.run_id))[-last:]


def report(
    store: ResultsBranch, ref: str, last: int, find: Find, metric: str | None = None
) -> History:
    """The metrics history of pipeline `ref` (a name or a file's path).

    A name no pipeline file declares still reports when the branch holds its runs (a
    pipeline since deleted); otherwise NotFound, with the file lookup's did-you-mean.
    """
    try:
        loaded: LoadedPipeline | None = find(ref)
    except NotFound:
        if names.problem(ref) is not None or not store.runs(ref, 1):
            raise
        loaded = None
    name = loaded.name if loaded is not None else ref
    runs = history(store, name, last)
    goals = pipeline_directions(loaded)
    if metric is not None:
        keys = {f"{step}.{m}" for run in runs for step, r in run.steps.items() for m in r.metrics}
        if runs and metric not in keys:
            shown = ", ".join(sorted(keys)) or "none"
            raise NotFound(
                f"no run of {name} recorded metric {metric!r}; metrics: {shown}",
                hint="name a metric as <step>.<metric>",
            )
    production = production_of(store, name)
    return History(
        pipeline=name,
        runs=runs,
        directions=goals,
        production=production.run_id if production is not None else None,
        metric=metric,
        asked=last,
    )
