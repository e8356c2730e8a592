"""Report: a Markdown comparison of the candidates and the selected model.

config: source (the step with selection.json, default select).
outputs: report.md (also printed, so it shows in the step's log).
"""

from __future__ import annotations

import json
import os

from common import config, input_file, log, output_file, setting


def main() -> None:
    source = setting(config(), "source", str, "select")
    selection = json.loads(input_file(source, "selection.json").read_text())
    metric, selected = selection["metric"], selection["selected"]
    columns = ["cv_accuracy", "test_accuracy", "test_f1_macro", "fit_seconds"]

    lines = [
        f"# Model selection: {os.environ.get('SLUICE_PIPELINE', 'local')}",
        "",
        f"Run `{os.environ.get('SLUICE_RUN_ID', 'local')}`. Ranked by `{metric}`; "
        f"selected **{selected['model']}** (step `{selected['step']}`).",
        "",
        "| rank | step | model | " + " | ".join(columns) + " |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for rank, c in enumerate(selection["ranking"], 1):
        cells = [f"{c['metrics'][k]:.4f}" if k in c["metrics"] else "" for k in columns]
        lines.append(f"| {rank} | {c['step']} | {c['model']} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    output_file("report.md").write_text(text)
    for line in lines:
        log(line)


if __name__ == "__main__":
    main()
