"""Train: one random forest of the sweep on the batch's train.csv, scored by cross-validation.

The pipeline runs this step once per pair of the sweep (`matrix:`), each instance with its
own n_estimators and max_depth in its config; `select` then keeps the best of them.
config: n_estimators, max_depth (0: unlimited), min_samples_leaf, folds, seed (fixed: the
        same data and settings always give the same model, byte for byte, so a re-run is a
        cache hit and a retrain is comparable), label.
outputs: model.pkl, model.json (settings, data version, the model's sha256),
         metrics.json (cv_roc_auc: the mean ROC AUC over `folds` folds of train.csv, what
         `select` compares, so that the holdout stays unseen until `evaluate`; train_rows,
         train_accuracy, and model_id: the first 12 hex digits of the model's sha256 as a
         number, so that the deploy gate can tell a new model from the one in production;
         metrics hold numbers only).
"""

from __future__ import annotations

import pickle

from common import (
    config,
    fail,
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
    settings = {
        "n_estimators": need(cfg, "n_estimators", int),
        "max_depth": need(cfg, "max_depth", int),
        "min_samples_leaf": need(cfg, "min_samples_leaf", int),
        "seed": need(cfg, "seed", int),
    }
    folds = need(cfg, "folds", int)
    label = need(cfg, "label", str)
    if settings["n_estimators"] < 1 or settings["min_samples_leaf"] < 1:
        fail(f"n_estimators and min_samples_leaf must be at least 1: {settings}")
    if folds < 2:
        fail(f"folds must be at least 2, got {folds}")

    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    frame = pd.read_csv(input_file("ingest", "train.csv"))
    version = read_json(input_file("ingest", "dataset.json"))["version"]
    X, y = frame.drop(columns=[label]).to_numpy(), frame[label].to_numpy()
    log(f"training on data {version}: {len(frame)} rows, settings {settings}")
    model = RandomForestClassifier(
        n_estimators=settings["n_estimators"],
        max_depth=settings["max_depth"] or None,
        min_samples_leaf=settings["min_samples_leaf"],
        random_state=settings["seed"],
        n_jobs=1,  # one thread: the same model on every machine
    )
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=settings["seed"])
    cv_roc_auc = float(cross_val_score(model, X, y, scoring="roc_auc", cv=split).mean())
    log(f"cross-validated ROC AUC over {folds} folds: {cv_roc_auc:.4f}")
    model.fit(X, y)

    path = output_file("model.pkl")
    with path.open("wb") as handle:
        pickle.dump(model, handle, protocol=5)
    digest = sha256_file(path)
    write_json(
        "model.json",
        {
            "kind": "sklearn.ensemble.RandomForestClassifier",
            "settings": settings,
            "features": [c for c in frame.columns if c != label],
            "label": label,
            "data_version": version,
            "sha256": digest,
        },
    )
    log(f"model sha256 {digest[:12]}")
    write_metrics(
        {
            "cv_roc_auc": cv_roc_auc,
            "train_rows": len(frame),
            "train_accuracy": float(model.score(X, y)),
            "model_id": int(digest[:12], 16),
        }
    )


if __name__ == "__main__":
    main()
