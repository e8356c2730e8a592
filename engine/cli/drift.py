"""`sluice drift ...`: data drift between a reference and a current data set."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from engine.cli import drift_signals
from engine.cli.common import CONTEXT

DEFAULT_OUT = "drift-report"


@click.group("drift", context_settings=CONTEXT)
def command() -> None:
    """Measure data drift; the metrics it writes can start retraining.

    \b
    Examples:
      sluice drift compute --reference data/reference.csv --current data/latest.csv
      sluice drift compute --reference ref.parquet --current new.parquet --features age,plan

    Docs: docs/drift.md
    """


@command.command("compute", context_settings=CONTEXT)
@click.option("--reference", required=True, metavar="PATH", help="The baseline: .csv or .parquet.")
@click.option(
    "--current", required=True, metavar="PATH", help="The data to check: .csv or .parquet."
)
@click.option(
    "--features",
    multiple=True,
    metavar="NAME[,NAME...]",
    help="Columns to compare (repeatable, comma-separated; default: every reference column).",
)
@click.option(
    "--method",
    type=click.Choice(["auto", "psi", "ks"]),
    default="auto",
    show_default=True,
    help="auto: KS for numbers, PSI for categories; psi: PSI for all; ks: KS (numbers only).",
)
@click.option(
    "--threshold",
    "thresholds",
    multiple=True,
    metavar="X|psi=X|ks=Y",
    help="A feature drifts when its score >= this (default: psi=0.2, ks=0.1; KS on D).",
)
@click.option(
    "--bins",
    type=click.IntRange(2, 1000),
    default=10,
    show_default=True,
    help="Quantile bins of numeric PSI.",
)
@click.option(
    "--out",
    metavar="DIR",
    help=f"Where the report goes (default: $SLUICE_OUTPUTS, else ./{DEFAULT_OUT}).",
)
@click.option("--fail-on-drift", is_flag=True, help="Exit 1 when any feature drifted.")
@click.option("--json", "as_json", is_flag=True, help="Print drift.json on stdout.")
def compute(
    reference: str,
    current: str,
    features: tuple[str, ...],
    method: str,
    thresholds: tuple[str, ...],
    bins: int,
    out: str | None,
    fail_on_drift: bool,
    as_json: bool,
) -> None:
    """Per-feature drift from a reference data set to a current one.

    \b
    Writes, into --out: metrics.json (flat: drift_detected, drift_score,
    drifted_features, features, feature_<name> = score; for `when` expressions),
    drift.json (every statistic) and report.md. Numeric features get PSI and KS,
    categorical ones PSI; the method picks which one scores.
    Exits 0 whether or not drift is found (1 with --fail-on-drift and drift),
    2 when an input is wrong.

    \b
    Examples:
      sluice drift compute --reference data/reference.csv --current data/latest.csv
      sluice drift compute --reference ref.parquet --current new.parquet \\
          --features age,income --method psi --threshold 0.25 --fail-on-drift
      sluice drift compute --reference a.csv --current b.csv --threshold ks=0.05 --json

    \b
    In a monitor step (SLUICE_OUTPUTS is set there, so the metrics are recorded):
      run: sluice drift compute --reference data/reference.csv --current data/latest.csv
    """
    from engine.app import drift_report as report  # lazy: numpy/pyarrow, only for drift
    from engine.app.drift_compute import (  # lazy: as above
        Settings,
        parse_thresholds,
        split_features,
    )
    from engine.app.drift_compute import compute as run_compute  # lazy: as above

    settings = Settings(method=method, thresholds=parse_thresholds(thresholds), bins=bins)
    result = run_compute(reference, current, split_features(features), settings)
    folder = Path(out or os.environ.get("SLUICE_OUTPUTS") or DEFAULT_OUT)
    written = report.write(result, folder)
    if as_json:
        click.echo(json.dumps(report.details(result), indent=2))
    else:
        for line in report.summary(result):
            click.echo(line)
    click.echo(f"sluice: wrote {', '.join(str(p) for p in written)}", err=True)
    if fail_on_drift and result.drift_detected:
        raise click.exceptions.Exit(1)


# `sluice drift signals` lives in its own module (the results branch, not the data).
command.add_command(drift_signals.command)
