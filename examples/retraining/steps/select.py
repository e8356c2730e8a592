"""Select: keep the best forest of the sweep (the fan-in of `train`'s instances).

Sluice gives a step that needs a fanned-out step the sweep's index,
/sluice/inputs/train/index.json (one entry per instance: name, matrix values, status,
metrics), and the outputs of each instance that succeeded, under
/sluice/inputs/train/<instance name>/.
config: metric (the train metric to maximise: cv_roc_auc).
outputs: model.pkl, model.json (the chosen instance's, unchanged), selection.json (every
         instance, best first), metrics.json (the chosen one's metric, n_estimators,
         max_depth and model_id, and how many instances were compared).
"""

from __future__ import annotations

import shutil

from common import (
    INPUTS,
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
    metric = need(config(), "metric", str)
    index = read_json(input_file("train", "index.json"))
    done = [i for i in index if i["status"] in ("succeeded", "cached") and metric in i["metrics"]]
    if not done:
        shown = ", ".join(f"{i['name']} {i['status']}" for i in index) or "no instances"
        fail(f"no instance of train succeeded with a {metric}: {shown}")
    ranked = sorted(done, key=lambda i: -i["metrics"][metric])  # stable: ties keep the order
    best = ranked[0]
    for entry in index:
        score = entry["metrics"].get(metric)
        shown = f"{score:.4f}" if isinstance(score, int | float) else "-"
        mark = "<- chosen" if entry is best else ""
        log(f"{entry['name']:<40} {entry['status']:<10} {metric} {shown} {mark}".rstrip())

    for name in ("model.pkl", "model.json"):
        shutil.copyfile(INPUTS / "train" / best["name"] / name, output_file(name))
    write_json("selection.json", {"metric": metric, "chosen": best["name"], "ranked": ranked})
    write_metrics(
        {
            metric: best["metrics"][metric],
            "n_estimators": best["matrix"]["n_estimators"],
            "max_depth": best["matrix"]["max_depth"],
            "model_id": best["metrics"]["model_id"],
            "compared": len(done),
            "instances": len(index),
        }
    )


if __name__ == "__main__":
    main()
