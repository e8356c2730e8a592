"""Comparing two tables feature by feature: types, the method per feature, thresholds, verdict.

    result = compute("data/reference.csv", "data/latest.csv", ["age", "plan"])
    result.drift_detected, [(f.name, f.score) for f in result.drifted]

`compare` works on tables already read (no I/O but locating an offending line); `compute`
reads the two files first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from engine.adapters import drift_files
from engine.adapters.drift_tables import Column, DataError, Source, Table
from engine.core import drift_stats as stats
from engine.core.suggest import suggest
from engine.errors import UsageError

METHODS = ("auto", "psi", "ks")
DEFAULT_THRESHOLDS: Mapping[str, float] = {"psi": 0.2, "ks": 0.1}
DEFAULT_BINS = 10
THRESHOLD_HINT = "e.g. --threshold 0.25 (every method), or --threshold psi=0.25 --threshold ks=0.1"


@dataclass(frozen=True)
class Settings:
    """How to compare: method (auto, psi, ks), thresholds per statistic, PSI bins, epsilon."""

    method: str = "auto"
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    bins: int = DEFAULT_BINS
    epsilon: float = stats.EPSILON


@dataclass(frozen=True)
class Feature:
    """One feature's drift: its score is the PSI or the KS statistic, as `method` says."""

    name: str
    kind: str  # numeric | categorical
    method: str  # psi | ks
    score: float
    threshold: float
    psi: float
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    binned: stats.Binned | None = None
    by_category: stats.ByCategory | None = None

    @property
    def drifted(self) -> bool:
        return self.score >= self.threshold


@dataclass(frozen=True)
class Side:
    """One of the two files compared: as named, its format and row count."""

    label: str
    format: str
    rows: int


@dataclass(frozen=True)
class Result:
    """Every feature compared, in the order asked for, and the verdict over them."""

    reference: Side
    current: Side
    settings: Settings
    features: list[Feature]

    @property
    def drifted(self) -> list[Feature]:
        return [f for f in self.features if f.drifted]

    @property
    def drift_detected(self) -> bool:
        return any(f.drifted for f in self.features)

    @property
    def drift_score(self) -> float:
        return max((f.score for f in self.features), default=0.0)


def split_features(values: Sequence[str]) -> list[str]:
    """`--features a,b --features c` -> [a, b, c]: commas split, blanks and repeats dropped."""
    names: list[str] = []
    for value in values:
        for part in value.split(","):
            name = part.strip()
            if name and name not in names:
                names.append(name)
    if values and not names:
        raise UsageError("--features names no column", hint="e.g. --features age,income")
    return names


def parse_thresholds(values: Sequence[str]) -> dict[str, float]:
    """`--threshold X` (every method) and/or `--threshold psi=X` / `ks=Y` -> {psi, ks}.

    A per-method value wins over a bare one whatever the order.
    """
    shared: float | None = None
    specific: dict[str, float] = {}
    for text in values:
        key, _, number = text.rpartition("=")
        key = key.strip().lower()
        try:
            value = float(number)
        except ValueError:
            raise UsageError(f"--threshold {text!r}: not a number", hint=THRESHOLD_HINT) from None
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"--threshold {text!r}: must be a positive number")
        if key and key not in DEFAULT_THRESHOLDS:
            raise UsageError(
                f"--threshold {text!r}: unknown statistic {key!r}; use psi or ks",
                hint=THRESHOLD_HINT,
            )
        if (key and key in specific) or (not key and shared is not None):
            raise UsageError(f"--threshold {text!r}: given twice", hint=THRESHOLD_HINT)
        if key:
            specific[key] = value
        else:
            shared = value
    result = (
        dict.fromkeys(DEFAULT_THRESHOLDS, shared)
        if shared is not None
        else dict(DEFAULT_THRESHOLDS)
    )
    return {**result, **specific}


def resolve_features(
    requested: Sequence[str], reference: tuple[Source, list[str]], current: tuple[Source, list[str]]
) -> list[str]:
    """The features to compare (default: every column of the reference), each checked to be
    in both files."""
    names = list(requested) or list(reference[1])
    for src, header in (reference, current):
        missing = [name for name in names if name not in header]
        if missing:
            name = missing[0]
            shown = ", ".join(header[:12]) + (", ..." if len(header) > 12 else "")
            where = "" if requested else " (the features default to the reference's columns)"
            raise DataError(
                src.label,
                f"has no column {name!r}{suggest(name, header)}{where}",
                hint=f"its columns: {shown}; choose the features with --features",
            )
    return names


def compare(
    reference: Table, current: Table, names: Sequence[str], settings: Settings | None = None
) -> Result:
    """Drift of each feature in `names` from `reference` to `current`."""
    settings = settings or Settings()
    if settings.method not in METHODS:
        raise UsageError(f"unknown method {settings.method!r}; use auto, psi or ks")
    kinds = {name: _kind(name, reference, current) for name in names}
    for name, kind in kinds.items():
        if kind == "categorical" and settings.method == "ks":
            raise DataError(
                reference.source.label,
                "holds text (categories); KS needs numbers",
                column=name,
                hint="use --method auto (KS for numbers, PSI for categories) or --method psi",
            )
        if kind == "numeric":
            _refuse_constant(reference, name, names)

    def one(name: str) -> Feature:
        ref, cur = reference.columns[name], current.columns[name]
        if kinds[name] == "numeric":
            return _numeric(name, ref, cur, settings)
        return _categorical(name, ref, cur, settings)

    # numpy's sort and searches release the GIL: features run side by side on each core.
    with ThreadPoolExecutor(max_workers=min(len(names), os.cpu_count() or 1) or 1) as pool:
        features = list(pool.map(one, names))
    return Result(_side(reference), _side(current), settings, features)


def compute(
    reference: str,
    current: str,
    features: Sequence[str] = (),
    settings: Settings | None = None,
    *,
    use_pyarrow: bool | None = None,
) -> Result:
    """Read both files (pyarrow when installed, unless `use_pyarrow` says otherwise), compare."""
    fast = drift_files.have_pyarrow() if use_pyarrow is None else use_pyarrow
    ref_src, cur_src = drift_files.source(reference), drift_files.source(current)
    ref_header = drift_files.read_header(ref_src, use_pyarrow=fast)
    cur_header = drift_files.read_header(cur_src, use_pyarrow=fast)
    names = resolve_features(features, (ref_src, ref_header), (cur_src, cur_header))
    ref_table = drift_files.read_table(ref_src, names, use_pyarrow=fast)
    cur_table = drift_files.read_table(cur_src, names, use_pyarrow=fast)
    return compare(ref_table, cur_table, names, settings)


def _side(table: Table) -> Side:
    return Side(table.source.label, table.source.format, table.rows)


def _kind(name: str, reference: Table, current: Table) -> str:
    ref, cur = reference.columns[name], current.columns[name]
    if ref.numbers is not None and cur.numbers is not None:
        return "numeric"
    if ref.numbers is None and cur.numbers is None:
        return "categorical"
    text, numeric = (reference, current) if ref.numbers is None else (current, reference)
    first = text.columns[name].first_text
    assert first is not None
    row, value = first
    raise DataError(
        text.source.where(row),
        f"{value!r} is not a number, but every value of this column in {numeric.source.label} is",
        column=name,
        hint="fix the value (or the column in the other file), or leave the column out "
        "with --features",
    )


def _refuse_constant(reference: Table, name: str, names: Sequence[str]) -> None:
    values = reference.columns[name].numbers
    assert values is not None
    low, high = float(np.min(values)), float(np.max(values))
    if low == high:
        rest = ",".join(n for n in names if n != name)
        raise DataError(
            reference.source.label,
            f"every value is {low:g}: a constant feature has no quantile bins and no KS test",
            column=name,
            hint=f"leave it out: --features {rest}" if rest else "compare another column",
        )


def _numeric(name: str, ref: Column, cur: Column, settings: Settings) -> Feature:
    assert ref.numbers is not None and cur.numbers is not None
    ref_sorted, cur_sorted = np.sort(ref.numbers), np.sort(cur.numbers)
    binned = stats.numeric_psi(ref_sorted, cur_sorted, settings.bins, settings.epsilon)
    d = stats.ks_statistic(ref_sorted, cur_sorted)
    p = stats.ks_pvalue(d, ref_sorted.size, cur_sorted.size)
    method = "psi" if settings.method == "psi" else "ks"
    score = binned.psi if method == "psi" else d
    threshold = settings.thresholds[method]
    return Feature(name, "numeric", method, score, threshold, binned.psi, d, p, binned=binned)


def _categorical(name: str, ref: Column, cur: Column, settings: Settings) -> Feature:
    assert ref.counts is not None and cur.counts is not None
    found = stats.categorical_psi(ref.counts, cur.counts, settings.epsilon)
    threshold = settings.thresholds["psi"]
    return Feature(name, "categorical", "psi", found.psi, threshold, found.psi, by_category=found)
