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

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.core.expression_eval import holds
from engine.core.expressions import parse
from engine.core.manifest import RunManifest, StepStatus
from engine.core.parse import LoadedPipeline
from engine.core.spec import DriftSpec

_COUNTED = (StepStatus.succeeded, StepStatus.cached)
MAX_RECORDED_METRICS = 4096  # bytes of metrics JSON kept with a signal or a drift run


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


def holds_over(spec: DriftSpec, metrics: Mapping[str, Any] | None) -> bool:
    """Whether the binding's `when` holds over a signal's metrics (none: counts as drift).

    Raises ExpressionError when it cannot be evaluated over them.
    """
    return metrics is None or holds(parse(spec.when), {"metrics": dict(metrics)})


def bounded(metrics: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Metrics to record with a signal or a drift run: all when small, else the headline ones."""
    if metrics is None:
        return None
    if len(json.dumps(metrics, default=str)) <= MAX_RECORDED_METRICS:
        return dict(metrics)
    keep = ("drift_detected", "drift_score", "drifted_features", "features")
    return {k: metrics[k] for k in keep if k in metrics}


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
    if not checked and not holds_over(spec, metrics):
        return Verdict(False, False, f"{spec.when} does not hold")
    held = f"{spec.when} holds" if checked or metrics is not None else "a signal without metrics"
    if last_fired_at is not None:
        until = last_fired_at + timedelta(seconds=spec.cooldown)
        if now < until:
            return Verdict(False, True, f"{held}, but the cooldown runs until {_iso(until)}", until)
    return Verdict(True, False, held, now + timedelta(seconds=spec.cooldown))


def _iso(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
