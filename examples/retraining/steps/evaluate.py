"""Evaluate: score the model `select` chose on the batch's holdout set.

The holdout is scored here only, once, for the chosen model: the sweep compared its
models by cross-validation on train.csv, so this score is not flattered by the choice.

config: label.
outputs: metrics.json (accuracy, f1, roc_auc, holdout_rows: what the deploy gate reads),
         evaluation.json (the same, the confusion matrix, and production's scores for
         comparison when there is a production run).
"""

from __future__ import annotations

import pickle

from common import baseline, config, input_file, log, need, write_json, write_metrics

SCORES = ("accuracy", "f1", "roc_auc")


def main() -> None:
    label = need(config(), "label", str)

    import pandas as pd
    from sklearn import metrics

    with input_file("select", "model.pkl").open("rb") as handle:
        model = pickle.load(handle)
    holdout = pd.read_csv(input_file("ingest", "holdout.csv"))
    X, y = holdout.drop(columns=[label]).to_numpy(), holdout[label].to_numpy()
    predicted = model.predict(X)
    scores = {
        "accuracy": float(metrics.accuracy_score(y, predicted)),
        "f1": float(metrics.f1_score(y, predicted)),
        "roc_auc": float(metrics.roc_auc_score(y, model.predict_proba(X)[:, 1])),
    }
    log(f"holdout of {len(holdout)} rows: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))

    production = baseline()
    compared = None
    if production is not None:
        theirs = production.get("steps", {}).get("evaluate", {}).get("metrics", {})
        compared = {"run_id": production.get("run_id"), **{k: theirs.get(k) for k in SCORES}}
        log(f"production run {compared['run_id']} scored, on its own holdout:")
        for key in SCORES:
            if isinstance(theirs.get(key), int | float):
                log(f"  {key} {theirs[key]:.4f} (this model: {scores[key] - theirs[key]:+.4f})")
    else:
        log("no production model yet: nothing to compare with")
    write_json(
        "evaluation.json",
        {
            **scores,
            "holdout_rows": len(holdout),
            "confusion_matrix": metrics.confusion_matrix(y, predicted, labels=[0, 1]).tolist(),
            "production": compared,
        },
    )
    write_metrics({**scores, "holdout_rows": len(holdout)})


if __name__ == "__main__":
    main()
