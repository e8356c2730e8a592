"""Results branch and CLI start-up, this checkout against another (an older commit), turn about.

python benchmarks/bench_before_after.py OTHER_CHECKOUT [--rounds 15] [--json]

e.g. `git worktree add /tmp/before de5136f` then `... bench_before_after.py /tmp/before`.
Each round runs, for each checkout in turn, one process that times record_run (open store,
and new store each time) and runs(limit=20) on its own copy of a 10- and a 10,000-run
branch; then `sluice runs --limit 20`, a fresh process recording one run, and
`sluice --help`, end to end. Medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_results import build, realistic_manifest

HERE = Path(__file__).resolve().parent.parent
WORKER = """
import json, statistics, sys, time
try:
    from engine.adapters.git_results import ResultsStore
    from engine.core.manifest import RunManifest
except ImportError:  # before the re-house
    from engine.results import ResultsStore
    from engine.manifest import RunManifest
template, logs, small, big, serial = json.loads(sys.argv[1])
logs = {k: v.encode() for k, v in logs.items()}

def fresh():
    global serial
    serial += 1
    return RunManifest.from_json(template.replace("RUN_ID", f"20261124T{serial:06d}Z-{serial:06x}"))

def ms(action, reps=5):
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)

def cold(repo):
    with ResultsStore(repo, push=False) as store:
        store.record_run(fresh(), logs)

def listing(repo):
    with ResultsStore(repo, push=False) as store:
        assert len(store.runs(limit=20)) == 20

out = {}
for size, repo in (("10", small), ("10000", big)):
    with ResultsStore(repo, push=False) as store:
        out[f"record_run_warm_ms/{size}"] = ms(lambda: store.record_run(fresh(), logs))
    out[f"record_run_new_store_ms/{size}"] = ms(lambda: cold(repo))
    out[f"runs_limit_20_ms/{size}"] = ms(lambda: listing(repo))
print(json.dumps(out))
"""
ONE_RECORD = (
    WORKER.split("def ms(")[0]
    + """
with ResultsStore(big, push=False) as store:
    store.record_run(fresh(), logs)
"""
)


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=tempfile.gettempdir(), check=True, capture_output=True)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the checkout to compare with")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    roots = {"before": args.other.resolve(), "now": HERE}
    template = realistic_manifest("RUN_ID").to_json()
    logs = {"train.1.log": "epoch 1 loss=0.5\n" * 1200, "evaluate.1.log": "accuracy 0.93\n" * 80}
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in roots}
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp, "small"), 10)
        build(Path(tmp, "big"), 10_000)
        for name in roots:  # each checkout writes into its own copies
            for size in ("small", "big"):
                shutil.copytree(Path(tmp, size), Path(tmp, name, size), symlinks=True)
        for n in range(args.rounds):
            for name, root in roots.items():
                env = dict(os.environ, PYTHONPATH=str(root))
                repos = [str(Path(tmp, name, "small")), str(Path(tmp, name, "big"))]
                serial = 1000 * n + 100_000 * (name == "now")  # run ids unique per copy
                work = json.dumps([template, logs, *repos, serial])
                once = json.dumps([template, logs, *repos, serial + 500])
                done = subprocess.run(
                    [sys.executable, "-c", WORKER, work], env=env, check=True, capture_output=True
                )
                found = json.loads(done.stdout) | {
                    "sluice runs --limit 20 (10,000 runs)": timed(
                        [
                            sys.executable,
                            "-m",
                            "engine",
                            "--repo",
                            repos[1],
                            "runs",
                            "--limit",
                            "20",
                        ],
                        env,
                    ),
                    "a fresh process records one run (10,000 runs)": timed(
                        [sys.executable, "-c", ONE_RECORD, once], env
                    ),
                    "sluice --help": timed([sys.executable, "-m", "engine", "--help"], env),
                }
                for key, value in found.items():
                    samples[name].setdefault(key, []).append(value)
    medians = {
        name: {k: round(statistics.median(v), 1) for k, v in found.items()}
        for name, found in samples.items()
    }
    if args.json:
        print(json.dumps(medians, indent=2))
        return
    print(f"medians of {args.rounds} rounds; before = {roots['before']}\n")
    print(f"{'':48}{'before':>10}{'now':>10}{'now/before':>12}")
    for key, before in medians["before"].items():
        now = medians["now"][key]
        print(f"{key:48}{before:>7.1f} ms{now:>7.1f} ms{now / before:>11.2f}x")


if __name__ == "__main__":
    main()
