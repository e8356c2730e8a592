"""The simulated data source: dated batches of breast cancer records that can drift.

It stands in for the table or bucket a real ingest step reads, so that the example
downloads nothing. A batch is a sample of scikit-learn's bundled Wisconsin breast cancer
data set (569 records, 30 numeric features, label `target`: 1 benign, 0 malignant), drawn
without replacement with a seed made from the batch's date, plus a little measurement
noise. `data/world.json` is the state of the world: which date's batch is the latest,
and, from given dates on, how far features have moved (in standard deviations of the
original data). Edit it (and commit) to make new data arrive.

Replace this module with a query of your own data; keep the steps' outputs the same.
"""

from __future__ import annotations

from datetime import date as Date
from pathlib import Path
from typing import Any

from common import fail, read_json

LABEL = "target"


def world(path: Path) -> dict[str, Any]:
    """data/world.json, checked: latest_batch, batch_rows, noise, drift."""
    state = read_json(path)
    if not isinstance(state, dict):
        fail(f"{path} must hold a JSON object")
    checks = {
        "latest_batch": isinstance(state.get("latest_batch"), str),
        "batch_rows": type(state.get("batch_rows")) is int,
        "noise": type(state.get("noise")) in (int, float),
    }
    for key, ok in checks.items():
        if not ok:
            fail(f"{path}: {key!r} is missing or has the wrong type ({state.get(key)!r})")
    drift = state.setdefault("drift", {})
    if not isinstance(drift, dict) or not all(
        _is_date(day)
        and isinstance(shift, dict)
        and all(type(v) in (int, float) for v in shift.values())
        for day, shift in drift.items()
    ):
        fail(
            f"{path}: 'drift' maps dates to shifts, e.g. "
            '{"2026-11-25": {"worst area": 1.0}} (feature: standard deviations)'
        )
    return state


def _is_date(text: object) -> bool:
    try:
        Date.fromisoformat(str(text))
    except ValueError:
        return False
    return True


def shift_on(state: dict[str, Any], day: str) -> dict[str, float]:
    """The shift in force on `day`: the latest `drift` entry dated on or before it."""
    since = [d for d in state["drift"] if Date.fromisoformat(d) <= Date.fromisoformat(day)]
    return dict(state["drift"][max(since)]) if since else {}


def batch_date(wanted: str | None, scheduled_for: str | None, state: dict[str, Any]) -> str:
    """Which batch to read: the `date` param, else the cron slot's day, else the latest."""
    for candidate in (wanted, (scheduled_for or "")[:10], state["latest_batch"]):
        if candidate:
            try:
                return Date.fromisoformat(candidate).isoformat()
            except ValueError:
                fail(f"batch date {candidate!r} is not a date like 2026-11-24")
    fail("no batch date")  # unreachable: world() checked latest_batch


def draw(day: str, state: dict[str, Any]) -> Any:
    """The batch of `day`: `batch_rows` records with noise, drifted as on that day."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    rows, noise, shift = state["batch_rows"], float(state["noise"]), shift_on(state, day)
    frame = load_breast_cancer(as_frame=True).frame
    features = [c for c in frame.columns if c != LABEL]
    unknown = sorted(set(shift) - set(features))
    if unknown:
        fail(f"world.json shifts unknown features: {', '.join(unknown)}")
    if not 0 < rows <= len(frame):
        fail(f"batch_rows must be between 1 and {len(frame)}, got {rows}")
    rng = np.random.default_rng(int(day.replace("-", "")))  # same date, same batch
    batch = frame.iloc[np.sort(rng.choice(len(frame), size=rows, replace=False))]
    batch = batch.reset_index(drop=True)
    spread = frame[features].std()
    values = batch[features] + rng.normal(size=(rows, len(features))) * (noise * spread).to_numpy()
    values = values.clip(lower=0.0)  # every feature is a non-negative measurement
    for name, stds in shift.items():
        values[name] = values[name] + stds * spread[name]
    values[LABEL] = batch[LABEL].to_numpy()
    return values
