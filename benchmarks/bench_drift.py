"""`sluice drift compute` on 1,000,000 rows x 20 numeric features: `python benchmarks/bench_drift.py`.

    python benchmarks/bench_drift.py [--rows 1000000] [--features 20] [--rounds 3]
                                     [--fallback-rounds 1] [--json]

The data is generated once (seeded; 3 of the features shifted) into a temporary folder as
Parquet and as CSV. Timed, median of --rounds:
  end to end, a subprocess `sluice drift compute`     Parquet; CSV read by pyarrow  goal < 5 s
  in this process, `engine.app.drift_compute.compute()`  the same two, and the stdlib CSV reader
                                                      (the fallback without pyarrow; for
                                                      information, --fallback-rounds)
  where the time goes: reading both files, then comparing (sort, PSI, KS per feature);
  and a subprocess on a 10-row file, the fixed cost of start-up and imports.
Each figure comes with its CPU seconds (both cores count), which a busy shared machine
disturbs less than the wall time; the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from engine.adapters import drift_files  # noqa: E402
from engine.app.drift_compute import compare, compute  # noqa: E402

GOAL_S = 5.0
SHIFTED = 3  # features whose current data is shifted by 0.1 to 0.3 standard deviations


@dataclass
class Measure:
    name: str
    goal_s: float | None
    median_s: float
    cpu_s: float  # median CPU seconds (user + system, every thread or the child process)
    runs: int

    @property
    def verdict(self) -> str:
        if self.goal_s is None:
            return ""
        return "ok" if self.median_s < self.goal_s else "MISSED"


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def timed(
    name: str,
    action: Callable[[], object],
    rounds: int,
    *,
    child: bool = False,
    goal: float | None = None,
) -> Measure:
    who = resource.RUSAGE_CHILDREN if child else resource.RUSAGE_SELF
    walls, cpus = [], []
    for _ in range(rounds):
        cpu, started = _cpu(who), time.perf_counter()
        action()
        walls.append(time.perf_counter() - started)
        cpus.append(_cpu(who) - cpu)
    return Measure(name, goal, statistics.median(walls), statistics.median(cpus), rounds)


def generate(folder: Path, rows: int, features: int) -> dict[str, Path]:
    """Reference and current data as Parquet and CSV; returns their paths by name."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(2026)
    paths = {}
    for side in ("reference", "current"):
        columns = {}
        for i in range(features):
            shift = 0.1 * (i + 1) if side == "current" and i < SHIFTED else 0.0
            columns[f"feature_{i:02d}"] = rng.normal(shift, 1.0, size=rows)
        table = pa.table(columns)
        pq.write_table(table, folder / f"{side}.parquet")
        pcsv.write_csv(table, folder / f"{side}.csv")
        paths[f"{side}.parquet"] = folder / f"{side}.parquet"
        paths[f"{side}.csv"] = folder / f"{side}.csv"
    (folder / "tiny.csv").write_text("a,b\n" + "".join(f"{i},{i % 3}\n" for i in range(10)))
    return paths


def subprocess_run(reference: Path, current: Path, out: Path) -> Callable[[], None]:
    command = [sys.executable, "-m", "engine", "drift", "compute"]
    command += ["--reference", str(reference), "--current", str(current), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}

    def once() -> None:
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr

    return once


def phases(reference: Path, current: Path, fast: bool, rounds: int) -> tuple[Measure, Measure]:
    """Reading both files, then comparing them, timed apart."""
    label = (
        "parquet" if reference.suffix == ".parquet" else "csv " + ("pyarrow" if fast else "stdlib")
    )
    ref_src, cur_src = drift_files.source(str(reference)), drift_files.source(str(current))
    names = drift_files.read_header(ref_src, use_pyarrow=fast)
    found: dict[str, Any] = {}

    def read() -> None:
        found["ref"] = drift_files.read_table(ref_src, names, use_pyarrow=fast)
        found["cur"] = drift_files.read_table(cur_src, names, use_pyarrow=fast)

    reading = timed(f"  {label}: read both files", read, rounds)
    comparing = timed(
        f"  {label}: compare (sort, PSI, KS)",
        lambda: compare(found["ref"], found["cur"], names),
        rounds,
    )
    return reading, comparing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fallback-rounds", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    args = parser.parse_args(argv)
    if not drift_files.have_pyarrow():
        print("bench_drift: needs pyarrow (pip install -e '.[drift]')", file=sys.stderr)
        return 2
    load_before = os.getloadavg()[0]
    results: list[Measure] = []
    with tempfile.TemporaryDirectory(prefix="sluice-bench-drift-") as scratch:
        folder = Path(scratch)
        started = time.perf_counter()
        paths = generate(folder, args.rows, args.features)
        generate_s = time.perf_counter() - started
        sizes = {name: path.stat().st_size for name, path in paths.items()}
        out = folder / "out"
        pairs = {
            "parquet": (paths["reference.parquet"], paths["current.parquet"]),
            "csv": (paths["reference.csv"], paths["current.csv"]),
        }
        for kind, (ref, cur) in pairs.items():
            run = subprocess_run(ref, cur, out)
            run()  # warm the page cache
            results.append(
                timed(
                    f"sluice drift compute, {kind} (subprocess)",
                    run,
                    args.rounds,
                    child=True,
                    goal=GOAL_S,
                )
            )
        detected = json.loads((out / "metrics.json").read_text())
        assert detected["drifted_features"] >= 1, detected
        tiny = folder / "tiny.csv"
        results.append(
            timed(
                "  fixed cost: 10-row CSV (subprocess)",
                subprocess_run(tiny, tiny, out),
                args.rounds,
                child=True,
            )
        )
        for kind, (ref, cur) in pairs.items():
            results.append(
                timed(
                    f"compute(), {kind} (in process)",
                    lambda r=ref, c=cur: compute(str(r), str(c)),
                    args.rounds,
                )
            )
            results.extend(phases(ref, cur, True, args.rounds))
        ref, cur = pairs["csv"]
        results.append(
            timed(
                "compute(), csv stdlib fallback (in process)",
                lambda: compute(str(ref), str(cur), use_pyarrow=False),
                args.fallback_rounds,
            )
        )
        results.extend(phases(ref, cur, False, args.fallback_rounds))
    load_after = os.getloadavg()[0]
    header = {
        "rows": args.rows,
        "features": args.features,
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "generate_s": generate_s,
        "file_mb": {name: round(size / 1e6, 1) for name, size in sizes.items()},
    }
    if args.json:
        rows = [asdict(r) | {"verdict": r.verdict} for r in results]
        print(json.dumps({**header, "results": rows}, indent=2))
    else:
        print(
            f"drift compute: {args.rows:,} rows x {args.features} numeric features; "
            f"CSV {sizes['reference.csv'] / 1e6:.0f} MB, Parquet "
            f"{sizes['reference.parquet'] / 1e6:.0f} MB per file; {os.cpu_count()} CPUs, "
            f"load average {load_before:.1f} before, {load_after:.1f} after"
        )
        print(f"{'benchmark':<48} {'median':>8} {'cpu':>8} {'goal':>6} {'runs':>5}")
        for r in results:
            goal = f"{r.goal_s:g} s" if r.goal_s is not None else ""
            print(
                f"{r.name:<48} {r.median_s:>7.2f}s {r.cpu_s:>7.2f}s {goal:>6} {r.runs:>5}  {r.verdict}"
            )
    return 1 if any(r.verdict == "MISSED" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
