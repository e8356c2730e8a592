"""Deploy: release the evaluated model. Sluice runs it only when the gate (`when`) holds.

config: model_name, max_regression and require_approval (both recorded in the card).
outputs: model.pkl (the released model: this step's output artifact is what production
         serves; its sha256 is in the manifest), model_card.md, deployment.json,
         metrics.json (deployed, roc_auc, roc_auc_change against production).
The run whose deploy step succeeded becomes production: the next run's gate compares
against it, and `sluice promote` / `sluice rollback` move it.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime

from common import (
    baseline,
    config,
    input_file,
    log,
    need,
    output_file,
    read_json,
    sha256_file,
    write_json,
    write_metrics,
)


def main() -> None:
    cfg = config()
    model_name = need(cfg, "model_name", str)
    run_id = os.environ.get("SLUICE_RUN_ID", "local")
    pipeline = os.environ.get("SLUICE_PIPELINE", "local")
    scores = read_json(input_file("evaluate", "metrics.json"))
    model = read_json(input_file("select", "model.json"))
    selection = read_json(input_file("select", "selection.json"))
    dataset = read_json(input_file("ingest", "dataset.json"))

    released = output_file("model.pkl")
    shutil.copyfile(input_file("select", "model.pkl"), released)
    digest = sha256_file(released)
    production = baseline()
    before = (production or {}).get("steps", {}).get("evaluate", {}).get("metrics", {})
    change = scores["roc_auc"] - before["roc_auc"] if "roc_auc" in before else 0.0
    previous = production.get("run_id") if production else None
    log(f"releasing {model_name} sha256 {digest[:12]}: roc_auc {scores['roc_auc']:.4f}")
    log(f"replaces production run {previous}" if previous else "the first production model")

    # A real deploy step pushes the model to a registry or a serving endpoint here (with
    # `network: bridge` and a token in `secrets:`); this one records the release.
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = {
        "model_name": model_name,
        "model_sha256": digest,
        "run_id": run_id,
        "pipeline": pipeline,
        "released_at": at,
        "data_version": dataset["version"],
        "settings": model["settings"],
        "chosen": selection["chosen"],
        "metrics": scores,
        "replaces_run": previous,
        "max_regression": cfg.get("max_regression"),
        "require_approval": cfg.get("require_approval"),
    }
    write_json("deployment.json", record)
    table = "\n".join(f"| {k} | {v:.4f} |" for k, v in scores.items() if isinstance(v, float))
    settings = "\n".join(f"- `{k}`: {json.dumps(v)}" for k, v in model["settings"].items())
    version, origin = dataset["version"], dataset["source"]
    holdout_rows = scores.get("holdout_rows")
    replaces = f"run `{previous}`" if previous else "nothing (first release)"
    metric = selection["metric"]
    chosen = (
        f"`{selection['chosen']}`, the best of {len(selection['ranked'])} by {metric} "
        f"{selection['ranked'][0]['metrics'][metric]:.4f}"
    )
    gate = (
        f"ROC AUC at most {cfg.get('max_regression')} below production's; "
        f"review before release: {'yes' if cfg.get('require_approval') else 'no'}"
    )
    output_file("model_card.md").write_text(
        f"""# Model card: {model_name}

- Released {at} by pipeline `{pipeline}`, run `{run_id}`
- Model: `model.pkl` (random forest), sha256 `{digest}`
- Data: version `{version}`, {origin}
- Chosen: {chosen}
- Replaces: {replaces}
- Gate: {gate}

## Holdout metrics ({holdout_rows} rows)

| metric | value |
| --- | --- |
{table}

## Settings

{settings}

## Intended use

A teaching example shipped with Sluice, trained on a public data set: it shows a
retraining pipeline, not a medical device. Do not use it for clinical decisions.
"""
    )
    write_metrics({"deployed": True, "roc_auc": scores["roc_auc"], "roc_auc_change": change})


if __name__ == "__main__":
    main()
