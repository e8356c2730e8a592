"""A fully cached re-run of a 20-step pipeline against its first run, measured side by side.

    python benchmarks/bench_cache.py [--rounds 3] [--json]

Each round makes a fresh git repository, runs a 20-step chain (every step writes an output
its successor reads) through the engine with the results branch and the artifact store,
then runs it again unchanged: every step is `cached` and no container starts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.adapters.docker_runtime import DockerRuntime
from engine.adapters.pipeline_files import load_file
from engine.app.execution import execute, run_options
from engine.core.manifest import Trigger
from engine.core.spec import RepoConfig

IMAGE = "sluice-test/busybox:1"


def chain(n: int) -> str:
    lines = [f"name: chain\ndefaults: {{image: {IMAGE}, workspace: false}}\nsteps:"]
    for i in range(n):
        if i:
            body = f"cat /sluice/inputs/s{i - 1}/out.txt > /sluice/outputs/out.txt; echo {i} >> /sluice/outputs/out.txt"
            lines.append(f"  - name: s{i}\n    needs: [s{i - 1}]\n    run: '{body}'")
        else:
            lines.append("  - name: s0\n    run: 'echo 0 > /sluice/outputs/out.txt'")
    return "\n".join(lines) + "\n"


def one_round(root: Path, runtime: DockerRuntime) -> tuple[float, float]:
    repo = Path(tempfile.mkdtemp(dir=root))
    (repo / "pipelines").mkdir()
    (repo / "pipelines" / "chain.yaml").write_text(chain(20))
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    loaded = load_file(repo / "pipelines" / "chain.yaml", repo)
    times = []
    for expected in ("succeeded", "cached"):
        options = run_options(
            repo, RepoConfig(), loaded, params={}, trigger=Trigger(), max_parallel=4
        )
        start = time.perf_counter()
        manifest = execute(repo, loaded, options, runtime=runtime)
        times.append(time.perf_counter() - start)
        statuses = {s.status.value for s in manifest.steps.values()}
        assert statuses == {expected}, statuses
    return times[0], times[1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runtime = DockerRuntime()
    firsts, cached = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            first, again = one_round(Path(tmp), runtime)
            firsts.append(first)
            cached.append(again)
    result = {
        "first_run_s": [round(x, 3) for x in firsts],
        "cached_run_s": [round(x, 3) for x in cached],
        "speedup_median": round(
            statistics.median(f / c for f, c in zip(firsts, cached, strict=True)), 1
        ),
        "cached_ms_per_step": round(statistics.median(cached) / 20 * 1000, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"20-step chain, first run: median {statistics.median(firsts):.2f} s")
        print(
            f"same pipeline, fully cached: median {statistics.median(cached):.3f} s ({result['cached_ms_per_step']} ms/step)"
        )
        print(
            f"cached re-run is {result['speedup_median']}x faster (median of {args.rounds} rounds)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
