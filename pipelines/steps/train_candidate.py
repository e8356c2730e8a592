"""Train one candidate model for model selection (one script, many steps).

config: model (logistic_regression | random_forest | gradient_boosting), seed,
        test_fraction, cv_folds, source (step with data.csv, default ingest),
        label (default target), hyperparams (optional mapping passed to the estimator).
Every candidate splits the data with the same seed, so all are tested on the same rows.
outputs: model.pkl, candidate.json (model, estimator, hyperparams),
         metrics.json (cv_accuracy, cv_accuracy_std, test_accuracy, test_f1_macro, fit_seconds).
"""

from __future__ import annotations

import pickle
import time

from common import config, fail, input_file, log, output_file, setting, write_json, write_metrics

MODELS = ("logistic_regression", "random_forest", "gradient_boosting")


def build(kind: str, seed: int, hyperparams: dict):
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logistic_regression":
        # Scaled: the wine features range from 0.1 to 1600.
        return make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed, **hyperparams)
        )
    if kind == "random_forest":
        return RandomForestClassifier(
            random_state=seed, n_jobs=1, **{"n_estimators": 100, **hyperparams}
        )
    return GradientBoostingClassifier(random_state=seed, **{"n_estimators": 50, **hyperparams})


def main() -> None:
    cfg = config()
    kind = setting(cfg, "model", str)
    seed = setting(cfg, "seed", int)
    test_fraction = setting(cfg, "test_fraction", float, 0.3)
    folds = setting(cfg, "cv_folds", int, 5)
    source = setting(cfg, "source", str, "ingest")
    label = setting(cfg, "label", str, "target")
    hyperparams = cfg.get("hyperparams") or {}
    if kind not in MODELS:
        fail(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")
    if not isinstance(hyperparams, dict):
        fail("hyperparams must be a mapping")

    import pandas as pd
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split

    frame = pd.read_csv(input_file(source, "data.csv"))
    X, y = frame.drop(columns=[label]), frame[label]
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    model = build(kind, seed, hyperparams)
    log(f"{kind}: {folds}-fold cross-validation on {len(X_train)} rows")
    cv = cross_val_score(
        model, X_train, y_train, cv=StratifiedKFold(folds, shuffle=True, random_state=seed)
    )
    started = time.perf_counter()
    model.fit(X_train, y_train)
    fit_seconds = time.perf_counter() - started
    predicted = model.predict(X_test)
    log(f"fitted in {fit_seconds:.2f}s; cv accuracy {cv.mean():.4f} +/- {cv.std():.4f}")

    with output_file("model.pkl").open("wb") as handle:
        pickle.dump(model, handle)
    write_json(
        "candidate.json", {"model": kind, "estimator": repr(model), "hyperparams": hyperparams}
    )
    write_metrics(
        {
            "cv_accuracy": float(cv.mean()),
            "cv_accuracy_std": float(cv.std()),
            "test_accuracy": float(accuracy_score(y_test, predicted)),
            "test_f1_macro": float(f1_score(y_test, predicted, average="macro")),
            "fit_seconds": fit_seconds,
        }
    )


if __name__ == "__main__":
    main()
