"""Notify: summarise the run, whatever happened (a `finally` step).

It reads the metrics of the steps it `needs` that succeeded (one that failed or was
skipped leaves its input folder empty), the sweep's index (train/index.json: each
instance's status) and the production run this run was compared with.
A real pipeline posts the summary to chat (`network: bridge`, a webhook URL in
`secrets:`); this one prints it and writes summary.md and summary.json.
"""

from __future__ import annotations

import json
import os
from collections import Counter

from common import INPUTS, baseline, log, output_file, params, write_json

STEPS = ("ingest", "validate-data", "select", "evaluate", "deploy")


def metrics_of(step: str) -> dict[str, object] | None:
    path = INPUTS / step / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def sweep() -> str:
    """The fanned-out `train`: how many instances ended how."""
    path = INPUTS / "train" / "index.json"
    if not path.is_file():
        return "no outputs"
    index = json.loads(path.read_text())
    counts = Counter(entry["status"] for entry in index)
    return f"{len(index)} instances: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def main() -> None:
    run_id = os.environ.get("SLUICE_RUN_ID", "local")
    steps = {step: metrics_of(step) for step in STEPS}
    production = baseline()
    before = (production or {}).get("steps", {}).get("evaluate", {}).get("metrics", {})
    auc = (steps["evaluate"] or {}).get("roc_auc")

    if steps["deploy"] is not None:
        headline = f"released a new model (roc_auc {auc})"
    elif steps["evaluate"] is not None:
        headline = (
            f"not released: the gate kept production run {production.get('run_id')} "
            f"(roc_auc {before.get('roc_auc')}; this model {auc})"
            if production
            else "not released"
        )
    else:
        failed = next((s for s in STEPS if steps[s] is None), "?")
        headline = f"stopped: no result from {failed} (see its log)"
    lines = [f"# Run {run_id}: {headline}", ""]
    lines += [
        f"- {step}: " + (", ".join(f"{k}={v}" for k, v in m.items()) if m else "no outputs")
        for step, m in steps.items()
    ]
    lines.insert(4, f"- train: {sweep()}")  # after validate-data: the sweep, then its pick
    lines += ["", "Params: " + ", ".join(f"{k}={v!r}" for k, v in sorted(params().items()))]
    text = "\n".join(lines) + "\n"
    output_file("summary.md").write_text(text)
    record = {"run_id": run_id, "headline": headline, "sweep": sweep(), "steps": steps}
    write_json("summary.json", record)
    for line in lines:
        log(line)


if __name__ == "__main__":
    main()
