"""Results branch cost with 10 vs 10,000 runs: record_run, runs(limit=20), a CLI-like listing.

python benchmarks/bench_results.py [--json] [--gitpython]

--gitpython measures, side by side, the same store with its object database read and written
in process by GitPython (gitdb) instead of `git cat-file` and Sluice's own loose-object
writer; it needs `pip install GitPython`, which Sluice no longer depends on (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

from engine.adapters.git_objects import Obj, ObjectDB, Tree
from engine.adapters.git_results import ResultsStore
from engine.core.manifest import RunManifest

REPS = 20
BRANCH = "refs/heads/sluice-results"
PIPELINE = "churn"  # all runs in one folder: the worst case for recording a run
_serial = count()


def run_id(moment: datetime) -> str:
    return f"{moment:%Y%m%dT%H%M%SZ}-{next(_serial) % 0xFFFFFF:06x}"


def realistic_manifest(rid: str, pipeline: str = "churn") -> RunManifest:
    """A finished three-step run, with attempts, outputs and metrics, as the executor writes."""
    steps = {}
    for i, name in enumerate(("prepare", "train", "evaluate")):
        steps[name] = {
            "status": "succeeded",
            "type": "training" if name == "train" else "custom",
            "image": f"ghcr.io/acme/{name}:1.4.2",
            "image_id": "sha256:" + f"{i}" * 64,
            "cache_key": f"{i}" * 64,
            "needs": ["prepare"] if name != "prepare" else [],
            "attempts": [
                {
                    "number": 1,
                    "outcome": "succeeded",
                    "exit_code": 0,
                    "started_at": "2026-11-24T10:00:00.000Z",
                    "finished_at": "2026-11-24T10:00:03.100Z",
                    "duration_s": 3.1,
                    "log": f"runs/{pipeline}/{rid}/logs/{name}.1.log",
                    "max_memory_bytes": 52428800,
                    "cpu_s": 2.9,
                }
            ],
            "outputs": {
                f"{name}.pkl": {"uri": f"file:///a/{name}", "sha256": "f" * 64, "size": 1234}
            },
            "metrics": {"accuracy": 0.93, "rows": 120000} if name == "evaluate" else {},
        }
    return RunManifest.model_validate(
        {
            "run_id": rid,
            "pipeline": pipeline,
            "pipeline_file": f"pipelines/{pipeline}.yaml",
            "pipeline_sha256": "e" * 64,
            "commit": "c" * 40,
            "trigger": {"kind": "cron", "scheduled_for": "2026-11-24T10:00:00Z"},
            "params": {"learning_rate": 0.1, "epochs": 20},
            "status": "succeeded",
            "started_at": "2026-11-24T10:00:00.000Z",
            "finished_at": "2026-11-24T10:00:12.500Z",
            "duration_s": 12.5,
            "engine": {"version": "0.1.0"},
            "ci": {"provider": "github", "run_url": "https://github.com/acme/ml/actions/runs/1"},
            "steps": steps,
        }
    )


LOGS = {
    "prepare.1.log": b"".join(b"prepare: row batch %d loaded\n" % i for i in range(300)),
    "train.1.log": b"".join(b"epoch %d loss=0.%04d acc=0.9%03d\n" % (i, i, i) for i in range(1200)),
    "evaluate.1.log": b"accuracy 0.93\nauc 0.97\n" * 40,
}


def build(repo: Path, runs: int) -> None:
    """A results branch with `runs` runs (manifest + log each), via one `git fast-import`."""
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    template = realistic_manifest("RUN_ID_PLACEHOLDER").to_json()
    stream: list[bytes] = []
    per_commit = 2000  # a few big commits instead of one per run
    for first in range(0, runs, per_commit):
        stream.append(
            b"commit %s\ncommitter sluice <sluice@localhost> 1700000000 +0000\n" % BRANCH.encode()
        )
        stream.append(b"data 12\nbulk import\n")
        for i in range(first, min(runs, first + per_commit)):
            rid = run_id(start + timedelta(minutes=i))
            body = template.replace("RUN_ID_PLACEHOLDER", rid)
            for name, data in (
                ("manifest.json", body.encode()),
                ("logs/train.1.log", b"log %d\n" % i),
            ):
                stream.append(
                    b"M 100644 inline runs/%s/%s/%s\n"
                    % (PIPELINE.encode(), rid.encode(), name.encode())
                )
                stream.append(b"data %d\n%s\n" % (len(data), data))
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=b"".join(stream), check=True)


def paired_ms(
    small: Callable[[], object], big: Callable[[], object], reps: int = REPS
) -> tuple[float, float]:
    """Medians of both, run turn about so that load from elsewhere hits both alike."""
    first, second = turn_about([small, big], reps)
    return first, second


def turn_about(actions: list[Callable[[], object]], reps: int = REPS) -> list[float]:
    """Median milliseconds of each action, the actions run in turn `reps` times."""
    times: list[list[float]] = [[] for _ in actions]
    for _ in range(reps):
        for action, into in zip(actions, times, strict=True):
            started = time.perf_counter()
            action()
            into.append(time.perf_counter() - started)
    return [statistics.median(t) * 1000 for t in times]


class GitPythonObjects(ObjectDB):
    """The object database read and written in process through GitPython (gitdb), for
    comparison: refs and `<commit>:<path>` names resolved without a git process, objects
    read from loose files and packs by gitdb, written by gitdb as loose objects."""

    def __init__(self, base: ObjectDB) -> None:
        self.__dict__.update(base.__dict__)
        import git  # lazy: only this comparison needs GitPython

        self._repo = git.Repo(self.repo, odbt=git.GitDB)
        self._missing = (ValueError, KeyError, IndexError, git.BadName, git.BadObject)

    def cat(self, names: Sequence[str]) -> list[Obj | None]:
        found: list[Obj | None] = []
        for name in names:
            try:
                found.append(self._resolve(name))
            except self._missing:
                found.append(None)
        return found

    def _resolve(self, name: str) -> Obj:
        ref, colon, path = name.partition(":")
        sha = ref if len(ref) == 2 * self.hashlen else self._repo.rev_parse(ref).hexsha
        kind, body = self._raw(sha)
        if colon:
            if kind != "commit":
                raise KeyError(name)
            sha = body[5 : 5 + 2 * self.hashlen].decode()  # tree <id>
            kind, body = self._raw(sha)
            for part in filter(None, path.split("/")):
                entry = Tree(body, self.hashlen).get(part.encode()) if kind == "tree" else None
                if entry is None:
                    raise KeyError(name)
                sha = entry[1]
                kind, body = self._raw(sha)
        return sha, kind, body

    def _raw(self, sha: str) -> tuple[str, bytes]:
        stream = self._repo.odb.stream(bytes.fromhex(sha))
        return str(stream.type.decode()), bytes(stream.read())

    def write(self, kind: bytes, body: bytes) -> str:
        from gitdb import IStream  # type: ignore[import-untyped]  # lazy: as above

        written = self._repo.odb.store(IStream(kind, len(body), io.BytesIO(body)))
        sha = str(written.hexsha.decode())
        if kind == b"tree" and len(body) > 1 << 16:
            self._recent = {**dict(list(self._recent.items())[-3:]), sha: body}
        return sha

    def close(self) -> None:
        self._repo.close()


class GitPythonStore(ResultsStore):
    """ResultsStore with GitPythonObjects: update-ref, fetch and push stay git commands."""

    def __init__(self, repo: Path, **options: Any) -> None:
        super().__init__(repo, **options)
        self.objects = GitPythonObjects(self.objects)


def measure(
    small: Path, big: Path, stores: Sequence[type[ResultsStore]] = (ResultsStore,)
) -> dict[str, list[float]]:
    """Per operation, the medians of [small with stores[0], big with stores[0], small with
    stores[1], ...], every variant run in turn."""
    clock = datetime(2026, 11, 24, tzinfo=UTC)

    def fresh() -> RunManifest:
        nonlocal clock
        clock += timedelta(seconds=1)
        return realistic_manifest(run_id(clock))

    def cold_record(kind: type[ResultsStore], repo: Path) -> Callable[[], None]:
        def action() -> None:
            with kind(repo, push=False) as store:
                store.record_run(fresh(), LOGS)

        return action

    def listing(kind: type[ResultsStore], repo: Path) -> Callable[[], None]:
        def action() -> None:
            with kind(repo, push=False) as store:
                assert len(store.runs(limit=20)) == 20

        return action

    def warm(store: ResultsStore) -> Callable[[], object]:
        return lambda: store.record_run(fresh(), LOGS)

    variants = [(kind, repo) for kind in stores for repo in (small, big)]
    opened = [kind(repo, push=False) for kind, repo in variants]
    try:
        results = {"record_run_warm_ms": turn_about([warm(s) for s in opened])}
    finally:
        for store in opened:
            store.close()
    results["record_run_new_store_ms"] = turn_about([cold_record(*v) for v in variants])
    results["runs_limit_20_ms"] = turn_about([listing(*v) for v in variants])
    return results


def python_c(code: str) -> Callable[[], object]:
    return lambda: subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--gitpython", action="store_true", help="also GitPython's object database, side by side"
    )
    args = parser.parse_args()
    if args.gitpython and importlib.util.find_spec("git") is None:
        parser.error(
            "--gitpython needs GitPython, which Sluice does not depend on: pip install GitPython"
        )
    stores: tuple[type[ResultsStore], ...] = (ResultsStore,)
    stores += (GitPythonStore,) if args.gitpython else ()
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp, "small"), Path(tmp, "big")
        started = time.perf_counter()
        build(small, 10)
        build(big, 10_000)
        build_s = time.perf_counter() - started
        results = measure(small, big, stores)
        for kind in stores[1:]:  # the same answers, or the comparison means nothing
            with ResultsStore(big) as plain, kind(big) as other:
                assert plain.runs(limit=20) == other.runs(limit=20)
                assert plain.list_dir("runs/churn") == other.list_dir("runs/churn")
        sluice_runs = [sys.executable, "-m", "engine", "--repo", str(big), "runs", "--limit", "20"]
        imports = [python_c("import engine.adapters.git_results")]
        imports += [python_c("import engine.adapters.git_results, git")] if args.gitpython else []
        timed = turn_about(
            [*imports, lambda: subprocess.run(sluice_runs, check=True, capture_output=True)], 9
        )
        # Each operation as a command runs it: a fresh process, imports included.
        processes = {
            f"process_{op}_ms": turn_about([python_c(in_process(op, k, big)) for k in stores], 9)
            for op in ("record_run", "runs_limit_20")
        }
    report(results | processes, timed, stores, build_s, args.json)


def in_process(op: str, kind: type[ResultsStore], repo: Path) -> str:
    """Python code that does `op` with a `kind` store on `repo`, as a command would."""
    work = {
        "record_run": "store.record_run(realistic_manifest(run_id(datetime.now(UTC))), LOGS)",
        "runs_limit_20": "assert len(store.runs(limit=20)) == 20",
    }[op]
    return (
        f"import sys, itertools, random; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import bench_results as b; from bench_results import *\n"
        "b._serial = itertools.count(random.randrange(1 << 24))\n"
        f"with {kind.__name__}({str(repo)!r}, push=False) as store:\n    {work}\n"
    )


def report(
    results: dict[str, list[float]],
    timed: list[float],
    stores: Sequence[type[ResultsStore]],
    build_s: float,
    as_json: bool,
) -> None:
    names = {ResultsStore: "subprocess git", GitPythonStore: "GitPython"}
    found: dict[str, object] = {"build_s": round(build_s, 2), "runs": [10, 10_000]}
    for key, times in results.items():
        if key.startswith("process_"):
            found[key] = {names[k]: round(t, 1) for k, t in zip(stores, times, strict=True)}
            continue
        per = {
            names[kind]: {"10": round(a, 2), "10000": round(b, 2), "ratio": round(b / a, 3)}
            for kind, a, b in zip(stores, times[0::2], times[1::2], strict=True)
        }
        found[key] = per["subprocess git"] if len(stores) == 1 else per
    found["subprocess_list_20_ms"] = round(timed[-1], 1)
    found["subprocess_import_only_ms"] = round(timed[0], 1)
    if len(stores) > 1:
        found["subprocess_import_with_gitpython_ms"] = round(timed[1], 1)
    if as_json:
        print(json.dumps(found, indent=2))
        return
    print(f"built both branches in {build_s:.1f} s (medians of {REPS} repetitions)\n")
    print(f"{'':34}{'':16}{'10 runs':>10}{'10,000 runs':>14}{'ratio':>8}")
    for key, label in (
        ("record_run_warm_ms", "record_run, open store"),
        ("record_run_new_store_ms", "new store + record_run"),
        ("runs_limit_20_ms", "new store + runs(limit=20)"),
    ):
        times = results[key]
        for kind, a, b in zip(stores, times[0::2], times[1::2], strict=True):
            print(f"{label:34}{names[kind]:16}{a:>7.1f} ms{b:>11.1f} ms{b / a:>7.2f}x")
    print(f"\n{'sluice runs --limit 20 (10,000 runs)':50}{timed[-1]:>7.0f} ms   (goal < 500 ms)")
    print(f"{'python -c: import engine.adapters.git_results':50}{timed[0]:>7.0f} ms   (of which)")
    if len(stores) > 1:
        print(f"{'python -c: the same, and import git (GitPython)':50}{timed[1]:>7.0f} ms")
        print("\nas a command runs them, in a fresh process (imports included), 10,000 runs:")
        for key, label in (
            ("process_record_run_ms", "record a run"),
            ("process_runs_limit_20_ms", "list the 20 newest"),
        ):
            cells = "".join(
                f"{names[k]:>16}{t:>7.0f} ms" for k, t in zip(stores, results[key], strict=True)
            )
            print(f"{label:34}{cells}")


if __name__ == "__main__":
    main()
