"""Per-step overhead and parallel steps: the engine against raw docker SDK loops, side by side.

    python benchmarks/bench_engine.py [--rounds 3] [--json] [--only chain|p4] [--no-variants]

Each round, alternated so that all sides see the same machine state:

1. chain: a 20-step chain of no-op busybox steps, `sluice run --no-cache` as a subprocess
   (process start to exit, as a user waits), against a subprocess running a raw docker SDK
   loop (create, start, wait, remove) over 20 containers of the same image.
   Goal: engine / raw <= 1.10x.
2. p4: 20 independent no-op steps, `sluice run --max-parallel 4` as a subprocess, against
   a subprocess running the same 20 containers on a raw SDK pool of 4 threads. Goal <= 1.10x.

Beside each, the floor: the raw loop (or pool) also making the Docker calls the engine's
contract needs per step (attach before start, one put_archive, diff), and nothing else.

Both also run in process (the executor over a DockerRuntime whose docker calls are timed)
for the breakdown: the engine's CPU seconds per step, each Docker call's summed wall time
per step, and the ratio with one part turned off at a time (stats stream, log attach,
results branch, containers made ahead). Medians over the rounds; each ratio is the median
of the per-round ratios.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

IMAGE = "sluice-test/busybox:1"
N = 20
GOAL = 1.10

RAW = """
import sys, time
from concurrent.futures import ThreadPoolExecutor
import docker
client = docker.from_env()
def one(_):
    c = client.containers.create({image!r}, ["true"], network_mode="none")
    c.start()
    c.wait()
    c.remove(force=True)
with ThreadPoolExecutor({parallel}) as pool:
    list(pool.map(one, range({n})))
"""

# The floor under the engine: the same raw pool making the Docker calls the engine's
# contract needs per step (attach before start: no output lost; one put_archive: files go
# in through the archive API; diff: whether outputs exist), and nothing else.
RAW_CALLS = """
import io, tarfile, threading
from concurrent.futures import ThreadPoolExecutor
import docker
client = docker.from_env()
api = client.api
api.trust_env = False
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as tar:
    info = tarfile.TarInfo("sluice/config.json")
    info.size = 2
    tar.addfile(info, io.BytesIO(b"{{}}"))
def one(_):
    c = client.containers.create({image!r}, ["true"], network_mode="none")
    out = c.attach(stream=True, demux=True, logs=False)
    reader = threading.Thread(target=lambda: list(out))
    reader.start()
    api.put_archive(c.id, "/", buf.getvalue())
    c.start()
    c.wait()
    reader.join()
    api.diff(c.id)
    c.remove(force=True)
with ThreadPoolExecutor({parallel}) as pool:
    list(pool.map(one, range({n})))
"""

# the Docker SDK calls a step makes, timed in process (docker.api.client.APIClient methods)
TIMED = (
    "create_container",
    "put_archive",
    "attach",
    "start",
    "wait",
    "inspect_container",
    "diff",
    "get_archive",
    "remove_container",
)


def make_repo(root: Path, text: str) -> Path:
    repo = Path(tempfile.mkdtemp(dir=root))
    (repo / "pipelines").mkdir()
    (repo / "pipelines" / "p.yaml").write_text(text)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "p"],
        check=True,
    )
    return repo


def chain(n: int) -> str:
    lines = [f"name: p\ndefaults: {{image: {IMAGE}}}\nsteps:"]
    for i in range(n):
        needs = f"\n    needs: [s{i - 1}]" if i else ""
        lines.append(f"  - name: s{i}\n    run: 'true'{needs}")
    return "\n".join(lines) + "\n"


def independent(n: int) -> str:
    steps = "\n".join(f"  - name: s{i}\n    run: 'true'" for i in range(n))
    return f"name: p\ndefaults: {{image: {IMAGE}}}\nsteps:\n{steps}\n"


# Children run with bytecode, as an installed engine does (main() compiles the engine
# first): under PYTHONDONTWRITEBYTECODE every engine module would be compiled per command.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed_subprocess(argv: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) from process start to exit."""
    before = os.times()
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=CHILD_ENV)
    wall = time.perf_counter() - start
    after = os.times()
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu


def sluice_run(repo: Path, parallel: int) -> tuple[float, float]:
    argv = [sys.executable, "-m", "engine", "run", "p", "--no-cache", "-q"]
    return timed_subprocess([*argv, "--max-parallel", str(parallel)], repo)


def raw_run(root: Path, parallel: int, template: str = RAW) -> float:
    code = template.format(image=IMAGE, parallel=parallel, n=N)
    return timed_subprocess([sys.executable, "-c", code], root)[0]


class CallTimer:
    """Wraps the docker SDK's low-level calls to add up their wall time, per call name."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._saved: dict[str, Any] = {}

    def install(self) -> None:
        from docker.api.client import APIClient

        for name in TIMED:
            original = getattr(APIClient, name)
            self._saved[name] = original
            setattr(APIClient, name, self._wrap(name, original))

    def uninstall(self) -> None:
        from docker.api.client import APIClient

        for name, original in self._saved.items():
            setattr(APIClient, name, original)

    def reset(self) -> None:
        self.ms.clear()
        self.count.clear()

    def _wrap(self, name: str, original: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                with self._lock:
                    self.ms[name] += (time.perf_counter() - start) * 1000
                    self.count[name] += 1

        return timed


# Parts of the engine turned off one at a time (in process only), to show what each costs.
VARIANTS = (
    "no stats stream",
    "no log attach",
    "no results branch",
    "no containers made ahead",
)


@contextlib.contextmanager
def variant(name: str | None) -> Iterator[None]:
    from engine.adapters.docker_watch import Watch
    from engine.run.executor import Executor

    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, attr: str, value: Any) -> None:
        saved.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, value)

    if name == "no stats stream":
        patch(Watch, "start", lambda self: None)
    elif name == "no log attach":
        from engine.adapters import docker_attempt

        patch(Watch, "attach", lambda self, opened=None: None)
        patch(docker_attempt, "open_attach", lambda api, container: None)
    elif name == "no containers made ahead":
        patch(Executor, "lookahead", lambda self, queued, running: None)
    try:
        yield
    finally:
        for owner, attr, value in reversed(saved):
            setattr(owner, attr, value)


def in_process(
    root: Path, text: str, parallel: int, timer: CallTimer, variant_name: str | None = None
) -> dict[str, Any]:
    from engine.adapters.docker_runtime import DockerRuntime
    from engine.adapters.pipeline_files import load_file
    from engine.app.execution import execute, run_options
    from engine.core.config import RepoConfig
    from engine.core.manifest import Trigger

    repo = make_repo(root, text)
    loaded = load_file(repo / "pipelines" / "p.yaml", repo)
    options = run_options(repo, RepoConfig(), loaded, trigger=Trigger(), max_parallel=parallel)
    options.use_cache = False
    if variant_name == "no results branch":
        options.history = None
    runtime = DockerRuntime()
    timer.reset()
    with variant(variant_name):
        cpu, wall = time.process_time(), time.perf_counter()
        manifest = execute(repo, loaded, options, runtime=runtime)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    why = {name: rec.reason for name, rec in manifest.steps.items() if rec.reason}
    assert manifest.status.value == "succeeded", (variant_name, manifest.status, why)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "calls_ms": dict(timer.ms),
        "calls": dict(timer.count),
    }


def raw_in_process(parallel: int) -> float:
    import docker

    client = docker.from_env()
    start = time.perf_counter()
    exec(RAW.format(image=IMAGE, parallel=parallel, n=N), {"docker": docker, "client": client})
    return time.perf_counter() - start


def measure(kind: str, rounds: int, root: Path, with_variants: bool) -> dict[str, Any]:
    text, parallel = (chain(N), 1) if kind == "chain" else (independent(N), 4)
    timer = CallTimer()
    timer.install()
    sub_e, sub_r, sub_cpu, in_e, in_r, in_cpu, floor = [], [], [], [], [], [], []
    calls: dict[str, list[float]] = defaultdict(list)
    parts: dict[str, list[float]] = defaultdict(list)  # variant -> engine/raw per round
    try:
        for _ in range(rounds):
            for name in VARIANTS if with_variants else ():
                raw = raw_in_process(parallel)
                parts[name].append(in_process(root, text, parallel, timer, name)["wall_s"] / raw)
            # alternated: raw, engine (subprocesses), raw, engine (in process)
            sub_r.append(raw_run(root, parallel))
            wall, cpu = sluice_run(make_repo(root, text), parallel)
            floor.append(raw_run(root, parallel, RAW_CALLS))
            sub_e.append(wall)
            sub_cpu.append(cpu)
            in_r.append(raw_in_process(parallel))
            got = in_process(root, text, parallel, timer)
            in_e.append(got["wall_s"])
            in_cpu.append(got["cpu_s"])
            for name in TIMED:
                calls[name].append(got["calls_ms"].get(name, 0.0) / N)
    finally:
        timer.uninstall()

    def ratio(a: list[float], b: list[float]) -> float:
        return round(statistics.median(x / y for x, y in zip(a, b, strict=True)), 3)

    return {
        "steps": N,
        "max_parallel": parallel,
        "subprocess": {
            "engine_s": [round(x, 3) for x in sub_e],
            "raw_s": [round(x, 3) for x in sub_r],
            "ratio": ratio(sub_e, sub_r),
            "engine_cpu_s_per_step": round(statistics.median(sub_cpu) / N, 4),
            "raw_with_the_engines_calls_s": [round(x, 3) for x in floor],
            "floor_ratio": ratio(floor, sub_r),
            "engine_over_floor": ratio(sub_e, floor),
        },
        "in_process": {
            "engine_s": [round(x, 3) for x in in_e],
            "raw_s": [round(x, 3) for x in in_r],
            "ratio": ratio(in_e, in_r),
            "engine_cpu_s_per_step": round(statistics.median(in_cpu) / N, 4),
            "engine_ms_per_step": round(statistics.median(in_e) / N * 1000, 1),
            "raw_ms_per_step": round(statistics.median(in_r) / N * 1000, 1),
        },
        "docker_calls_ms_per_step": {k: round(statistics.median(v), 1) for k, v in calls.items()},
        "in_process_ratio_without": {k: round(statistics.median(v), 3) for k, v in parts.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", choices=["chain", "p4"])
    parser.add_argument(
        "--no-variants", action="store_true", help="skip the runs with parts turned off"
    )
    args = parser.parse_args()
    results: dict[str, Any] = {}
    import engine

    compileall.compile_dir(Path(engine.__file__).parent, quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw_in_process(2)  # warm the image and the daemon's caches
        for kind in ("chain", "p4"):
            if args.only in (None, kind):
                results[kind] = measure(kind, args.rounds, root, not args.no_variants)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for kind, title in (("chain", "20-step chain"), ("p4", "20 independent steps, P4")):
        if kind not in results:
            continue
        r = results[kind]
        sub, inp = r["subprocess"], r["in_process"]
        met = "met" if sub["ratio"] <= GOAL else "missed"
        print(f"{title}: engine / raw SDK (subprocesses, as a user waits)")
        print(f"  engine {sub['engine_s']} s, raw {sub['raw_s']} s")
        print(f"  ratio {sub['ratio']}x (median of {args.rounds})   goal <= {GOAL}x: {met}")
        print(
            f"  engine CPU per step: {sub['engine_cpu_s_per_step'] * 1000:.1f} ms (whole process)"
        )
        print(
            f"  raw pool making the engine's Docker calls (attach, put_archive, diff): "
            f"{sub['raw_with_the_engines_calls_s']} s, {sub['floor_ratio']}x raw; "
            f"engine / that: {sub['engine_over_floor']}x"
        )
        print(
            f"  in process: engine {inp['engine_ms_per_step']} ms/step, raw "
            f"{inp['raw_ms_per_step']} ms/step, ratio {inp['ratio']}x, engine CPU "
            f"{inp['engine_cpu_s_per_step'] * 1000:.1f} ms/step"
        )
        calls = ", ".join(f"{k} {v}" for k, v in r["docker_calls_ms_per_step"].items() if v)
        print(f"  docker calls, ms per step (summed over threads): {calls}")
        for name, value in r["in_process_ratio_without"].items():
            print(f"  in process, {name}: ratio {value}x (engine {inp['ratio']}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
