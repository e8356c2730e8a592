"""Evaluate: score an upstream model on its holdout set.

config: source (the step with model.pkl and holdout.csv, default train), label (default target).
outputs: metrics.json (accuracy, f1, roc_auc, and for two classes precision and recall;
         f1 and roc_auc are macro averages when there are more than two classes),
         evaluation.json (the same plus the confusion matrix).
"""

from __future__ import annotations

import pickle

from common import config, input_file, log, setting, write_json, write_metrics


def main() -> None:
    cfg = config()
    source = setting(cfg, "source", str, "train")
    label = setting(cfg, "label", str, "target")

    import numpy as np
    import pandas as pd
    from sklearn import metrics

    with input_file(source, "model.pkl").open("rb") as handle:
        model = pickle.load(handle)
    holdout = pd.read_csv(input_file(source, "holdout.csv"))
    X, y = holdout.drop(columns=[label]), holdout[label].to_numpy()
    if not hasattr(model, "feature_names_in_"):
        X = X.to_numpy()  # the model was fitted on a plain array: no column names to match
    log(f"scoring {type(model).__name__} on {len(holdout)} holdout rows")

    predicted = model.predict(X)
    proba = model.predict_proba(X)
    binary = len(model.classes_) == 2
    scores = {"accuracy": metrics.accuracy_score(y, predicted)}
    if binary:
        scores["f1"] = metrics.f1_score(y, predicted)
        scores["precision"] = metrics.precision_score(y, predicted)
        scores["recall"] = metrics.recall_score(y, predicted)
        scores["roc_auc"] = metrics.roc_auc_score(y, proba[:, 1])
    else:
        scores["f1"] = metrics.f1_score(y, predicted, average="macro")
        scores["roc_auc"] = metrics.roc_auc_score(y, proba, multi_class="ovr", average="macro")
    scores = {k: float(v) for k, v in scores.items()}

    confusion = metrics.confusion_matrix(y, predicted, labels=model.classes_)
    write_json(
        "evaluation.json",
        {
            **scores,
            "holdout_rows": len(holdout),
            "classes": [c.item() if isinstance(c, np.generic) else c for c in model.classes_],
            "confusion_matrix": confusion.tolist(),
        },
    )
    write_metrics({**scores, "holdout_rows": len(holdout)})


if __name__ == "__main__":
    main()
