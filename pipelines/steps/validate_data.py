"""Validate data: schema, nulls, size and label balance of an upstream `data.csv`.

config: source (the step whose data.csv to check, default ingest), dataset (expected
        columns are that data set's features + `label`) or expected_columns (a list),
        label (default target), min_rows, max_null_fraction, min_positive_fraction,
        max_positive_fraction (share of rows whose label is 1).
outputs: report.json, metrics.json (rows, null_fraction, positive_fraction, checks_failed).
Exits 1, after printing the report, when any check fails.
"""

from __future__ import annotations

from common import config, fail, input_file, log, setting, write_json, write_metrics


def expected_columns(cfg: dict, label: str) -> list[str]:
    if cfg.get("expected_columns"):
        return [str(c) for c in cfg["expected_columns"]]
    import sklearn.datasets

    dataset = setting(cfg, "dataset", str)
    bunch = getattr(sklearn.datasets, f"load_{dataset}", None)
    if bunch is None:
        fail(f"unknown dataset {dataset!r}: give expected_columns instead")
    return [*bunch().feature_names, label]


def main() -> None:
    cfg = config()
    source = setting(cfg, "source", str, "ingest")
    label = setting(cfg, "label", str, "target")
    min_rows = setting(cfg, "min_rows", int, 1)
    max_null = setting(cfg, "max_null_fraction", float, 0.0)
    min_pos = setting(cfg, "min_positive_fraction", float, 0.0)
    max_pos = setting(cfg, "max_positive_fraction", float, 1.0)

    import pandas as pd

    frame = pd.read_csv(input_file(source, "data.csv"))
    expected = expected_columns(cfg, label)
    log(f"checking {len(frame)} rows x {frame.shape[1]} columns from {source}/data.csv")

    checks: list[dict] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "passed": bool(ok), "detail": detail})

    missing = [c for c in expected if c not in frame.columns]
    extra = [c for c in frame.columns if c not in expected]
    check(
        "schema",
        not missing and not extra,
        f"{len(expected)} expected columns"
        + (f"; missing: {', '.join(missing)}" if missing else "")
        + (f"; unexpected: {', '.join(extra)}" if extra else ""),
    )
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    check(
        "numeric",
        not non_numeric,
        "all columns numeric" if not non_numeric else f"not numeric: {', '.join(non_numeric)}",
    )

    cells = frame.size or 1
    null_fraction = float(frame.isna().sum().sum()) / cells
    check("nulls", null_fraction <= max_null, f"null fraction {null_fraction:.4g} (max {max_null})")
    check("min_rows", len(frame) >= min_rows, f"{len(frame)} rows (min {min_rows})")

    positive_fraction = (
        float((frame[label] == 1).mean()) if label in frame.columns and len(frame) else 0.0
    )
    check(
        "label_balance",
        min_pos <= positive_fraction <= max_pos,
        f"positive fraction {positive_fraction:.3f} (allowed {min_pos}..{max_pos})",
    )

    failed = [c for c in checks if not c["passed"]]
    width = max(len(c["check"]) for c in checks)
    for c in checks:
        log(f"{'PASS' if c['passed'] else 'FAIL'}  {c['check']:<{width}}  {c['detail']}")
    write_json(
        "report.json", {"source": f"{source}/data.csv", "passed": not failed, "checks": checks}
    )
    write_metrics(
        {
            "rows": len(frame),
            "null_fraction": null_fraction,
            "positive_fraction": positive_fraction,
            "checks_failed": len(failed),
        }
    )
    if failed:
        names = ", ".join(c["check"] for c in failed)
        fail(f"{len(failed)} of {len(checks)} data checks failed: {names}")
    log(f"all {len(checks)} data checks passed")


if __name__ == "__main__":
    main()
