"""Results branch cost with 10 vs 10,000 runs: record_run, runs(limit=20), a CLI-like listing.

python benchmarks/bench_results.py [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

from engine.adapters.git_results import ResultsStore
from engine.core.manifest import RunManifest

REPS = 20
BRANCH = "refs/heads/sluice-results"
PIPELINE = "churn"  # all runs in one folder: the worst case for recording a run
_serial = count()


def run_id(moment: datetime) -> str:
    return f"{moment:%Y%m%dT%H%M%SZ}-{next(_serial) % 0xFFFFFF:06x}"


def realistic_manifest(rid: str, pipeline: str = "churn") -> RunManifest:
    """A finished three-step run, with attempts, outputs and metrics, as the executor writes."""
    steps = {}
    for i, name in enumerate(("prepare", "train", "evaluate")):
        steps[name] = {
            "status": "succeeded",
            "type": "training" if name == "train" else "custom",
            "image": f"ghcr.io/acme/{name}:1.4.2",
            "image_id": "sha256:" + f"{i}" * 64,
            "cache_key": f"{i}" * 64,
            "needs": ["prepare"] if name != "prepare" else [],
            "attempts": [
                {
                    "number": 1,
                    "outcome": "succeeded",
                    "exit_code": 0,
                    "started_at": "2026-11-24T10:00:00.000Z",
                    "finished_at": "2026-11-24T10:00:03.100Z",
                    "duration_s": 3.1,
                    "log": f"runs/{pipeline}/{rid}/logs/{name}.1.log",
                    "max_memory_bytes": 52428800,
                    "cpu_s": 2.9,
                }
            ],
            "outputs": {
                f"{name}.pkl": {"uri": f"file:///a/{name}", "sha256": "f" * 64, "size": 1234}
            },
            "metrics": {"accuracy": 0.93, "rows": 120000} if name == "evaluate" else {},
        }
    return RunManifest.model_validate(
        {
            "run_id": rid,
            "pipeline": pipeline,
            "pipeline_file": f"pipelines/{pipeline}.yaml",
            "pipeline_sha256": "e" * 64,
            "commit": "c" * 40,
            "trigger": {"kind": "cron", "scheduled_for": "2026-11-24T10:00:00Z"},
            "params": {"learning_rate": 0.1, "epochs": 20},
            "status": "succeeded",
            "started_at": "2026-11-24T10:00:00.000Z",
            "finished_at": "2026-11-24T10:00:12.500Z",
            "duration_s": 12.5,
            "engine": {"version": "0.1.0"},
            "ci": {"provider": "github", "run_url": "https://github.com/acme/ml/actions/runs/1"},
            "steps": steps,
        }
    )


LOGS = {
    "prepare.1.log": b"".join(b"prepare: row batch %d loaded\n" % i for i in range(300)),
    "train.1.log": b"".join(b"epoch %d loss=0.%04d acc=0.9%03d\n" % (i, i, i) for i in range(1200)),
    "evaluate.1.log": b"accuracy 0.93\nauc 0.97\n" * 40,
}


def build(repo: Path, runs: int) -> None:
    """A results branch with `runs` runs (manifest + log each), via one `git fast-import`."""
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    template = realistic_manifest("RUN_ID_PLACEHOLDER").to_json()
    stream: list[bytes] = []
    per_commit = 2000  # a few big commits instead of one per run
    for first in range(0, runs, per_commit):
        stream.append(
            b"commit %s\ncommitter sluice <sluice@localhost> 1700000000 +0000\n" % BRANCH.encode()
        )
        stream.append(b"data 12\nbulk import\n")
        for i in range(first, min(runs, first + per_commit)):
            rid = run_id(start + timedelta(minutes=i))
            body = template.replace("RUN_ID_PLACEHOLDER", rid)
            for name, data in (
                ("manifest.json", body.encode()),
                ("logs/train.1.log", b"log %d\n" % i),
            ):
                stream.append(
                    b"M 100644 inline runs/%s/%s/%s\n"
                    % (PIPELINE.encode(), rid.encode(), name.encode())
                )
                stream.append(b"data %d\n%s\n" % (len(data), data))
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=b"".join(stream), check=True)


def paired_ms(
    small: Callable[[], object], big: Callable[[], object], reps: int = REPS
) -> tuple[float, float]:
    """Medians of both, run turn about so that load from elsewhere hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(reps):
        for action, into in ((small, times[0]), (big, times[1])):
            started = time.perf_counter()
            action()
            into.append(time.perf_counter() - started)
    return statistics.median(times[0]) * 1000, statistics.median(times[1]) * 1000


def measure(small: Path, big: Path) -> dict[str, tuple[float, float]]:
    clock = datetime(2026, 11, 24, tzinfo=UTC)

    def fresh() -> RunManifest:
        nonlocal clock
        clock += timedelta(seconds=1)
        return realistic_manifest(run_id(clock))

    def cold_record(repo: Path) -> None:
        with ResultsStore(repo, push=False) as store:
            store.record_run(fresh(), LOGS)

    def listing(repo: Path) -> None:
        with ResultsStore(repo, push=False) as store:
            assert len(store.runs(limit=20)) == 20

    with ResultsStore(small, push=False) as one, ResultsStore(big, push=False) as other:
        warm = paired_ms(
            lambda: one.record_run(fresh(), LOGS), lambda: other.record_run(fresh(), LOGS)
        )
    return {
        "record_run_warm_ms": warm,
        "record_run_new_store_ms": paired_ms(lambda: cold_record(small), lambda: cold_record(big)),
        "runs_limit_20_ms": paired_ms(lambda: listing(small), lambda: listing(big)),
    }


def python_c(code: str) -> Callable[[], object]:
    return lambda: subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp, "small"), Path(tmp, "big")
        started = time.perf_counter()
        build(small, 10)
        build(big, 10_000)
        build_s = time.perf_counter() - started
        results = measure(small, big)
        sluice_runs = [sys.executable, "-m", "engine", "--repo", str(big), "runs", "--limit", "20"]
        imports, cli = paired_ms(
            python_c("import engine.adapters.git_results"),
            lambda: subprocess.run(sluice_runs, check=True, capture_output=True),
            reps=9,
        )
    report: dict[str, object] = {"build_s": round(build_s, 2), "runs": [10, 10_000]}
    for key, (a, b) in results.items():
        report[key] = {"10": round(a, 2), "10000": round(b, 2), "ratio": round(b / a, 3)}
    report["subprocess_list_20_ms"] = round(cli, 1)
    report["subprocess_import_only_ms"] = round(imports, 1)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"built both branches in {build_s:.1f} s (medians of {REPS} repetitions)\n")
    print(f"{'':34}{'10 runs':>12}{'10,000 runs':>14}{'ratio':>8}")
    for key, label in (
        ("record_run_warm_ms", "record_run, open store"),
        ("record_run_new_store_ms", "new store + record_run"),
        ("runs_limit_20_ms", "new store + runs(limit=20)"),
    ):
        a, b = results[key]
        print(f"{label:34}{a:>9.1f} ms{b:>11.1f} ms{b / a:>7.2f}x")
    print(f"\n{'sluice runs --limit 20 (10,000 runs)':34}{cli:>23.0f} ms   (goal < 500 ms)")
    print(f"{'python -c: import engine.adapters.git_results':34}{imports:>23.0f} ms   (of which)")


if __name__ == "__main__":
    main()
