"""Smoke train: the fastest real training step, on scikit-learn's iris data set.

config: seed, test_fraction (default 0.3), max_iter (default 200).
outputs: model.pkl (a logistic regression), holdout.csv (features + target),
         metrics.json (train_rows, holdout_rows, train_accuracy).
"""

from __future__ import annotations

import csv
import pickle

from common import config, log, output_file, setting, write_metrics


def main() -> None:
    cfg = config()
    seed = setting(cfg, "seed", int)
    test_fraction = setting(cfg, "test_fraction", float, 0.3)
    max_iter = setting(cfg, "max_iter", int, 200)

    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    iris = load_iris()
    X_train, X_hold, y_train, y_hold = train_test_split(
        iris.data, iris.target, test_size=test_fraction, random_state=seed, stratify=iris.target
    )
    model = LogisticRegression(max_iter=max_iter, random_state=seed).fit(X_train, y_train)
    log(f"fitted logistic regression on {len(X_train)} rows ({model.n_iter_.max()} iterations)")

    with output_file("model.pkl").open("wb") as handle:
        pickle.dump(model, handle)
    with output_file("holdout.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*iris.feature_names, "target"])
        writer.writerows(
            [*row, int(label)] for row, label in zip(X_hold.tolist(), y_hold, strict=True)
        )
    write_metrics(
        {
            "train_rows": len(X_train),
            "holdout_rows": len(X_hold),
            "train_accuracy": float(model.score(X_train, y_train)),
        }
    )


if __name__ == "__main__":
    main()
