"""Drift signals -> the bound runs they start, at most one per cooldown (pure; the clock is passed in).

A monitor is an ordinary pipeline whose steps write drift metrics. When one of its runs
ends, every pipeline with a `drift: {monitor: <it>}` trigger whose `when` holds over the
run's metrics is due, unless that binding fired less than `cooldown` ago: then the signal
is suppressed. The same rule applies to a `sluice-drift` repository_dispatch from outside.

    due = bindings(pipelines, "churn-drift")
    verdict = decide(due[0].spec, metrics, last_fired_at, now)
    # Verdict(fires=True, reason="metrics.drift_detected holds", until=now + 6h)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.expressions import holds, parse
from engine.loader import LoadedPipeline
from engine.manifest import RunManifest, StepStatus
from engine.spec import DriftSpec

_COUNTED = (StepStatus.succeeded, StepStatus.cached)


@dataclass(frozen=True)
class Binding:
    """A pipeline that runs when `spec.monitor` signals drift."""

    loaded: LoadedPipeline
    spec: DriftSpec

    @property
    def pipeline(self) -> str:
        return self.loaded.name


@dataclass(frozen=True)
class Verdict:
    """What one signal does to one binding: start a run, or nothing (and why)."""

    fires: bool
    suppressed: bool  # the condition held, but the binding is cooling down
    reason: str
    until: datetime | None = None  # the end of the cooldown this signal starts or meets


def bindings(pipelines: Sequence[LoadedPipeline], monitor: str) -> list[Binding]:
    """Pipelines bound to `monitor`, in pipeline order; two bindings to one monitor count once.

    A monitor bound to itself is left out: its own signal would start it again forever.
    """
    found = []
    for loaded in pipelines:
        if loaded.name == monitor:
            continue
        spec = next(
            (t.drift for t in loaded.pipeline.triggers if t.drift and t.drift.monitor == monitor),
            None,
        )
        if spec is not None:
            found.append(Binding(loaded, spec))
    return found


def monitor_metrics(manifest: RunManifest) -> dict[str, Any]:
    """The metrics a monitor run signals with: every succeeded step's, later steps winning."""
    merged: dict[str, Any] = {}
    for record in manifest.steps.values():
        if record.status in _COUNTED:
            merged.update(record.metrics)
    return merged


def decide(
    spec: DriftSpec,
    metrics: Mapping[str, Any] | None,
    last_fired_at: datetime | None,
    now: datetime,
    *,
    checked: bool = False,
) -> Verdict:
    """Whether a signal starts the bound pipeline now.

    `metrics` None: a signal without metrics (an external monitor that sent none) counts as
    drift detected. `checked`: the caller already found that `when` holds. Raises
    ExpressionError when `when` cannot be evaluated over the metrics.
    """
    if checked or metrics is None:
        held = f"{spec.when} holds" if checked else "a signal without metrics"
    elif holds(parse(spec.when), {"metrics": dict(metrics)}):
        held = f"{spec.when} holds"
    else:
        return Verdict(False, False, f"{spec.when} does not hold")
    if last_fired_at is not None:
        until = last_fired_at + timedelta(seconds=spec.cooldown)
        if now < until:
            return Verdict(False, True, f"{held}, but the cooldown runs until {_iso(until)}", until)
    return Verdict(True, False, held, now + timedelta(seconds=spec.cooldown))


def _iso(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
