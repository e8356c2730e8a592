"""Ingest: read one dated batch from the data source; write it as versioned CSVs.

config: world (path of the world file), date (a batch date, or "" for the default),
        scheduled_for (the cron slot, from the trigger), holdout_fraction, seed.
outputs: train.csv, holdout.csv (a stratified split, fixed by the seed, so that every
         model is scored on the same holdout of a batch), dataset.json (the data
         version: batch date, rows, the sha256 of each file), metrics.json.
"""

from __future__ import annotations

from pathlib import Path

import source
from common import config, fail, log, need, output_file, sha256_file, write_json, write_metrics


def main() -> None:
    cfg = config()
    state = source.world(Path(need(cfg, "world", str)))
    day = source.batch_date(cfg.get("date"), cfg.get("scheduled_for"), state)
    holdout_fraction = need(cfg, "holdout_fraction", float)
    seed = need(cfg, "seed", int)
    if not 0 < holdout_fraction < 1:
        fail(f"holdout_fraction must be between 0 and 1, got {holdout_fraction}")

    from sklearn.model_selection import train_test_split

    batch = source.draw(day, state)
    shift = source.shift_on(state, day)
    moved = ", ".join(f"{k} {v:+g} sd" for k, v in shift.items()) or "none"
    log(f"batch {day}: {len(batch)} records; features moved since training: {moved}")
    train, holdout = train_test_split(
        batch, test_size=holdout_fraction, random_state=seed, stratify=batch[source.LABEL]
    )
    files = {}
    for name, frame in (("train.csv", train), ("holdout.csv", holdout)):
        path = output_file(name)
        frame.sort_index().to_csv(path, index=False, float_format="%.6g")
        files[name] = {"rows": len(frame), "sha256": sha256_file(path)}
    # The version names the content: same batch, same bytes, same version (and cache hits).
    version = f"{day}.{files['train.csv']['sha256'][:8]}{files['holdout.csv']['sha256'][:4]}"
    write_json(
        "dataset.json",
        {
            "version": version,
            "batch_date": day,
            "source": "sklearn.datasets.load_breast_cancer, sampled by steps/source.py",
            "label": source.LABEL,
            "files": files,
            "shift": shift,
        },
    )
    log(f"data version {version}: train.csv {len(train)} rows, holdout.csv {len(holdout)} rows")
    write_metrics(
        {
            "rows": len(batch),
            "train_rows": len(train),
            "holdout_rows": len(holdout),
            "shifted_features": len(shift),
        }
    )


if __name__ == "__main__":
    main()
