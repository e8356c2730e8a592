"""Loader and CLI start-up benchmarks: `python benchmarks/bench_loader.py [--json]`.

(a) load + validate + plan one generated 5,000-step pipeline from text   goal < 1 s
(b) `sluice validate` of a folder of 500 generated pipelines (subprocess)  goal < 3 s
(c) `sluice --help` start-up (subprocess, median of 20 runs)              goal < 0.15 s
    next to `python -c pass`, the interpreter's own floor.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from engine.core.manifest import StepStatus  # noqa: E402
from engine.core.parse import load_text  # noqa: E402
from engine.core.planner import Planner  # noqa: E402


@dataclass
class Measure:
    name: str
    goal_s: float | None
    median_s: float
    min_s: float
    runs: int

    @property
    def verdict(self) -> str:
        if self.goal_s is None:
            return ""
        return "ok" if self.median_s < self.goal_s else "MISSED"


def generate_pipeline(steps: int, name: str = "bench", seed: int = 7) -> str:
    """A realistic DAG as YAML text: each step needs 1-3 earlier ones (mostly recent ones),
    with `when`, `config`, `env` and `retries` on some steps."""
    rng = random.Random(seed)
    out = [
        f"name: {name}",
        "description: generated for benchmarks",
        "triggers:",
        '  - cron: "0 2 * * *"',
        '  - push: {paths: ["src/**"]}',
        "params:",
        "  min_accuracy: 0.9",
        "  n_estimators: 100",
        "  tag: v1",
        "defaults:",
        "  image: python:3.11-slim",
        "  timeout: 30m",
        "  retries: {limit: 2, backoff: 10s, factor: 2, max_backoff: 5m}",
        "  env: {LOG_LEVEL: info}",
        "steps:",
    ]
    for i in range(steps):
        out.append(f"  - name: step-{i}")
        out.append(f"    run: python steps/step_{i % 50}.py --index {i}")
        if i:
            window = range(max(0, i - 50), i)  # recent steps, like real pipelines' stages
            needs = sorted(rng.sample(list(window), k=min(len(window), rng.randint(1, 3))))
            out.append(f"    needs: [{', '.join(f'step-{n}' for n in needs)}]")
            if i % 7 == 0:
                out.append(
                    f'    when: "steps.step-{needs[0]}.metrics.accuracy >= params.min_accuracy'
                    f" and steps.step-{needs[-1]}.status == 'succeeded'\""
                )
        if i % 3 == 0:
            out.append(
                '    config: {n_estimators: "${{ params.n_estimators }}", '
                f'name: "model-{i}-${{{{ params.tag }}}}", layers: [64, 32], seed: {i}}}'
            )
        if i % 4 == 0:
            out.append(f'    env: {{SHARD: "{i % 16}", TAG: "${{{{ params.tag }}}}"}}')
        if i % 5 == 0:
            out.append("    retries: 3")
        elif i % 11 == 0:
            out.append("    retries: {limit: 1, backoff: 30s, outcomes: [failed, error]}")
        if i % 13 == 0:
            out.append("    resources: {cpus: 2, memory: 4g}")
        if i % 17 == 0:
            out.append("    type: training")
    out += ["finally:", "  - name: notify", "    run: python steps/notify.py"]
    return "\n".join(out) + "\n"


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def measure(name: str, goal: float | None, times: list[float]) -> Measure:
    return Measure(name, goal, statistics.median(times), min(times), len(times))


def bench_load(steps: int, runs: int) -> Measure:
    text = generate_pipeline(steps)

    def load_and_plan() -> None:
        loaded = load_text(text, "bench.yaml")
        planner = Planner(loaded.dag, {step.name: step for step in loaded.steps})
        pending = dict.fromkeys(loaded.dag.order, StepStatus.pending)
        pending.update(dict.fromkeys(loaded.dag.finally_steps, StepStatus.pending))
        first = planner.next(pending, {"params": loaded.pipeline.params})  # a run's first decision
        assert [d.step for d in first] == ["step-0"]

    return measure(f"(a) load+validate+plan {steps:,} steps", 1.0, timed(load_and_plan, runs))


def _sluice(*args: str) -> list[str]:
    found = shutil.which("sluice")
    return [found, *args] if found else [sys.executable, "-m", "engine", *args]


def bench_validate_folder(files: int, runs: int) -> Measure:
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        root = Path(tmp)
        (root / ".git").mkdir()
        for i in range(files):
            folder = root / "pipelines" / f"team-{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"p{i}.yaml").write_text(generate_pipeline(12, name=f"pipeline-{i}", seed=i))
        command = _sluice("--repo", str(root), "validate")

        def validate() -> None:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"sluice validate failed:\n{done.stderr[-2000:]}")

        return measure(f"(b) sluice validate, {files} files", 3.0, timed(validate, runs))


def bench_startup(runs: int) -> list[Measure]:
    def quiet(command: list[str]) -> Callable[[], object]:
        return lambda: subprocess.run(command, capture_output=True, check=True)

    results = [
        measure("(c) sluice --help", 0.15, timed(quiet(_sluice("--help")), runs)),
        measure(
            "    python -c pass (floor)", None, timed(quiet([sys.executable, "-c", "pass"]), runs)
        ),
    ]
    # `sluice` on PATH may be a wrapper (a pyenv shim is a bash script); also time the
    # console script itself, next to this interpreter.
    script = Path(sysconfig.get_path("scripts")) / "sluice"
    on_path = shutil.which("sluice")
    if script.is_file() and on_path and Path(on_path).resolve() != script.resolve():
        direct = timed(quiet([str(script), "--help"]), runs)
        results.insert(1, measure("    bin/sluice --help (no PATH wrapper)", None, direct))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--json", action="store_true", help="print a JSON object instead of a table"
    )
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5, help="repetitions for (a) and (b)")
    parser.add_argument("--startup-runs", type=int, default=20)
    args = parser.parse_args(argv)

    results = [
        bench_load(args.steps, args.runs),
        bench_validate_folder(args.files, args.runs),
        *bench_startup(args.startup_runs),
    ]
    if args.json:
        print(
            json.dumps({"results": [asdict(r) | {"verdict": r.verdict} for r in results]}, indent=2)
        )
    else:
        print(f"{'benchmark':<40} {'median':>9} {'min':>9} {'goal':>7} {'runs':>5}")
        for r in results:
            goal = f"{r.goal_s:g} s" if r.goal_s is not None else ""
            print(
                f"{r.name:<40} {r.median_s * 1000:>7.1f}ms {r.min_s * 1000:>7.1f}ms "
                f"{goal:>7} {r.runs:>5}  {r.verdict}"
            )
    return 1 if any(r.verdict == "MISSED" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
