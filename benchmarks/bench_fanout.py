"""A fanned-out step against the same number of plain steps: the per-step overhead of fan-out.

    python benchmarks/bench_fanout.py [--rounds 5] [--steps 64] [--parallel 4] [--json]

Two pipelines of the same no-op busybox step (`run: 'true'`, `workspace: false`) that gets
one value in its env (`ITEM`), so that every step has a cache key of its own in both (a run
records one cache entry per distinct key):

- sweep: one step `s` with `foreach: [0, 1, ..., 63]` and `env: {ITEM: "${{ matrix.item }}"}`,
  i.e. 64 instances `s[0]`..`s[63]` and the group `s` (which runs no container);
- plain: 64 independent steps `s0`..`s63`, step `si` with `env: {ITEM: "i"}`.

Each is run as `sluice run --no-cache -q --json --max-parallel 4` in a child process (process
start to exit, as a user waits), with bytecode as an installed engine has it, and then in this
process (the executor alone: no start-up, no CLI), where the engine's CPU time is its own.
Every round runs both, alternating which goes first; one untimed run of each warms the image
and the daemon. The figure is the median over rounds of sweep / plain (per round), with the
medians of the wall and CPU time per step beside it. Goal: sweep / plain <= 1.05.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_engine import CHILD_ENV, IMAGE, make_repo  # the engine benchmark's repo and env

GOAL = 1.05


def sweep(n: int) -> str:
    items = ", ".join(str(i) for i in range(n))
    return (
        f"name: p\ndefaults: {{image: {IMAGE}, workspace: false}}\nsteps:\n"
        f'  - name: s\n    foreach: [{items}]\n    env: {{ITEM: "${{{{ matrix.item }}}}"}}\n'
        "    run: 'true'\n"
    )


def plain(n: int) -> str:
    steps = "\n".join(
        f"  - name: s{i}\n    env: {{ITEM: \"{i}\"}}\n    run: 'true'" for i in range(n)
    )
    return f"name: p\ndefaults: {{image: {IMAGE}, workspace: false}}\nsteps:\n{steps}\n"


def run_once(repo: Path, parallel: int, containers: int) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one `sluice run`; checks what it ran."""
    argv = [sys.executable, "-m", "engine", "run", "p", "--no-cache", "-q", "--json"]
    argv += ["--max-parallel", str(parallel)]
    before = os.times()
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=repo, capture_output=True, text=True, env=CHILD_ENV)
    wall = time.perf_counter() - start
    after = os.times()
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    manifest = json.loads(done.stdout)
    ran = [rec for rec in manifest["steps"].values() if rec["attempts"]]
    if len(ran) != containers or any(r["status"] != "succeeded" for r in ran):
        raise SystemExit(f"expected {containers} steps to run and succeed: {manifest['steps']}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu


def run_in_process(repo: Path, parallel: int, containers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one run through the executor."""
    from engine.adapters.docker_runtime import DockerRuntime
    from engine.adapters.pipeline_files import load_file
    from engine.app.execution import execute, run_options
    from engine.core.config import RepoConfig
    from engine.core.manifest import Trigger

    loaded = load_file(repo / "pipelines" / "p.yaml", repo)
    options = run_options(repo, RepoConfig(), loaded, trigger=Trigger(), max_parallel=parallel)
    options.use_cache = False
    cpu, wall = time.process_time(), time.perf_counter()
    manifest = execute(repo, loaded, options, runtime=DockerRuntime())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ran = [rec for rec in manifest.steps.values() if rec.attempts]
    if manifest.status.value != "succeeded" or len(ran) != containers:
        raise SystemExit(f"in process: {manifest.status}, {len(ran)} of {containers} ran")
    return wall, cpu


def _summary(wall: dict[str, list[float]], cpu: dict[str, list[float]], n: int) -> dict[str, Any]:
    ratios = [s / p for s, p in zip(wall["sweep"], wall["plain"], strict=True)]
    cpu_ratios = [s / p for s, p in zip(cpu["sweep"], cpu["plain"], strict=True)]
    return {
        "wall_s": {k: [round(x, 3) for x in v] for k, v in wall.items()},
        "ms_per_step": {k: round(statistics.median(v) / n * 1000, 1) for k, v in wall.items()},
        "cpu_ms_per_step": {k: round(statistics.median(v) / n * 1000, 1) for k, v in cpu.items()},
        "ratio": round(statistics.median(ratios), 3),
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "cpu_ratio": round(statistics.median(cpu_ratios), 3),
    }


def measure(rounds: int, n: int, parallel: int, root: Path) -> dict[str, Any]:
    repos = {"sweep": make_repo(root, sweep(n)), "plain": make_repo(root, plain(n))}
    for kind in ("sweep", "plain"):  # warm-up, untimed
        run_once(repos[kind], parallel, n)
        run_in_process(repos[kind], parallel, n)
    ways = {"subprocess": run_once, "in_process": run_in_process}
    wall = {way: {"sweep": [], "plain": []} for way in ways}
    cpu = {way: {"sweep": [], "plain": []} for way in ways}
    for i in range(rounds):
        order = ("plain", "sweep") if i % 2 == 0 else ("sweep", "plain")
        for way, run in ways.items():
            for kind in order:
                w, c = run(repos[kind], parallel, n)
                wall[way][kind].append(w)
                cpu[way][kind].append(c)
    return {
        "steps": n,
        "max_parallel": parallel,
        "rounds": rounds,
        **{way: _summary(wall[way], cpu[way], n) for way in ways},
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import engine

    compileall.compile_dir(Path(engine.__file__).parent, quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        r = measure(args.rounds, args.steps, args.parallel, Path(tmp))
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(
        f"{r['steps']} no-op steps at --max-parallel {r['max_parallel']}: one fanned-out step "
        f"(foreach) against plain steps, {r['rounds']} rounds, medians"
    )
    for way, title in (
        ("subprocess", "`sluice run` as a child process (as a user waits)"),
        ("in_process", "in process (the executor alone)"),
    ):
        w = r[way]
        met = "met" if w["ratio"] <= GOAL else "missed"
        print(f"{title}:")
        print(f"  sweep {w['wall_s']['sweep']} s")
        print(f"  plain {w['wall_s']['plain']} s")
        print(
            f"  per step: sweep {w['ms_per_step']['sweep']} ms, plain "
            f"{w['ms_per_step']['plain']} ms (wall)"
        )
        print(
            f"  engine CPU per step: sweep {w['cpu_ms_per_step']['sweep']} ms, plain "
            f"{w['cpu_ms_per_step']['plain']} ms (ratio {w['cpu_ratio']}x)"
        )
        print(
            f"  sweep / plain: {w['ratio']}x (range {w['ratio_range'][0]}-"
            f"{w['ratio_range'][1]})   goal <= {GOAL}x: {met}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
