"""Select: pick the best of the candidate models trained upstream (the fan-in).

Every input folder holding candidate.json and metrics.json is a candidate (the steps
this step `needs`). The highest `metric` wins; a tie goes to the candidate whose
cross-validation scores vary least, then to the first step name. Fails when no candidate
reaches `min_score`.

config: metric (a key of the candidates' metrics.json, default cv_accuracy),
        min_score (default 0).
outputs: model.pkl (the winner's), selection.json (winner and full ranking),
         metrics.json (best_score, best_test_accuracy, margin over the runner-up, candidates).
"""

from __future__ import annotations

import json
import shutil

from common import INPUTS, config, fail, log, output_file, setting, write_json, write_metrics


def main() -> None:
    cfg = config()
    metric = setting(cfg, "metric", str, "cv_accuracy")
    min_score = setting(cfg, "min_score", float, 0.0)

    candidates = []
    for folder in sorted(p for p in INPUTS.iterdir() if p.is_dir()):
        if not (folder / "candidate.json").is_file() or not (folder / "metrics.json").is_file():
            continue
        metrics = json.loads((folder / "metrics.json").read_text())
        if metric not in metrics:
            known = ", ".join(sorted(metrics))
            fail(f"{folder.name}/metrics.json has no {metric!r} (it has: {known})")
        info = json.loads((folder / "candidate.json").read_text())
        candidates.append({"step": folder.name, "model": info["model"], "metrics": metrics})
    if not candidates:
        fail(f"no candidates in {INPUTS}: `needs` should list the candidate training steps")

    ranking = sorted(
        candidates,
        key=lambda c: (-c["metrics"][metric], c["metrics"].get("cv_accuracy_std", 0), c["step"]),
    )
    for place, c in enumerate(ranking, 1):
        log(f"#{place} {c['step']:<16} {c['model']:<20} {metric}={c['metrics'][metric]:.4f}")
    best = ranking[0]
    score = best["metrics"][metric]
    if score < min_score:
        fail(f"best candidate {best['step']} has {metric}={score:.4f}, below min_score {min_score}")
    margin = score - ranking[1]["metrics"][metric] if len(ranking) > 1 else 0.0
    log(f"selected {best['step']} ({best['model']}), ahead by {margin:.4f}")

    shutil.copyfile(INPUTS / best["step"] / "model.pkl", output_file("model.pkl"))
    write_json("selection.json", {"metric": metric, "selected": best, "ranking": ranking})
    write_metrics(
        {
            "best_score": score,
            "best_test_accuracy": best["metrics"].get("test_accuracy", 0.0),
            "margin": margin,
            "candidates": len(ranking),
        }
    )


if __name__ == "__main__":
    main()
