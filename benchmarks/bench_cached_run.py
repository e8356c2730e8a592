"""A fully cached re-run of a 20-step chain as a user waits for it (issue 16).

    python benchmarks/bench_cached_run.py [--runs 7] [--uncached 1] [--json] [--no-breakdown]

Every figure is a child process from its start to its exit, interleaved with the others in
the same invocation (a busy machine slows them alike); the figure is the median:

    python -c pass                the interpreter's floor
    sluice --help                 start-up alone                              goal <= 0.15 s
    sluice run chain (cached)     all 20 steps `cached`, no container starts   goal < 0.5 s
    sluice runs --limit 20        the run list of this (small) results branch  goal < 0.5 s
    sluice show RUN               one run's record
    sluice run chain --no-cache   the same 20 steps run (`--uncached N` times; 0: skip)

The repository is a fresh git repository with no remote; the engine's own modules are
compiled to bytecode first (as an installed engine is) and PYTHONDONTWRITEBYTECODE is
dropped from the children's environment: without bytecode every command pays ~0.1 s of
compiling the engine's sources, which no installed engine does.

The breakdown (one more child per round, in-process timings): imports, loading the pipeline
(the pipeline cache hits), the run's options (results branch), the container runtime, the
run itself (cache lookups, the record and its commits), and which heavy modules the cached
re-run imported. Anchor: `dvc repro` with every stage cached takes 0.75 s here (issue 16).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE = "sluice-test/busybox:1"
STEPS = 20
GOALS = {"cached": 0.5, "help": 0.15, "runs": 0.5}
DVC_CACHED_S = 0.75
HEAVY = ("docker", "requests", "rich", "yaml", "fsspec", "croniter", "engine.core.checks")


def chain(n: int) -> str:
    """A pipeline of `n` steps, each reading its predecessor's output."""
    lines = [f"name: chain\ndefaults: {{image: {IMAGE}, workspace: false}}\nsteps:"]
    for i in range(n):
        if i:
            body = f"cat /sluice/inputs/s{i - 1}/out.txt > /sluice/outputs/out.txt; echo {i} >> /sluice/outputs/out.txt"
            lines.append(f"  - name: s{i}\n    needs: [s{i - 1}]\n    run: '{body}'")
        else:
            lines.append("  - name: s0\n    run: 'echo 0 > /sluice/outputs/out.txt'")
    return "\n".join(lines) + "\n"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.pop("GITHUB_ACTIONS", None)
    return env


def _sluice() -> list[str]:
    script = Path(sysconfig.get_path("scripts")) / "sluice"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "engine"]


def make_repo(root: Path) -> Path:
    repo = root / "repo"
    (repo / "pipelines").mkdir(parents=True)
    (repo / "pipelines" / "chain.yaml").write_text(chain(STEPS))
    git = ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "chain"], check=True)
    return repo


def timed(argv: list[str], repo: Path, expect: int = 0) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=repo, env=_env(), capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return took, done.stdout


BREAKDOWN = r"""
import json, sys, time
marks = {}
t0 = time.perf_counter()
from engine.cli.common import State, say
from engine.app import compose, runs
from engine.core.manifest import Trigger
marks["imports"] = time.perf_counter() - t0

spent = {"runtime": 0.0, "record": 0.0}
def timing(owner, name, key):
    inner = getattr(owner, name)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[key] += time.perf_counter() - t
    setattr(owner, name, wrapper)
timing(compose, "docker_runtime", "runtime")
from engine.adapters.git_results import ResultsStore
for name in ("commit", "push"):
    if hasattr(ResultsStore, name):
        timing(ResultsStore, name, "record")

state = State(None, None)
place = runs.Place(state.repo, state.config, None, say, True)
t = time.perf_counter()
loaded = place.pipeline("chain")
marks["load"] = time.perf_counter() - t
t = time.perf_counter()
options = runs.options(place, loaded, params=dict(loaded.pipeline.params), trigger=Trigger(kind="manual"))
marks["options"] = time.perf_counter() - t
t = time.perf_counter()
manifests = runs.launch(place, loaded, options, on_executor=lambda e: None, quiet=True)
run = time.perf_counter() - t
marks["runtime"] = spent["runtime"]
marks["record"] = spent["record"]
marks["steps"] = run - spent["runtime"] - spent["record"]
marks["total"] = time.perf_counter() - t0
statuses = sorted({s.status.value for s in manifests[0].steps.values()})
heavy = [m for m in sys.argv[1].split(",") if m in sys.modules]
print(json.dumps({"marks": marks, "statuses": statuses, "heavy": heavy, "modules": len(sys.modules)}))
"""


def breakdown(repo: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", BREAKDOWN, ",".join(HEAVY)],
        cwd=repo,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"breakdown failed:\n{done.stderr[-2000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(runs: int, uncached: int, with_breakdown: bool) -> dict[str, object]:
    compileall.compile_dir(REPO / "engine", quiet=1)  # as an installed engine is
    sluice = _sluice()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-cached-") as tmp:
        repo = make_repo(Path(tmp))
        timed([*sluice, "run", "chain", "-q"], repo)  # the first run: every step runs
        run_id = json.loads(timed([*sluice, "runs", "--limit", "1", "--json"], repo)[1])[0][
            "run_id"
        ]
        table = {
            "floor": [sys.executable, "-c", "pass"],
            "help": [*sluice, "--help"],
            "cached": [*sluice, "run", "chain", "-q"],
            "runs": [*sluice, "runs", "--limit", "20"],
            "show": [*sluice, "show", run_id],
        }
        times: dict[str, list[float]] = {name: [] for name in [*table, "uncached"]}
        parts: list[dict[str, float]] = []
        heavy: list[str] = []
        for argv in table.values():  # warm the page cache and the pipeline cache
            timed(argv, repo)
        for round_ in range(runs):
            for name, argv in table.items():
                times[name].append(timed(argv, repo)[0])
            if round_ < uncached:
                times["uncached"].append(
                    timed([*sluice, "run", "chain", "-q", "--no-cache"], repo)[0]
                )
            if with_breakdown:
                found = breakdown(repo)
                if found["statuses"] != ["cached"]:
                    raise SystemExit(f"the breakdown's run was not all cached: {found['statuses']}")
                parts.append(found["marks"])  # type: ignore[arg-type]
                heavy = found["heavy"]  # type: ignore[assignment]
    return {
        "median_s": {k: round(statistics.median(v), 3) for k, v in times.items() if v},
        "min_s": {k: round(min(v), 3) for k, v in times.items() if v},
        "breakdown_median_s": {
            k: round(statistics.median(p[k] for p in parts), 3) for k in (parts[0] if parts else {})
        },
        "heavy_modules_in_cached_run": heavy,
        "runs": runs,
    }


def report(result: dict[str, object]) -> None:
    med: dict[str, float] = result["median_s"]  # type: ignore[assignment]
    low: dict[str, float] = result["min_s"]  # type: ignore[assignment]
    floor = med["floor"]
    labels = {
        "floor": "python -c pass (floor)",
        "help": "sluice --help",
        "cached": f"sluice run chain, fully cached ({STEPS} steps)",
        "runs": "sluice runs --limit 20",
        "show": "sluice show RUN",
        "uncached": f"sluice run chain --no-cache ({STEPS} steps run)",
    }
    print(f"{'command':<44} {'median':>8} {'min':>8} {'x floor':>8}  goal")
    for key, label in labels.items():
        if key not in med:
            continue
        goal = GOALS.get(key)
        verdict = ""
        if goal is not None:
            verdict = f"{'met' if med[key] < goal or (key == 'help' and med[key] <= goal) else 'MISSED'} (< {goal} s)"
        print(
            f"{label:<44} {med[key]:>7.3f}s {low[key]:>7.3f}s {med[key] / floor:>7.1f}x  {verdict}"
        )
    if "uncached" in med:
        print(f"cached re-run / uncached run: {med['cached'] / med['uncached']:.2f}")
    print(
        f"cached re-run / dvc repro all cached ({DVC_CACHED_S} s, issue 16): {med['cached'] / DVC_CACHED_S:.2f}"
    )
    parts: dict[str, float] = result["breakdown_median_s"]  # type: ignore[assignment]
    if parts:
        print(
            "\nin-process breakdown of the cached re-run (median; interpreter start-up excluded):"
        )
        for key, label in (
            ("imports", "imports (cli, app.runs, manifest)"),
            ("load", "load the pipeline (cache hit)"),
            ("options", "options (results branch, artifact store)"),
            ("runtime", "container runtime (docker client)"),
            ("steps", f"{STEPS} cache lookups, reporter, run bookkeeping"),
            ("record", "results-branch commits"),
            ("total", "total"),
        ):
            print(f"  {label:<48} {parts[key] * 1000:>7.1f} ms")
        heavy = result["heavy_modules_in_cached_run"]
        print(f"  heavy modules the cached re-run imported: {', '.join(heavy) or 'none'}")  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--uncached", type=int, default=1, help="uncached runs (0: none)")
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.runs, args.uncached, not args.no_breakdown)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
