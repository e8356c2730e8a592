"""Step logs on the results branch: packed bytes per run, before and after (issue 16).

    python benchmarks/bench_logs.py [--runs 10] [--timings 7] [--json]

A 6-step pipeline whose steps each print 0 B, 10 KiB or 1 MiB of log is recorded `--runs`
times onto a fresh results branch by the engine's own recording (core/layout.run_record
through the git adapter, one commit per run), once per scheme, side by side:

    before      each log whole on the branch (what the engine wrote until now)
    gzip tail   the last 32 KiB, gzip-compressed (mtime 0, no name), as `<step>.<n>.log.gz`
    tail        the last 32 KiB as plain text (the scheme chosen: run/branch_logs.py);
                a longer log goes whole to the artifact store (its bytes are shown apart)

Then `git gc` and `git count-objects -v`: the pack's size divided by the runs, minus the same
branch's size with empty logs (the manifests: "logs excluded"). Two kinds of log:

    varied      training-like lines whose numbers differ in every run (random floats)
    alike       build-like lines, the same in every run but for a few numbers

`sluice logs` as a user waits: a child process from start to exit (median of `--timings`),
on a branch holding one run of 1 MiB logs: the tail, and `--full` (the whole log from a
file:// store, sha256 checked), beside `python -c pass` and `sluice show RUN`. The engine's
modules are compiled first and PYTHONDONTWRITEBYTECODE is dropped from the children's
environment, as bench_cached_run.py does (an installed engine has its bytecode).
"""

from __future__ import annotations

import argparse
import compileall
import gzip
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.adapters.artifacts import ArtifactStore  # noqa: E402
from engine.adapters.git_results import ResultsStore  # noqa: E402
from engine.core import layout, log_tail  # noqa: E402
from engine.core.manifest import Attempt, RunManifest, RunStatus, StepRecord  # noqa: E402
from engine.run.branch_logs import branch_logs  # noqa: E402

STEPS = 6
SIZES = {"0 B": 0, "10 KiB": 10 * 1024, "1 MiB": 1024 * 1024}
SCHEMES = ("before", "gzip tail", "tail")
GOAL_KIB = 4.0  # per run of a 6-step pipeline, logs excluded (issue 16)


def varied(size: int, seed: int) -> bytes:
    """Training output: every number differs from run to run."""
    r, lines, total, i = random.Random(seed), [], 0, 0
    while total < size:
        i += 1
        line = (
            f"epoch {i // 50:3d} step {i:6d} loss={r.random():.5f} acc={r.random():.4f} "
            f"lr=1.0e-03 {r.random() * 100:.2f}s\n"
        )
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def alike(size: int, seed: int) -> bytes:
    """Build output: the same lines each run, one line in ten with a varying number."""
    r, lines, total, i = random.Random(seed), [], 0, 0
    while total < size:
        i += 1
        line = (
            f"[{r.randint(0, 10**6):7d}] step {i} took {r.random():.3f}s\n"
            if i % 10 == 0
            else f"Collecting package-{i} (from -r requirements.txt (line {i}))\n"
        )
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


KINDS: dict[str, Callable[[int, int], bytes]] = {"varied": varied, "alike": alike}


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr}")
    return done.stdout


def _manifest(n: int) -> RunManifest:
    steps = {
        f"s{i}": StepRecord(
            status="succeeded",
            attempts=[Attempt(number=1, started_at="t", log=f"logs/s{i}.1.log")],
        )
        for i in range(STEPS)
    }
    return RunManifest(
        run_id=f"20261203T{n:06d}Z-00000{n % 10}",
        pipeline="bench",
        pipeline_file="pipelines/bench.yaml",
        pipeline_sha256="0" * 64,
        started_at="2026-12-03T00:00:00.000Z",
        status=RunStatus.succeeded,
        steps=steps,
    )


def record(root: Path, scheme: str, kind: str, size: int, runs: int) -> tuple[float, int]:
    """(packed bytes per run on the branch, bytes per run put in the artifact store)."""
    repo = root / f"{scheme}-{kind}-{size}".replace(" ", "")
    _git(root, "init", "-q", str(repo))
    store = ArtifactStore(f"file://{repo / 'store'}", repo)
    stored_before = 0
    with ResultsStore(repo, push=False) as results:
        for n in range(runs):
            manifest, run_dir = _manifest(n), repo / "local" / str(n)
            (run_dir / "logs").mkdir(parents=True)
            written = []
            for i in range(STEPS):
                rel = f"logs/s{i}.1.log"
                (run_dir / rel).write_bytes(KINDS[kind](size, n * STEPS + i))
                written.append(rel)
            if scheme == "before":
                logs = {Path(r).name: (run_dir / r).read_bytes() for r in written}
            elif scheme == "tail":
                logs = branch_logs(run_dir, written, manifest, store, print)
            else:
                logs = {
                    Path(r).name + ".gz": gzip.compress(
                        log_tail.tail((run_dir / r).read_bytes()), 9, mtime=0
                    )
                    for r in written
                }
            results.commit(*layout.run_record(manifest, logs, {}))
    _git(repo, "gc", "-q")
    counts = dict(line.split(": ") for line in _git(repo, "count-objects", "-v").splitlines())
    packed = (int(counts["size-pack"]) + int(counts["size"])) * 1024
    for path in (repo / "store").rglob("*"):
        stored_before += path.stat().st_size if path.is_file() else 0
    return packed / runs, stored_before // runs


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.pop("GITHUB_ACTIONS", None)
    env["PYTHONPATH"] = str(REPO)
    return env


def timings(root: Path, rounds: int) -> dict[str, float]:
    """Median seconds of `sluice logs` (tail, --full) beside `python -c pass`."""
    repo = root / "timed"
    _git(root, "init", "-q", str(repo))
    manifest, run_dir = _manifest(1), repo / ".sluice" / "runs" / "r"
    (run_dir / "logs").mkdir(parents=True)
    written = []
    for i in range(STEPS):
        (run_dir / f"logs/s{i}.1.log").write_bytes(varied(SIZES["1 MiB"], i))
        written.append(f"logs/s{i}.1.log")
    store = ArtifactStore(layout.DEFAULT_ARTIFACTS, repo)
    with ResultsStore(repo, push=False) as results:
        logs = branch_logs(run_dir, written, manifest, store, print)
        results.commit(*layout.run_record(manifest, logs, {}))
    compileall.compile_dir(str(REPO / "engine"), quiet=1)
    sluice = [sys.executable, "-m", "engine", "--repo", str(repo), "logs", manifest.run_id, "s0"]
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "sluice logs RUN STEP (tail)": sluice,
        "sluice logs RUN STEP --full (1 MiB)": [*sluice, "--full"],
        "sluice show RUN (for comparison)": [*sluice[:5], "show", manifest.run_id],
    }
    seen: dict[str, list[float]] = {name: [] for name in commands}
    env = _env()
    for _ in range(rounds):
        for name, argv in commands.items():
            start = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, env=env)
            seen[name].append(time.perf_counter() - start)
            if done.returncode:
                raise SystemExit(f"{name}: exit {done.returncode}: {done.stderr.decode()}")
    return {name: statistics.median(values) for name, values in seen.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--timings", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures: dict[str, object] = {"runs": args.runs, "tail_bytes": log_tail.TAIL_BYTES}
    with tempfile.TemporaryDirectory(prefix="sluice-bench-logs-") as scratch:
        root = Path(scratch)
        table = {}
        for kind in KINDS:
            for label, size in SIZES.items():
                for scheme in SCHEMES:
                    table[(kind, label, scheme)] = record(root, scheme, kind, size, args.runs)
        figures["packed"] = {" / ".join(k): v for k, v in table.items()}
        figures["timings"] = timings(root, args.timings)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    base = {kind: table[(kind, "0 B", "before")][0] for kind in KINDS}
    print(f"Packed KiB per run of a {STEPS}-step pipeline on the results branch ({args.runs} runs,")
    print(
        f"tail {log_tail.TAIL_BYTES // 1024} KiB; in brackets: the logs alone, the manifests' share taken off):\n"
    )
    print(f"| log kind | each step prints | {' | '.join(SCHEMES)} | whole logs in the store |")
    print(f"| --- | --- | {' | '.join('---:' for _ in SCHEMES)} | ---: |")
    for kind in KINDS:
        for label in SIZES:
            cells = []
            for scheme in SCHEMES:
                packed = table[(kind, label, scheme)][0]
                cells.append(f"{packed / 1024:.1f} ({(packed - base[kind]) / 1024:.1f})")
            stored = table[(kind, label, "tail")][1]
            print(f"| {kind} | {label} | {' | '.join(cells)} | {stored / 1024:.0f} KiB |")
    manifests = max(base.values()) / 1024
    verdict = "meets" if manifests <= GOAL_KIB else "misses"
    print(
        f"\nManifests alone (6 steps, logs excluded): {manifests:.1f} KiB per run: {verdict} "
        f"the goal of <= {GOAL_KIB:.0f} KiB."
    )
    print("\n`sluice logs` as a child process, median of", args.timings, "rounds:\n")
    for name, seconds in figures["timings"].items():  # type: ignore[attr-defined]
        print(f"  {name:<38} {seconds:.3f} s")


if __name__ == "__main__":
    main()
