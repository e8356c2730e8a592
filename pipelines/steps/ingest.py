"""Ingest: load one of scikit-learn's bundled data sets and draw a seeded sample.

config: dataset (breast_cancer | wine | iris), seed, sample_fraction (0 < f <= 1).
outputs: data.csv (feature columns + `target`), dataset.json (provenance, content hash),
         metrics.json (rows, features, classes).
"""

from __future__ import annotations

from common import config, fail, log, output_file, setting, sha256_file, write_json, write_metrics

LOADERS = ("breast_cancer", "wine", "iris")


def main() -> None:
    cfg = config()
    dataset = setting(cfg, "dataset", str)
    seed = setting(cfg, "seed", int)
    fraction = setting(cfg, "sample_fraction", float, 1.0)
    if dataset not in LOADERS:
        fail(f"unknown dataset {dataset!r}; choose one of {', '.join(LOADERS)}")
    if not 0 < fraction <= 1:
        fail(f"sample_fraction must be in (0, 1], got {fraction}")

    import sklearn.datasets  # after the checks: importing scikit-learn takes about a second

    bunch = getattr(sklearn.datasets, f"load_{dataset}")(as_frame=True)
    frame = bunch.frame
    log(f"loaded {dataset}: {len(frame)} rows, {frame.shape[1] - 1} features")
    if fraction < 1:
        frame = frame.sample(frac=fraction, random_state=seed).sort_index()
        log(f"sampled {fraction:.0%} with seed {seed}: {len(frame)} rows")

    path = output_file("data.csv")
    frame.to_csv(path, index=False)
    digest = sha256_file(path)
    write_json(
        "dataset.json",
        {
            "dataset": dataset,
            "source": f"sklearn.datasets.load_{dataset}",
            "rows": len(frame),
            "columns": list(frame.columns),
            "seed": seed,
            "sample_fraction": fraction,
            "sha256": digest,
        },
    )
    log(f"wrote data.csv (sha256 {digest[:12]})")
    write_metrics(
        {
            "rows": len(frame),
            "features": frame.shape[1] - 1,
            "classes": int(frame["target"].nunique()),
        }
    )


if __name__ == "__main__":
    main()
