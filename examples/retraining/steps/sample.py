"""Sample (drift monitor): the training reference and the latest batch, as two CSVs.

config: world (path of the world file), reference_date (the batch the production model
        learnt from), date (the batch to check; "" for the default), scheduled_for.
outputs: reference.csv and latest.csv (the features only), sample.json.
The next step compares them with `sluice drift compute`.
"""

from __future__ import annotations

from pathlib import Path

import source
from common import config, log, need, output_file, write_json


def main() -> None:
    cfg = config()
    state = source.world(Path(need(cfg, "world", str)))
    reference_day = source.batch_date(need(cfg, "reference_date", str), None, state)
    latest_day = source.batch_date(cfg.get("date"), cfg.get("scheduled_for"), state)
    reference = source.draw(reference_day, state)
    latest = source.draw(latest_day, state)
    for name, frame in (("reference.csv", reference), ("latest.csv", latest)):
        frame.drop(columns=[source.LABEL]).to_csv(
            output_file(name), index=False, float_format="%.6g"
        )
    log(f"reference: the batch of {reference_day}; latest: the batch of {latest_day}")
    write_json(
        "sample.json",
        {
            "reference": {"date": reference_day, "rows": len(reference)},
            "latest": {"date": latest_day, "rows": len(latest)},
            "world": state,
        },
    )


if __name__ == "__main__":
    main()
