"""Deploy: package the evaluated model as this run's release.

Sluice runs this step only when its `when` gate holds. Its outputs (model.pkl,
model_card.md, deployment.json) are the release: the run whose deploy step succeeded
becomes the pipeline's production baseline, which the next run's gate compares against.

config: model_name, data_description, source (step with model.pkl, default train),
        evaluation (step with metrics.json, default evaluate), require_approval (recorded
        in the release).
outputs: model.pkl, model_card.md, deployment.json, metrics.json (deployed, accuracy,
         improvement over the baseline's accuracy, 0 when there is no baseline).
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime

from common import (
    CONFIG,
    config,
    input_file,
    log,
    output_file,
    params,
    setting,
    sha256_file,
    write_json,
    write_metrics,
)

BASELINE = CONFIG.parent / "baseline.json"  # the production run's manifest, when there is one


def baseline_accuracy(evaluation: str) -> tuple[str | None, float | None]:
    if not BASELINE.is_file():
        return None, None
    manifest = json.loads(BASELINE.read_text())
    metrics = manifest.get("steps", {}).get(evaluation, {}).get("metrics", {})
    return manifest.get("run_id"), metrics.get("accuracy")


def main() -> None:
    cfg = config()
    model_name = setting(cfg, "model_name", str)
    source = setting(cfg, "source", str, "train")
    evaluation = setting(cfg, "evaluation", str, "evaluate")
    require_approval = setting(cfg, "require_approval", bool, False)
    data = setting(cfg, "data_description", str, "see the pipeline's ingest step")
    run_id = os.environ.get("SLUICE_RUN_ID", "local")
    pipeline = os.environ.get("SLUICE_PIPELINE", "local")

    metrics = json.loads(input_file(evaluation, "metrics.json").read_text())
    model_path = output_file("model.pkl")
    shutil.copyfile(input_file(source, "model.pkl"), model_path)
    digest = sha256_file(model_path)
    baseline_run, baseline_acc = baseline_accuracy(evaluation)
    accuracy = float(metrics["accuracy"])
    improvement = accuracy - baseline_acc if baseline_acc is not None else 0.0
    log(f"releasing {model_name} (sha256 {digest[:12]}), accuracy {accuracy:.4f}")
    if baseline_run:
        log(f"production: run {baseline_run}, accuracy {baseline_acc:.4f} ({improvement:+.4f})")
    else:
        log("no production baseline yet: this becomes the first")

    released_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = {
        "model_name": model_name,
        "model_sha256": digest,
        "pipeline": pipeline,
        "run_id": run_id,
        "released_at": released_at,
        "metrics": metrics,
        "params": params(),
        "baseline_run_id": baseline_run,
        "baseline_accuracy": baseline_acc,
        "require_approval": require_approval,
    }
    write_json("deployment.json", record)

    rows = "\n".join(
        f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in sorted(metrics.items())
    )
    hyper = "\n".join(f"- `{k}`: {json.dumps(v)}" for k, v in sorted(record["params"].items()))
    output_file("model_card.md").write_text(
        f"""# Model card: {model_name}

- Pipeline: `{pipeline}`, run `{run_id}`, released {released_at}
- Artifact: `model.pkl`, sha256 `{digest}`
- Data: {data}
- Previous production run: {baseline_run or "none (first release)"}
- Human approval required by policy: {"yes" if require_approval else "no"}

## Holdout metrics

| metric | value |
| --- | --- |
{rows}

## Params

{hyper or "- (none)"}

## Intended use

A teaching example shipped with Sluice: it shows an evaluation gate and a release,
not a medical device. Do not use it to make clinical decisions.
"""
    )
    write_metrics({"deployed": True, "accuracy": accuracy, "improvement": improvement})


if __name__ == "__main__":
    main()
