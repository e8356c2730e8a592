"""Validate data: schema, nulls, row counts and label balance of the ingested batch.

config: schema (path of data/schema.json: features, label, labels), min_rows (train.csv),
        min_holdout_rows, max_null_fraction, min_positive_fraction, max_positive_fraction
        (the share of label 1 allowed in each file).
outputs: report.md (a table: one line per check), report.json, metrics.json.
Every check runs, the report is printed, and the step exits 1 when any check failed, so
that nothing trains on bad data (train needs this step).
"""

from __future__ import annotations

from pathlib import Path

from common import (
    config,
    fail,
    input_file,
    log,
    need,
    output_file,
    read_json,
    write_json,
    write_metrics,
)


def main() -> None:
    cfg = config()
    schema = read_json(Path(need(cfg, "schema", str)))
    label, labels = schema["label"], set(schema["labels"])
    expected = [*schema["features"], label]
    limits = {
        "min_rows": need(cfg, "min_rows", int),
        "min_holdout_rows": need(cfg, "min_holdout_rows", int),
        "max_null_fraction": need(cfg, "max_null_fraction", float),
        "min_positive_fraction": need(cfg, "min_positive_fraction", float),
        "max_positive_fraction": need(cfg, "max_positive_fraction", float),
    }

    import pandas as pd

    checks: list[dict[str, object]] = []

    def check(name: str, passed: bool, detail: str) -> None:
        checks.append({"check": name, "passed": bool(passed), "detail": detail})

    worst_nulls, fractions = 0.0, {}
    for name, min_rows in (("train.csv", "min_rows"), ("holdout.csv", "min_holdout_rows")):
        frame = pd.read_csv(input_file("ingest", name))
        missing = [c for c in expected if c not in frame.columns]
        extra = [c for c in frame.columns if c not in expected]
        check(
            f"{name}: schema",
            not missing and not extra,
            f"{len(expected)} columns as in the schema"
            if not missing and not extra
            else f"missing {missing or 'none'}; unexpected {extra or 'none'}",
        )
        if missing:
            continue  # the other checks would only repeat it
        non_numeric = [c for c in expected if not pd.api.types.is_numeric_dtype(frame[c])]
        check(
            f"{name}: types",
            not non_numeric,
            f"not numeric: {', '.join(non_numeric)}" if non_numeric else "all numeric",
        )
        nulls = float(frame[expected].isna().to_numpy().mean()) if len(frame) else 0.0
        worst_nulls = max(worst_nulls, nulls)
        check(
            f"{name}: nulls",
            nulls <= limits["max_null_fraction"],
            f"null fraction {nulls:.4f} (at most {limits['max_null_fraction']})",
        )
        check(
            f"{name}: rows",
            len(frame) >= limits[min_rows],
            f"{len(frame)} rows (at least {limits[min_rows]})",
        )
        unknown = sorted(set(frame[label].dropna().unique()) - labels)
        positive = float((frame[label] == 1).mean()) if len(frame) else 0.0
        fractions[name] = positive
        low, high = limits["min_positive_fraction"], limits["max_positive_fraction"]
        check(
            f"{name}: label balance",
            not unknown and low <= positive <= high,
            f"{positive:.1%} label 1 (allowed {low:.0%} to {high:.0%})"
            + (f"; unknown labels {unknown}" if unknown else ""),
        )

    failed = [c for c in checks if not c["passed"]]
    rows = "\n".join(
        f"| {'PASS' if c['passed'] else 'FAIL'} | {c['check']} | {c['detail']} |" for c in checks
    )
    verdict = f"{len(failed)} of {len(checks)} checks failed" if failed else "all checks passed"
    output_file("report.md").write_text(
        f"# Data validation: {verdict}\n\n| result | check | detail |\n| --- | --- | --- |\n{rows}\n"
    )
    write_json("report.json", {"passed": not failed, "checks": checks})
    for c in checks:
        log(f"{'PASS' if c['passed'] else 'FAIL'}  {c['check']:<28}  {c['detail']}")
    write_metrics(
        {
            "checks": len(checks),
            "checks_failed": len(failed),
            "null_fraction": worst_nulls,
            "positive_fraction": fractions.get("train.csv", 0.0),
        }
    )
    if failed:
        fail(f"data validation: {verdict}: " + "; ".join(str(c["check"]) for c in failed))
    log(f"data validation: {verdict}")


if __name__ == "__main__":
    main()
