"""Train: a random forest on an upstream `data.csv`, resumable from checkpoints.

config: source (step with data.csv, default ingest), n_estimators, max_depth (0: unlimited),
        seed, holdout_fraction (default 0.25), label (default target),
        chunk (trees grown between checkpoints, default 25),
        fail_on_attempt (fault injection for tests: fail after the first chunk of that
        attempt number; default 0, never).
outputs: model.pkl (pickled scikit-learn model), holdout.csv, metrics.json.
checkpoints: the partly grown forest after every chunk. A retry of the step (or
`sluice retry` of the run) finds it in /sluice/checkpoints and grows only the missing trees.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle

from common import (
    CHECKPOINTS,
    config,
    fail,
    input_file,
    log,
    output_file,
    setting,
    sha256_file,
    write_metrics,
)


def load_checkpoint(fingerprint: str):
    state_path, model_path = CHECKPOINTS / "state.json", CHECKPOINTS / "model.pkl"
    if not (state_path.is_file() and model_path.is_file()):
        return None
    state = json.loads(state_path.read_text())
    if state.get("fingerprint") != fingerprint:
        log("checkpoint found but made from other data or settings: starting over")
        return None
    with model_path.open("rb") as handle:
        return pickle.load(handle)


def save_checkpoint(model, fingerprint: str) -> None:
    CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    tmp = CHECKPOINTS / "model.pkl.tmp"
    with tmp.open("wb") as handle:
        pickle.dump(model, handle)
    tmp.replace(CHECKPOINTS / "model.pkl")  # never leave a half-written model behind
    state = {"fingerprint": fingerprint, "trees": len(model.estimators_)}
    (CHECKPOINTS / "state.json").write_text(json.dumps(state) + "\n")


def main() -> None:
    cfg = config()
    source = setting(cfg, "source", str, "ingest")
    label = setting(cfg, "label", str, "target")
    n_estimators = setting(cfg, "n_estimators", int)
    max_depth = setting(cfg, "max_depth", int)
    seed = setting(cfg, "seed", int)
    holdout = setting(cfg, "holdout_fraction", float, 0.25)
    chunk = max(1, setting(cfg, "chunk", int, 25))
    fail_on_attempt = setting(cfg, "fail_on_attempt", int, 0)
    attempt = int(os.environ.get("SLUICE_ATTEMPT", "1"))
    if n_estimators < 1:
        fail(f"n_estimators must be at least 1, got {n_estimators}")

    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    data_path = input_file(source, "data.csv")
    frame = pd.read_csv(data_path)
    X, y = frame.drop(columns=[label]), frame[label]
    X_train, X_hold, y_train, y_hold = train_test_split(
        X, y, test_size=holdout, random_state=seed, stratify=y
    )
    log(f"attempt {attempt}: {len(X_train)} training rows, {len(X_hold)} holdout rows")

    settings = {
        "n_estimators": n_estimators,
        "max_depth": max_depth,
        "seed": seed,
        "holdout": holdout,
    }
    fingerprint = hashlib.sha256(
        (sha256_file(data_path) + json.dumps(settings, sort_keys=True)).encode()
    ).hexdigest()

    model = load_checkpoint(fingerprint)
    resumed_trees = len(model.estimators_) if model is not None else 0
    if model is not None:
        log(f"resumed from checkpoint: {resumed_trees} of {n_estimators} trees already grown")
    else:
        model = RandomForestClassifier(
            n_estimators=1,  # grown chunk by chunk below
            max_depth=max_depth if max_depth > 0 else None,
            random_state=seed,
            warm_start=True,
            n_jobs=1,
        )

    grown = resumed_trees
    while grown < n_estimators:
        grown = min(grown + chunk, n_estimators)
        model.set_params(n_estimators=grown)
        model.fit(X_train, y_train)
        save_checkpoint(model, fingerprint)
        log(f"grew {grown}/{n_estimators} trees (checkpoint saved)")
        if attempt == fail_on_attempt and grown < n_estimators:
            fail(f"simulated failure on attempt {attempt} (config fail_on_attempt)")

    model.set_params(warm_start=False)
    with output_file("model.pkl").open("wb") as handle:
        pickle.dump(model, handle)
    X_hold.assign(**{label: y_hold}).to_csv(output_file("holdout.csv"), index=False)
    write_metrics(
        {
            "train_rows": len(X_train),
            "holdout_rows": len(X_hold),
            "trees": len(model.estimators_),
            "train_accuracy": float(model.score(X_train, y_train)),
            "resumed": resumed_trees > 0,
            "resumed_trees": resumed_trees,
        }
    )


if __name__ == "__main__":
    main()
