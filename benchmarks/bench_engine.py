"""Engine overhead against a raw docker SDK loop, and wide-DAG parallelism, measured side by side.

    python benchmarks/bench_engine.py [--rounds 3] [--json]

1. A 20-step chain of no-op busybox steps through the engine, against a raw docker SDK loop
   (create, start, wait, remove) over 20 containers of the same image, alternated in one
   process so both see the same machine state. Reports the median ratio (goal <= 1.15x) and
   the engine's own CPU time per step.
2. A 40-step wide DAG of `sleep 1` steps at --max-parallel 8, against the ideal 5 s
   (goal: within 10 %).
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

import docker

from engine.adapters.artifacts import DEFAULT_URL, ArtifactStore
from engine.adapters.docker_runtime import DockerRuntime
from engine.adapters.pipeline_files import load_file
from engine.run.executor import Executor, RunOptions

IMAGE = "sluice-test/busybox:1"


def make_repo(root: Path, text: str) -> Path:
    repo = Path(tempfile.mkdtemp(dir=root))
    (repo / "pipelines").mkdir()
    (repo / "pipelines" / "p.yaml").write_text(text)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    return repo


def chain(n: int) -> str:
    lines = [f"name: chain\ndefaults: {{image: {IMAGE}}}\nsteps:"]
    for i in range(n):
        needs = f"\n    needs: [s{i - 1}]" if i else ""
        lines.append(f"  - name: s{i}\n    run: 'true'{needs}")
    return "\n".join(lines) + "\n"


def wide(n: int) -> str:
    steps = "\n".join(f"  - name: s{i}\n    run: sleep 1" for i in range(n))
    return f"name: wide\ndefaults: {{image: {IMAGE}}}\nsteps:\n{steps}\n"


def run_engine(repo: Path, runtime: DockerRuntime, max_parallel: int) -> tuple[float, float, str]:
    loaded = load_file(repo / "pipelines" / "p.yaml", repo)
    artifacts = ArtifactStore(DEFAULT_URL, repo)
    options = RunOptions(params={}, max_parallel=max_parallel, artifacts=artifacts)
    cpu, wall = time.process_time(), time.perf_counter()
    manifest = Executor(loaded, runtime, repo=repo, options=options).run()
    return time.perf_counter() - wall, time.process_time() - cpu, manifest.status.value


def run_raw(client: docker.DockerClient, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        container = client.containers.create(IMAGE, ["true"], network_mode="none")
        container.start()
        container.wait()
        container.remove(force=True)
    return time.perf_counter() - start


def run_raw_wide(client: docker.DockerClient, n: int, parallel: int) -> float:
    """The same wide DAG as bare SDK calls on `parallel` threads: the machine's floor."""
    from concurrent.futures import ThreadPoolExecutor

    def one(_: int) -> None:
        container = client.containers.create(IMAGE, ["sleep", "1"], network_mode="none")
        container.start()
        container.wait()
        container.remove(force=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    client = docker.from_env()
    runtime = DockerRuntime(client)
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_raw(client, 2)  # warm the image and the daemon's caches
        engine_s, raw_s, cpu_s = [], [], []
        for _ in range(args.rounds):
            raw_s.append(run_raw(client, 20))
            wall, cpu, status = run_engine(make_repo(root, chain(20)), runtime, 4)
            assert status == "succeeded", status
            engine_s.append(wall)
            cpu_s.append(cpu)
        ratio = statistics.median(e / r for e, r in zip(engine_s, raw_s, strict=True))
        results["chain20"] = {
            "engine_s": [round(x, 3) for x in engine_s],
            "raw_sdk_s": [round(x, 3) for x in raw_s],
            "ratio_median": round(ratio, 3),
            "raw_ms_per_container": round(statistics.median(raw_s) / 20 * 1000, 1),
            "engine_ms_per_step": round(statistics.median(engine_s) / 20 * 1000, 1),
            "engine_cpu_ms_per_step": round(statistics.median(cpu_s) / 20 * 1000, 1),
        }
        raw_wide = run_raw_wide(client, 40, 8)
        wall, _, status = run_engine(make_repo(root, wide(40)), runtime, 8)
        assert status == "succeeded", status
        results["wide40_p8"] = {
            "wall_s": round(wall, 3),
            "ideal_s": 5.0,
            "over_ideal": round(wall / 5.0 - 1, 3),
            "raw_sdk_s": round(raw_wide, 3),
            "over_raw": round(wall / raw_wide - 1, 3),
        }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        c, w = results["chain20"], results["wide40_p8"]
        assert isinstance(c, dict) and isinstance(w, dict)
        print(
            f"20-step chain: engine {c['engine_ms_per_step']} ms/step, raw SDK {c['raw_ms_per_container']} ms/container"
        )
        print(
            f"  ratio (median of {args.rounds} alternated rounds): {c['ratio_median']}x   goal <= 1.15x"
        )
        print(f"  engine CPU per step: {c['engine_cpu_ms_per_step']} ms")
        print(
            f"40 x sleep 1 at --max-parallel 8: {w['wall_s']} s vs ideal 5 s ({w['over_ideal']:+.1%})   goal <= +10%"
        )
        print(
            f"  the same 40 containers as raw SDK calls on 8 threads: {w['raw_sdk_s']} s "
            f"(engine {w['over_raw']:+.1%})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
