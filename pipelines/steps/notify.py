"""Notify: print a summary of the run (a `finally` step: it runs whatever happened).

Reads the run's params, the SLUICE_* environment, and the metrics of every step it
`needs` that succeeded (a step that failed or was skipped leaves its input folder empty).
A real pipeline would post this to chat; the sample has no network, so it prints it and
writes summary.json. Standard library only: it starts in a fraction of a second.
"""

from __future__ import annotations

import json
import os

from common import INPUTS, log, params, write_json


def main() -> None:
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("SLUICE_")}
    run = {
        "pipeline": env.get("SLUICE_PIPELINE", "?"),
        "run_id": env.get("SLUICE_RUN_ID", "?"),
        "attempt": env.get("SLUICE_ATTEMPT", "?"),
    }
    log(f"run {run['run_id']} of pipeline {run['pipeline']} (notify attempt {run['attempt']})")
    run_params = params()
    for key, value in sorted(run_params.items()):
        log(f"  param {key} = {value!r}")

    steps: dict[str, dict | None] = {}
    folders = sorted(p for p in INPUTS.iterdir() if p.is_dir()) if INPUTS.is_dir() else []
    for folder in folders:
        metrics_path = folder / "metrics.json"
        steps[folder.name] = (
            json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
        )
        if steps[folder.name] is None:
            log(f"  {folder.name}: no outputs (it failed, was skipped or did not run)")
        else:
            shown = ", ".join(f"{k}={v}" for k, v in steps[folder.name].items())
            log(f"  {folder.name}: {shown}")

    write_json("summary.json", {**run, "params": run_params, "steps": steps})
    log("summary written (a real pipeline would post it to chat here)")


if __name__ == "__main__":
    main()
