"""A year of history: 20,000 recorded runs of a 6-step pipeline on the results branch.

python benchmarks/bench_history.py [--runs 20000] [--push-every 200] [--json]

The branch is written by the engine's own recording code (History.record on a ResultsStore,
as the recorder calls it when a run ends: the manifest, the steps' logs, cache entries and
the last cache-key components), into a clone of a bare origin on disk, pushing every
`--push-every` runs. The user repository is this project's own tree at HEAD (engine, tests,
docs: ~1,000 files) plus a 6-step pipeline and sluice.yaml, one commit.

Side by side in one run:
- packed size per run (after `git gc` of the origin), with and without logs;
- commits per run on the branch (records plus archive moves);
- a fresh clone as the generated workflow checks out (depth 1, this branch) plus the
  engine's own first fetch of the results branch as under GitHub Actions (depth 1, trees
  only: `--filter=blob:none`), against the same clone of an origin without the results
  branch: .git bytes and wall time;
- `sluice trigger` (a push event) on that fresh clone, as a subprocess, start to exit;
- `sluice runs --limit 20` as a subprocess (median of 5).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from engine.adapters.git_results import ResultsStore
from engine.core.config import ResultsConfig
from engine.core.manifest import RunManifest, StepStatus
from engine.run.records import History

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("extract", "validate", "features", "train", "evaluate", "report")
PIPELINE = "churn"
GOALS = {"commits": 2.0, "kib_no_logs": 4.0, "clone_ratio": 1.2, "runs_s": 0.5}
PIPELINE_YAML = """\
name: churn
triggers:
  - push: {paths: [data/**]}
steps:
  - {name: extract, image: python:3.11-slim, run: python etl/extract.py}
  - {name: validate, image: python:3.11-slim, needs: [extract], run: python etl/validate.py}
  - {name: features, image: python:3.11-slim, needs: [validate], run: python etl/features.py}
  - {name: train, image: python:3.11-slim, needs: [features], run: python train.py}
  - {name: evaluate, image: python:3.11-slim, needs: [train], run: python evaluate.py}
  - {name: report, image: python:3.11-slim, needs: [evaluate], run: python report.py}
"""


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


def hexdigest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def user_repository(where: Path) -> Path:
    """This project's tree at HEAD, plus the pipeline and sluice.yaml: one commit on main."""
    repo = where / "user"
    repo.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(repo)], input=archive.stdout, check=True)
    shutil.rmtree(repo / "pipelines", ignore_errors=True)
    (repo / "pipelines").mkdir()
    (repo / "pipelines" / "churn.yaml").write_text(PIPELINE_YAML)
    (repo / "sluice.yaml").write_text("pipelines: pipelines/\n")
    git(where, "init", "-q", "-b", "main", str(repo))
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-q", "-m", "project")
    return repo


def log_text(step: str, n: int, rng: random.Random) -> bytes:
    """A step's log as a training job prints it: progress lines with numbers (~1-3 KiB)."""
    lines = [f"[{step}] run {n}: loading inputs"]
    for epoch in range(rng.randint(8, 30)):
        loss, acc = rng.uniform(0.1, 0.9), rng.uniform(0.7, 0.99)
        lines.append(f"epoch {epoch:3d} loss={loss:.5f} accuracy={acc:.5f} lr=0.001 t={epoch}s")
    lines.append(f"[{step}] wrote outputs; done")
    return ("\n".join(lines) + "\n").encode()


def a_run(n: int, moment: datetime, rng: random.Random, keys: dict[str, str]) -> RunManifest:
    """Run n: extract and validate usually reuse their last result (same key: cached), the
    rest run on new data; about 1 run in 25 fails at train."""
    run_id = f"{moment:%Y%m%dT%H%M%SZ}-{n:06x}"
    failed = rng.random() < 0.04
    steps: dict[str, Any] = {}
    clock = moment
    for i, name in enumerate(STEPS):
        fresh = name not in ("extract", "validate") or rng.random() < 0.2 or name not in keys
        if fresh:
            keys[name] = hexdigest(name, n)
        status = "succeeded" if fresh else "cached"
        if failed and name == "train":
            status = "failed"
        elif failed and i > STEPS.index("train"):
            status = "upstream_failed"
        took = rng.uniform(2, 600) if status in ("succeeded", "failed") else 0.0
        started = clock.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        clock += timedelta(seconds=took)
        record: dict[str, Any] = {
            "status": status,
            "type": "training" if name == "train" else "custom",
            "image": "python:3.11-slim",
            "image_id": "sha256:" + hexdigest("image"),
            "cache_key": keys[name] if status != "upstream_failed" else None,
            "needs": [STEPS[i - 1]] if i else [],
        }
        if status in ("succeeded", "failed"):
            record["attempts"] = [
                {
                    "number": 1,
                    "outcome": status,
                    "exit_code": 0 if status == "succeeded" else 1,
                    "started_at": started,
                    "finished_at": clock.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "duration_s": round(took, 3),
                    "log": f"logs/{name}.1.log",
                    "max_memory_bytes": rng.randint(50, 4000) * 2**20,
                    "cpu_s": round(took * 0.8, 3),
                }
            ]
        if status == "cached":
            record["cached_from"] = run_id  # a stand-in: the reusing run is named below
        if status in ("succeeded", "cached"):
            sha = hexdigest("out", keys[name])
            record["outputs"] = {
                f"{name}.parquet": {"uri": f"s3://acme-ml/sluice/sha256/{sha[:2]}/{sha[2:]}",
                                    "sha256": sha, "size": rng.randint(10**4, 10**8),
                                    "store": "s3://acme-ml/sluice"}
            }  # fmt: skip
            if name in ("train", "evaluate"):
                record["metrics"] = {"accuracy": round(rng.uniform(0.8, 0.95), 4), "rows": n}
        steps[name] = record
    manifest = {
        "run_id": run_id,
        "pipeline": PIPELINE,
        "pipeline_file": "pipelines/churn.yaml",
        "pipeline_sha256": hexdigest("pipeline", n // 500),
        "commit": hexdigest("commit", n)[:40],
        "trigger": {"kind": "push", "event": "push"},
        "params": {"min_accuracy": 0.85},
        "status": "failed" if failed else "succeeded",
        "started_at": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "finished_at": clock.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "duration_s": round((clock - moment).total_seconds(), 3),
        "engine": {"version": "0.9.0", "python": "3.11.9"},
        "ci": {"run_url": f"https://github.com/acme/churn/actions/runs/{10**9 + n}"},
        "steps": steps,
    }
    return RunManifest.model_validate(manifest)


def generate(origin: Path, where: Path, runs: int, push_every: int) -> dict[str, float]:
    """Record `runs` runs through History.record, pushing every `push_every`."""
    writer = where / "writer"
    git(where, "clone", "-q", str(origin), str(writer))
    # Pushed by hand every `push_every` runs (fast-forwards): without a remote the store
    # archives after each local commit, as it does after each push when it pushes.
    git(writer, "remote", "remove", "origin")
    keep = ResultsConfig().keep_runs
    rng = random.Random(16)
    keys: dict[str, str] = {}
    started = time.perf_counter()
    store = ResultsStore(writer, push="never", keep_runs=keep)
    history = History(store)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    gap = timedelta(days=365) / runs
    for n in range(runs):
        manifest = a_run(n, start + n * gap, rng, keys)
        logs = {
            f"{name}.1.log": log_text(name, n, rng)
            for name, step in manifest.steps.items()
            if step.attempts
        }
        done = {s for s, r in manifest.steps.items() if r.status is StepStatus.succeeded}
        components = {s: {"image": "python:3.11-slim", "inputs": n % 7} for s in done}
        history.record(
            manifest, logs=logs, components=components, baseline_step=None, newly_done=done
        )
        if (n + 1) % push_every == 0 or n + 1 == runs:
            git(writer, "push", "-q", str(origin), "sluice-results")
        if (n + 1) % max(1, runs // 20) == 0:
            rate = (n + 1) / (time.perf_counter() - started)
            print(f"  recorded {n + 1:,} runs ({rate:.0f} runs/s)", file=sys.stderr)
    history.close()
    return {"generate_s": time.perf_counter() - started}


def disk_sizes(repo: Path, *revs: str) -> tuple[int, int]:
    """(bytes on disk of the objects reachable from `revs`, those of blobs under logs/)."""
    listing = subprocess.run(
        ["git", "rev-list", "--objects", *revs], cwd=repo, capture_output=True, text=True
    ).stdout.splitlines()
    names = {line.split(" ", 1)[0]: line.partition(" ")[2] for line in listing}
    sizes = subprocess.run(
        ["git", "cat-file", "--batch-check=%(objectname) %(objectsize:disk)"],
        cwd=repo, input="\n".join(names) + "\n", capture_output=True, text=True,
    ).stdout.splitlines()  # fmt: skip
    total = logs = 0
    for line in sizes:
        sha, size = line.split()
        total += int(size)
        if "/logs/" in names.get(sha, ""):
            logs += int(size)
    return total, logs


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def fresh_clone(origin: Path, dest: Path, *, results: bool) -> tuple[float, int]:
    """(seconds, .git bytes): the workflow's checkout (depth 1, main), then, with `results`,
    the engine's first fetch of the results branch (what any command that reads does)."""
    started = time.perf_counter()
    url = origin.as_uri()
    git(origin.parent, "clone", "-q", "--depth=1", "--single-branch", "-b", "main", url, str(dest))
    if results:  # as under GitHub Actions: the tip's trees, blobs when read
        with ResultsStore(dest, partial=True) as store:
            store.fetch()
    return time.perf_counter() - started, dir_bytes(dest / ".git")


def sluice(repo: Path, *args: str, event: Path | None = None) -> float:
    """Seconds from process start to exit of `sluice ARGS` in `repo`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    env["PYTHONPATH"] = str(ROOT)
    if event is not None:
        env |= {"GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": str(event)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "engine", "--repo", str(repo), *args],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    took = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"sluice {' '.join(args)}: exit {done.returncode}: {done.stderr}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--push-every", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--dir", type=Path, help="keep the generated repositories here, and reuse them when "
        "this folder already holds them (a re-measure without generating again)",
    )  # fmt: skip
    args = parser.parse_args()
    where = args.dir or Path(tempfile.mkdtemp(prefix="sluice-history-"))
    try:
        figures = measure(where, args.runs, args.push_every)
    finally:
        if args.dir is None:
            shutil.rmtree(where, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        report(figures)


def measure(where: Path, runs: int, push_every: int) -> dict[str, Any]:
    origin, plain, made = where / "origin.git", where / "plain.git", where / "generated.json"
    if made.exists():
        figures: dict[str, Any] = json.loads(made.read_text())
        runs = figures["runs"]
        print(f"  reusing {runs:,} runs generated in {where}", file=sys.stderr)
    else:
        where.mkdir(parents=True, exist_ok=True)
        user = user_repository(where)
        git(where, "clone", "-q", "--bare", str(user), str(origin))
        git(where, "clone", "-q", "--bare", str(user), str(plain))
        figures = {"runs": runs, "keep_runs": ResultsConfig().keep_runs}
        figures |= generate(origin, where, runs, push_every)
        git(origin, "gc", "-q")
        git(plain, "gc", "-q")
        made.write_text(json.dumps(figures))
    for old in [*where.glob("fresh*"), *where.glob("plain[0-9]*")]:
        shutil.rmtree(old)
    git(origin, "config", "uploadpack.allowFilter", "true")  # as GitHub serves it
    total, logs = disk_sizes(origin, "refs/heads/sluice-results", "--not", "refs/heads/main")
    figures["packed_kib_per_run"] = total / runs / 1024
    figures["packed_kib_per_run_no_logs"] = (total - logs) / runs / 1024
    commits = int(git(origin, "rev-list", "--count", "refs/heads/sluice-results"))
    figures["commits_per_run"] = commits / runs
    tip = git(origin, "rev-parse", "refs/heads/sluice-results")
    figures["tip_runs"] = len(
        git(origin, "ls-tree", "--name-only", f"{tip}:runs/{PIPELINE}").split()
    )
    figures["tip_cache_entries"] = int(
        git(origin, "ls-tree", "-r", "--name-only", f"{tip}:cache").count("\n") + 1
    )
    without: list[tuple[float, int]] = []
    with_results: list[tuple[float, int]] = []
    for i in range(3):
        without.append(fresh_clone(plain, where / f"plain{i}", results=False))
        with_results.append(fresh_clone(origin, where / f"fresh{i}", results=True))
    figures["clone_s"] = statistics.median(t for t, _ in with_results)
    figures["clone_s_without"] = statistics.median(t for t, _ in without)
    figures["clone_bytes"] = with_results[0][1]
    figures["clone_bytes_without"] = without[0][1]
    figures["clone_ratio_bytes"] = figures["clone_bytes"] / figures["clone_bytes_without"]
    figures["clone_ratio_s"] = figures["clone_s"] / figures["clone_s_without"]
    # What the workflows did before: `fetch-depth: 0`, every branch with its whole history.
    started = time.perf_counter()
    git(where, "clone", "-q", "--no-single-branch", origin.as_uri(), str(where / "fresh-full"))
    figures["clone_s_full_history"] = time.perf_counter() - started
    figures["clone_bytes_full_history"] = dir_bytes(where / "fresh-full" / ".git")
    fresh = where / "fresh0"
    event = where / "push.json"
    head = git(fresh, "rev-parse", "HEAD")
    event.write_text(json.dumps({"ref": "refs/heads/main", "before": "0" * 40, "after": head,
                                 "commits": [{"modified": ["README.md"]}]}))  # fmt: skip
    figures["trigger_s"] = statistics.median(
        sluice(fresh, "trigger", "--event-name", "push", "--event-path", str(event))
        for _ in range(3)
    )
    figures["runs_limit_20_s"] = statistics.median(
        sluice(fresh, "runs", "--limit", "20") for _ in range(5)
    )
    figures["python_pass_s"] = statistics.median(
        _timed([sys.executable, "-c", "pass"]) for _ in range(5)
    )
    return figures


def _timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - started


def report(f: dict[str, Any]) -> None:
    def goal(met: bool) -> str:
        return "met" if met else "MISSED"

    print(f"A year of history: {f['runs']:,} runs of a 6-step pipeline, keep_runs {f['keep_runs']}")
    print(f"  generated in {f['generate_s']:.0f} s (History.record, in process)")
    print(f"  tip: {f['tip_runs']} run folders, {f['tip_cache_entries']} cache entries")
    kib, bare = f["packed_kib_per_run"], f["packed_kib_per_run_no_logs"]
    print(f"  packed per run: {kib:.2f} KiB, {bare:.2f} KiB without logs  (goal <= 4 KiB "
          f"without logs: {goal(bare <= GOALS['kib_no_logs'])})")  # fmt: skip
    print(f"  commits per run: {f['commits_per_run']:.3f}  (goal <= 2: "
          f"{goal(f['commits_per_run'] <= GOALS['commits'])})")  # fmt: skip
    print(f"  fresh clone (depth 1) + results fetch: {f['clone_bytes'] / 1024:.0f} KiB, "
          f"{f['clone_s']:.2f} s; without the results branch {f['clone_bytes_without'] / 1024:.0f}"
          f" KiB, {f['clone_s_without']:.2f} s")  # fmt: skip
    print(f"    (fetch-depth: 0, as the workflows checked out before: "
          f"{f['clone_bytes_full_history'] / 1024:.0f} KiB, {f['clone_s_full_history']:.2f} s)")  # fmt: skip
    ratio = f["clone_ratio_bytes"]
    print(f"    ratio {ratio:.2f}x bytes, {f['clone_ratio_s']:.2f}x time  (goal <= 1.2x: "
          f"{goal(ratio <= GOALS['clone_ratio'])} in bytes, "
          f"{goal(f['clone_ratio_s'] <= GOALS['clone_ratio'])} in time on this disk)")  # fmt: skip
    print(f"  sluice trigger (push) on the fresh clone: {f['trigger_s']:.2f} s "
          f"(python -c pass {f['python_pass_s']:.3f} s)")  # fmt: skip
    print(f"  sluice runs --limit 20: {f['runs_limit_20_s']:.2f} s  (goal < 0.5 s: "
          f"{goal(f['runs_limit_20_s'] < GOALS['runs_s'])})")  # fmt: skip


if __name__ == "__main__":
    main()
