"""The Sluice step contract in a few helpers, shared by the sample pipelines' steps.

Inside a step container the engine provides (docs/pipeline-format.md, "The step container"):

    /sluice/config.json       the step's `config`, params resolved    ($SLUICE_CONFIG)
    /sluice/params.json       the run's params                        (next to config.json)
    /sluice/inputs/<step>/    outputs of every step in `needs`        ($SLUICE_INPUTS)
    /sluice/outputs/          what the step writes here is its output ($SLUICE_OUTPUTS)
    /sluice/checkpoints/      kept between attempts of the step       (next to config.json)

Only the standard library is imported here, so a step that needs no numpy starts fast.
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
# params.json and checkpoints/ have no variable of their own: they sit beside config.json.
PARAMS = CONFIG.parent / "params.json"
CHECKPOINTS = CONFIG.parent / "checkpoints"


def log(message: str) -> None:
    """One progress line (flushed, so it streams live; the engine prefixes the step name)."""
    print(message, flush=True)


def fail(message: str) -> NoReturn:
    """Stop the step with a clear message and a non-zero exit: the attempt is `failed`."""
    print(f"ERROR: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        fail(f"{what} not found at {path}")
    except ValueError as exc:
        fail(f"{what} at {path} is not valid JSON: {exc}")


def config() -> dict[str, Any]:
    """The step's config (params already substituted by the engine)."""
    data = _read_json(CONFIG, "config.json")
    if not isinstance(data, dict):
        fail(f"{CONFIG} must hold a JSON object")
    return data


def params() -> dict[str, Any]:
    """The run's params; empty when the file is absent (e.g. running a step by hand)."""
    return _read_json(PARAMS, "params.json") if PARAMS.exists() else {}


def setting(cfg: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    """`cfg[key]` converted to `kind` (int, float, str, bool), or `default` when absent."""
    if key not in cfg or cfg[key] is None:
        if default is None:
            fail(f"config.json has no {key!r}")
        return default
    value = cfg[key]
    try:
        if kind is bool and not isinstance(value, bool):
            return str(value).lower() in ("1", "true", "yes", "on")
        return kind(value)
    except (TypeError, ValueError):
        fail(f"config {key!r} must be {kind.__name__}, got {value!r}")


def input_file(step: str, name: str) -> Path:
    """The path of an upstream step's output file; fails clearly when it is missing."""
    path = INPUTS / step / name
    if not path.is_file():
        fail(f"input {step}/{name} not found: does this step `need` {step!r}?")
    return path


def output_file(name: str) -> Path:
    """A path under the outputs folder (parent folders created)."""
    path = OUTPUTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_json(name: str, data: Any) -> Path:
    path = output_file(name)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def write_metrics(metrics: dict[str, float | int | bool]) -> None:
    """metrics.json: a flat object of numbers and booleans (what `when` can read)."""
    clean: dict[str, float | int | bool] = {}
    for key, value in metrics.items():
        if hasattr(value, "item"):  # numpy scalars
            value = value.item()
        if not isinstance(value, bool | int | float) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            fail(f"metric {key!r} must be a finite number or a boolean, got {value!r}")
        clean[key] = round(value, 6) if isinstance(value, float) else value
    write_json("metrics.json", clean)
    log("metrics " + " ".join(f"{k}={v}" for k, v in clean.items()))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()
