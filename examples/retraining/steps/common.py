"""The Sluice step contract in a few helpers (standard library only).

Inside a step container the engine provides:

    /sluice/config.json       the step's `config`, params resolved    ($SLUICE_CONFIG)
    /sluice/params.json       the run's params                        (beside config.json)
    /sluice/baseline.json     the production run's manifest, if any   (beside config.json)
    /sluice/inputs/<step>/    outputs of every step in `needs`        ($SLUICE_INPUTS)
    /sluice/outputs/          what the step writes here is its output ($SLUICE_OUTPUTS)

The variables have these defaults, so a step also runs by hand outside Sluice:
    SLUICE_CONFIG=cfg.json SLUICE_INPUTS=in SLUICE_OUTPUTS=out python steps/train.py
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

CONFIG = Path(os.environ.get("SLUICE_CONFIG", "/sluice/config.json"))
INPUTS = Path(os.environ.get("SLUICE_INPUTS", "/sluice/inputs"))
OUTPUTS = Path(os.environ.get("SLUICE_OUTPUTS", "/sluice/outputs"))
PARAMS = CONFIG.parent / "params.json"
BASELINE = CONFIG.parent / "baseline.json"


def log(message: str) -> None:
    """One progress line, flushed so that it streams live."""
    print(message, flush=True)


def fail(message: str) -> NoReturn:
    """Stop the step with a clear message: exit code 1 makes the attempt `failed`."""
    print(f"ERROR: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        fail(f"{path} not found")
    except ValueError as exc:
        fail(f"{path} is not valid JSON: {exc}")


def config() -> dict[str, Any]:
    """The step's config (params already substituted by the engine)."""
    data = read_json(CONFIG) if CONFIG.exists() else {}
    if not isinstance(data, dict):
        fail(f"{CONFIG} must hold a JSON object")
    return data


def params() -> dict[str, Any]:
    return read_json(PARAMS) if PARAMS.exists() else {}


def baseline() -> dict[str, Any] | None:
    """The production run's manifest; None before the first release."""
    return read_json(BASELINE) if BASELINE.exists() else None


def need(cfg: dict[str, Any], key: str, kind: type) -> Any:
    """cfg[key] as `kind`, or a clear failure naming the key."""
    if cfg.get(key) is None:
        fail(f"config has no {key!r}: set it in the step's `config:`")
    try:
        return kind(cfg[key])
    except (TypeError, ValueError):
        fail(f"config {key!r} must be {kind.__name__}, got {cfg[key]!r}")


def input_file(step: str, name: str) -> Path:
    path = INPUTS / step / name
    if not path.is_file():
        fail(f"input {step}/{name} not found: does this step `need` {step!r}?")
    return path


def output_file(name: str) -> Path:
    path = OUTPUTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_json(name: str, data: Any) -> Path:
    path = output_file(name)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def write_metrics(metrics: dict[str, Any]) -> None:
    """metrics.json: one flat object of numbers and booleans, what `when` can read."""
    clean: dict[str, float | int | bool] = {}
    for key, value in metrics.items():
        value = value.item() if hasattr(value, "item") else value  # numpy scalars
        if not isinstance(value, bool | int | float) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            fail(f"metric {key!r} must be a finite number or a boolean, got {value!r}")
        clean[key] = round(value, 6) if isinstance(value, float) else value
    write_json("metrics.json", clean)
    log("metrics: " + ", ".join(f"{k}={v}" for k, v in clean.items()))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()
