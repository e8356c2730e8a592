"""Loader benchmarks: `python benchmarks/bench_loader.py [--json]`.

(a) load + validate + plan one generated 5,000-step pipeline              goal < 1 s
    side by side in one run, alternating: from its text (no cache; what every load did
    before issue 16), from its file with an empty pipeline cache (a miss: parse, check,
    write the entry), and from its file again (a hit); once, the pure-Python YAML loader
    in place of libyaml's. Then as a user waits: `sluice validate FILE` as a subprocess,
    the cache off (SLUICE_PIPELINE_CACHE=off) and warm, beside `python -c pass`.
(b) `sluice validate` of a folder of 500 generated pipelines (subprocess)  goal < 3 s
    with no cache, and warm.
`sluice --help` start-up: benchmarks/bench_startup.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from engine.adapters.pipeline_files import find_pipeline  # noqa: E402
from engine.core import yaml_lines  # noqa: E402
from engine.core.layout import ENGINE_DIR  # noqa: E402
from engine.core.manifest import StepStatus  # noqa: E402
from engine.core.parse import LoadedPipeline, load_text  # noqa: E402
from engine.core.planner import Planner  # noqa: E402
from engine.local.pipeline_cache import DISABLE_ENV  # noqa: E402


@dataclass
class Measure:
    name: str
    goal_s: float | None
    median_s: float
    min_s: float
    runs: int
    baseline_s: float | None = None  # the median this row is compared with

    @property
    def ratio(self) -> str:
        return f"{self.median_s / self.baseline_s:.2f}x" if self.baseline_s else ""

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


def measure(
    name: str, goal: float | None, times: list[float], baseline: float | None = None
) -> Measure:
    return Measure(name, goal, statistics.median(times), min(times), len(times), baseline)


def plan_first(loaded: LoadedPipeline) -> None:
    """A run's first decision, as `sluice run` makes it."""
    planner = Planner(loaded.dag, {step.name: step for step in loaded.steps})
    pending = dict.fromkeys(loaded.dag.order, StepStatus.pending)
    pending.update(dict.fromkeys(loaded.dag.finally_steps, StepStatus.pending))
    first = planner.next(pending, {"params": loaded.pipeline.params})
    assert [d.step for d in first] == ["step-0"]


@contextmanager
def pure_python_yaml() -> Iterator[None]:
    """The loader as it is without libyaml: PyYAML's pure-Python SafeLoader."""
    kept = yaml_lines._YamlLoader
    yaml_lines._YamlLoader = yaml.SafeLoader
    try:
        yield
    finally:
        yaml_lines._YamlLoader = kept


def bench_load(steps: int, runs: int) -> list[Measure]:
    text = generate_pipeline(steps)
    times: dict[str, list[float]] = {"text": [], "miss": [], "hit": []}
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        repo = Path(tmp)
        (repo / ".git").mkdir()
        (repo / "pipelines").mkdir()
        (repo / "pipelines" / "bench.yaml").write_text(text)

        def from_file() -> None:
            loaded = find_pipeline(repo, repo / "pipelines", "bench")
            assert loaded is not None
            plan_first(loaded)

        for _ in range(runs):  # alternating, so that a busy machine slows each alike
            times["text"] += timed(lambda: plan_first(load_text(text, "bench.yaml")), 1)
            shutil.rmtree(repo / ENGINE_DIR, ignore_errors=True)
            times["miss"] += timed(from_file, 1)
            times["hit"] += timed(from_file, 1)
        with pure_python_yaml():
            pure = timed(lambda: plan_first(load_text(text, "bench.yaml")), 1)
        base = statistics.median(times["text"])
        return [
            measure(f"(a) {steps:,} steps from text, no cache", 1.0, times["text"]),
            measure("    the same, pure-Python YAML loader", None, pure, base),
            measure("    from its file, cache miss (+ write)", None, times["miss"], base),
            measure("    from its file, cache hit", 1.0, times["hit"], base),
            *bench_validate_file(repo, runs),
        ]


def bench_validate_file(repo: Path, runs: int) -> list[Measure]:
    """`sluice validate FILE` as a user waits: a subprocess, cache off and warm."""
    command = _sluice("--repo", str(repo), "validate", str(repo / "pipelines" / "bench.yaml"))
    off = {**os.environ, DISABLE_ENV: "off"}
    times: dict[str, list[float]] = {"floor": [], "off": [], "warm": []}
    run_quiet(command, dict(os.environ))  # warms the cache
    for _ in range(runs):
        times["floor"] += timed(lambda: run_quiet([sys.executable, "-c", "pass"], None), 1)
        times["off"] += timed(lambda: run_quiet(command, off), 1)
        times["warm"] += timed(lambda: run_quiet(command, dict(os.environ)), 1)
    base = statistics.median(times["off"])
    return [
        measure("    `sluice validate FILE`, no cache", None, times["off"]),
        measure("    `sluice validate FILE`, cache warm", None, times["warm"], base),
        measure("    `python -c pass` (floor)", None, times["floor"]),
    ]


def run_quiet(command: list[str], env: dict[str, str] | None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")


def _sluice(*args: str) -> list[str]:
    """The console script of this interpreter (not a PATH wrapper such as a pyenv shim)."""
    script = Path(sysconfig.get_path("scripts")) / "sluice"
    return [str(script), *args] if script.is_file() else [sys.executable, "-m", "engine", *args]


def bench_validate_folder(files: int, runs: int) -> list[Measure]:
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        root = Path(tmp)
        (root / ".git").mkdir()
        for i in range(files):
            folder = root / "pipelines" / f"team-{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"p{i}.yaml").write_text(generate_pipeline(12, name=f"pipeline-{i}", seed=i))
        command = _sluice("--repo", str(root), "validate")
        off = {**os.environ, DISABLE_ENV: "off"}
        run_quiet(command, dict(os.environ))  # warms the cache
        cold: list[float] = []
        warm: list[float] = []
        for _ in range(runs):
            cold += timed(lambda: run_quiet(command, off), 1)
            warm += timed(lambda: run_quiet(command, dict(os.environ)), 1)
        return [
            measure(f"(b) sluice validate, {files} files, no cache", 3.0, cold),
            measure("    the same, cache warm", 3.0, warm, statistics.median(cold)),
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--json", action="store_true", help="print a JSON object instead of a table"
    )
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5, help="repetitions for (a) and (b)")
    args = parser.parse_args(argv)

    results = [
        *bench_load(args.steps, args.runs),
        *bench_validate_folder(args.files, args.runs),
    ]
    if args.json:
        print(
            json.dumps(
                {
                    "results": [
                        asdict(r) | {"verdict": r.verdict, "ratio": r.ratio} for r in results
                    ]
                },
                indent=2,
            )
        )
    else:
        print(f"{'benchmark':<44} {'median':>9} {'min':>9} {'ratio':>6} {'goal':>7} {'runs':>5}")
        for r in results:
            goal = f"{r.goal_s:g} s" if r.goal_s is not None else ""
            print(
                f"{r.name:<44} {r.median_s * 1000:>7.1f}ms {r.min_s * 1000:>7.1f}ms "
                f"{r.ratio:>6} {goal:>7} {r.runs:>5}  {r.verdict}"
            )
        print("ratio: this row's median over the median of the first row of its group")
    return 1 if any(r.verdict == "MISSED" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
