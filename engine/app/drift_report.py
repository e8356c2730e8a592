"""What `drift compute` writes: metrics.json (flat), drift.json (details), report.md, a summary."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.app.drift_compute import Feature, Result
from engine.core.suggest import counted
from engine.errors import UsageError

SCHEMA = "sluice/drift/v1"
FILES = ("metrics.json", "drift.json", "report.md")
MAX_CATEGORIES = 1000  # listed in drift.json per feature (PSI always uses them all)
_SUMMARY_KEYS = ("drift_detected", "drift_score", "drifted_features", "features")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def metric_keys(names: Sequence[str]) -> dict[str, str]:
    """Feature name -> its metrics.json key `feature_<name>`, usable in `when` expressions.

    Characters outside [A-Za-z0-9_-] become `_`; a key already taken gets `_2`, `_3`, ...

    >>> metric_keys(["mean radius", "mean_radius"])
    {'mean radius': 'feature_mean_radius', 'mean_radius': 'feature_mean_radius_2'}
    """
    keys: dict[str, str] = {}
    taken = set(_SUMMARY_KEYS)
    for name in names:
        base = "feature_" + _UNSAFE.sub("_", name)
        key, suffix = base, 2
        while key in taken:
            key, suffix = f"{base}_{suffix}", suffix + 1
        taken.add(key)
        keys[name] = key
    return keys


def metrics(result: Result) -> dict[str, bool | int | float]:
    """The flat metrics.json: the verdict, then one score per feature."""
    flat: dict[str, bool | int | float] = {
        "drift_detected": result.drift_detected,
        "drift_score": result.drift_score,
        "drifted_features": len(result.drifted),
        "features": len(result.features),
    }
    keys = metric_keys([f.name for f in result.features])
    flat.update({keys[f.name]: f.score for f in result.features})
    return flat


def details(result: Result) -> dict[str, Any]:
    """drift.json: settings, both files, the verdict and every feature's statistics."""
    settings = result.settings
    keys = metric_keys([f.name for f in result.features])
    return {
        "schema": SCHEMA,
        "reference": _side(result.reference),
        "current": _side(result.current),
        "method": settings.method,
        "thresholds": dict(settings.thresholds),
        "epsilon": settings.epsilon,
        "bins": settings.bins,
        "drift_detected": result.drift_detected,
        "drift_score": result.drift_score,
        "drifted_features": [f.name for f in result.drifted],
        "features": {f.name: _feature(f, keys[f.name]) for f in result.features},
    }


def _side(side: Any) -> dict[str, Any]:
    return {"path": side.label, "format": side.format, "rows": side.rows}


def _feature(feature: Feature, key: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": feature.kind,
        "method": feature.method,
        "score": feature.score,
        "threshold": feature.threshold,
        "drifted": feature.drifted,
        "metric": key,
        "psi": feature.psi,
        "ks_statistic": feature.ks_statistic,
        "ks_pvalue": feature.ks_pvalue,
    }
    if feature.binned is not None:
        edges = [None, *feature.binned.edges.tolist(), None]  # None: open (-inf / +inf)
        entry["bins"] = [
            {"low": low, "high": high, "reference": r, "current": c}
            for low, high, r, c in zip(
                edges[:-1],
                edges[1:],
                feature.binned.reference.tolist(),
                feature.binned.current.tolist(),
                strict=True,
            )
        ]
    if feature.by_category is not None:
        found = feature.by_category
        listed = zip(
            found.categories, found.reference.tolist(), found.current.tolist(), strict=True
        )
        entry["categories"] = [
            {"value": value, "reference": r, "current": c}
            for value, r, c in list(listed)[:MAX_CATEGORIES]
        ]
        entry["categories_total"] = len(found.categories)
    return entry


def verdict(result: Result) -> str:
    """One line: drift or not, how many features, the largest score."""
    total, drifted = len(result.features), result.drifted
    top = max(result.features, key=lambda f: f.score)
    largest = f"largest score {top.score:.4g}: {top.name}"
    if drifted:
        return f"Drift detected in {len(drifted)} of {counted(total, 'feature')} ({largest})"
    return f"No drift in {counted(total, 'feature')} ({largest})"


def _by_score(result: Result) -> list[Feature]:
    return sorted(result.features, key=lambda f: (-f.score, f.name))


def markdown(result: Result) -> str:
    """report.md: the verdict as its title, the settings, a table sorted by score."""
    settings = result.settings
    ref, cur = result.reference, result.current
    thresholds = ", ".join(f"{k} {v:g}" for k, v in settings.thresholds.items())
    lines = [
        f"# {verdict(result)}",
        "",
        f"Reference `{ref.label}` ({ref.rows:,} rows), current `{cur.label}` ({cur.rows:,} rows). "
        f"Method {settings.method}; a feature drifts when its score reaches its threshold "
        f"({thresholds}; KS scores the statistic D). PSI: {settings.bins} quantile bins, "
        f"epsilon {settings.epsilon:g}.",
        "",
        "| feature | type | method | score | threshold | drifted |",
        "| --- | --- | --- | ---: | ---: | --- |",
    ]
    for f in _by_score(result):
        name = f.name.replace("\\", "\\\\").replace("|", "\\|").replace("`", "'")
        mark = "**yes**" if f.drifted else "no"
        lines.append(
            f"| `{name}` | {f.kind} | {f.method} | {f.score:.4f} | {f.threshold:g} | {mark} |"
        )
    return "\n".join(lines) + "\n"


def summary(result: Result) -> list[str]:
    """Plain lines for a terminal or a CI log: the verdict, then an aligned table."""
    rows = [("FEATURE", "TYPE", "METHOD", "SCORE", "THRESHOLD", "DRIFTED")]
    rows += [
        (
            f.name,
            f.kind,
            f.method,
            f"{f.score:.4f}",
            f"{f.threshold:g}",
            "yes" if f.drifted else "no",
        )
        for f in _by_score(result)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [verdict(result)]
    for row in rows:
        cells = [
            cell.rjust(width) if i in (3, 4) else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def write(result: Result, folder: Path) -> list[Path]:
    """Write metrics.json, drift.json and report.md into `folder` (created if needed)."""
    texts = {
        "metrics.json": json.dumps(metrics(result), indent=2) + "\n",
        "drift.json": json.dumps(details(result), indent=2) + "\n",
        "report.md": markdown(result),
    }
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            path = folder / name
            path.write_text(text, encoding="utf-8")
            written.append(path)
    except OSError as exc:
        raise UsageError(
            f"--out {folder}: cannot write the report: {exc.strerror or exc}",
            hint="choose another folder with --out, or set SLUICE_OUTPUTS",
        ) from None
    return written
