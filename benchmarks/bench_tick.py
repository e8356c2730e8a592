"""`sluice tick` over 500 cron pipelines and a results branch of 10,000 runs: time and phases.

    python benchmarks/bench_tick.py [--pipelines 500] [--runs 10000] [--rounds 5] [--json]

None of the pipelines is due at NOW except a handful whose slot is claimed already, so the
tick runs nothing: what it costs is start-up, loading every pipeline, the slot math and the
claim checks. A claim check reads one path (claims/cron/<pipeline>/<slot>); it must not
grow with the runs on the branch, which the last rows show by timing it on a branch
without runs too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SOURCE))

from engine.adapters.git_results import ResultsStore  # noqa: E402
from engine.adapters.pipeline_files import find_pipeline_files, load_many  # noqa: E402
from engine.core.triggers.cron import claim_path, claim_record, due_slots  # noqa: E402

NOW = "2026-11-25T12:07:00Z"
DUE_SLOT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # `0 12 * * *` at NOW
DUE = 5  # pipelines due at NOW, their slot claimed by an earlier tick
BRANCH = "refs/heads/sluice-results"


def pipeline_text(index: int) -> tuple[str, str]:
    """(name, file text): a one-step pipeline whose cron slot lies before NOW's window."""
    name = f"p{index:03d}"
    if index < DUE:
        cron = '"0 12 * * *"'
    elif index % 3 == 0:  # the mapping form; hours 0-9 in Berlin are 23:00-08:00Z
        cron = f'{{schedule: "{index % 60} {index % 10} * * *", timezone: Europe/Berlin}}'
    else:
        cron = f'"{index % 60} {index % 11} * * {index % 7}"'
    text = f"""\
name: {name}
description: benchmark pipeline {index}
triggers:
  - cron: {cron}
params: {{threshold: 0.9, rows: {index}}}
steps:
  - name: train
    image: python:3.11-slim
    run: python -c "print('train')"
  - name: evaluate
    image: python:3.11-slim
    needs: [train]
    run: python -c "print('evaluate')"
"""
    return name, text


def make_repo(root: Path, pipelines: int) -> list[str]:
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    folder = root / "pipelines"
    folder.mkdir()
    names = []
    for index in range(pipelines):
        name, text = pipeline_text(index)
        (folder / f"{name}.yaml").write_text(text)
        names.append(name)
    return names


def _fast_import(repo: Path, files: Iterator[tuple[str, bytes]]) -> None:
    """One commit on the results branch holding `files`, through `git fast-import`."""
    message = b"sluice: benchmark results"
    stream = [
        f"commit {BRANCH}\ncommitter sluice <sluice@localhost> 1764000000 +0000\n".encode(),
        b"data %d\n%s\n" % (len(message), message),
    ]
    for path, content in files:
        stream.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(content), content))
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=b"".join(stream), check=True)


def _manifest(pipeline: str, run_id: str, started: datetime) -> bytes:
    return json.dumps(
        {
            "schema": "sluice/run/v1",
            "run_id": run_id,
            "pipeline": pipeline,
            "pipeline_file": f"pipelines/{pipeline}.yaml",
            "pipeline_sha256": "e" * 64,
            "commit": "c" * 40,
            "trigger": {"kind": "cron", "scheduled_for": f"{started:%Y-%m-%dT%H:%M:%SZ}"},
            "params": {"threshold": 0.9},
            "status": "succeeded",
            "started_at": f"{started:%Y-%m-%dT%H:%M:%S.000Z}",
            "steps": {
                "train": {"status": "succeeded", "attempts": [{"number": 1, "started_at": "x"}]}
            },
        }
    ).encode()


def build_results(repo: Path, names: list[str], runs: int) -> None:
    """`runs` past cron runs spread over the pipelines, each with its claim, plus the
    claims of the slots due at NOW (so the tick finds them taken)."""

    def files() -> Iterator[tuple[str, bytes]]:
        for n in range(runs):
            name = names[n % len(names)]
            slot = DUE_SLOT - timedelta(days=1 + n // len(names))
            run_id = f"{slot:%Y%m%dT%H%M%SZ}-{n:06x}"
            yield f"runs/{name}/{run_id}/manifest.json", _manifest(name, run_id, slot)
            yield claim_path(name, slot), _claim(name, slot)
        for name in names[:DUE]:
            yield claim_path(name, DUE_SLOT), _claim(name, DUE_SLOT)

    _fast_import(repo, files())


def _claim(name: str, slot: datetime) -> bytes:
    return claim_record(
        name, slot, schedule="0 12 * * *", timezone="UTC", host="bench", pid=1, claimed_at=slot
    )


def _timed(action: Callable[[], object], rounds: int) -> tuple[float, Any]:
    """Median seconds of `rounds` calls, and the last result."""
    times, result = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SOURCE), "NO_COLOR": "1"}


def tick_wall(repo: Path, rounds: int) -> float:
    command = [sys.executable, "-m", "engine", "--repo", str(repo), "tick", "--now", NOW]
    command += ["--no-push", "--json"]

    def once() -> None:
        done = subprocess.run(command, capture_output=True, text=True, cwd=SOURCE, env=_env())
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == [], done.stdout
        assert f"{DUE} due slot(s) already claimed" in done.stderr, done.stderr

    once()  # warm the file cache and git's object lookups
    return _timed(once, rounds)[0]


def startup_wall(rounds: int) -> dict[str, float]:
    """Python start-up with the engine's --help, and with every module a tick imports."""
    imports = "import engine.cli.main, engine.adapters.pipeline_files, engine.adapters.git_results, engine.core.triggers.cron"
    found = {}
    for key, command in (
        ("startup_help_s", [sys.executable, "-m", "engine", "--help"]),
        ("startup_imports_s", [sys.executable, "-c", imports]),
    ):
        run = partial(subprocess.run, command, capture_output=True, env=_env(), check=True)
        found[key] = _timed(run, rounds)[0]
    return found


def phases(repo: Path, rounds: int) -> dict[str, float]:
    """Seconds of each thing a tick does, in this process, as the command does it."""
    now = datetime.fromisoformat(NOW)
    window = timedelta(hours=1)
    files = find_pipeline_files(repo / "pipelines")
    load_s, loaded = _timed(lambda: load_many(files, repo), rounds)
    crons = [(p.name, t.cron_schedule) for p in loaded for t in p.pipeline.triggers]

    def slot_math() -> list[tuple[str, datetime]]:
        return [
            (name, slot)
            for name, cron in crons
            if cron is not None
            for slot in due_slots(
                cron.schedule, cron.timezone, now=now, window=window, catchup=cron.catchup
            )
        ]

    slots_s, due = _timed(slot_math, rounds)
    assert len(due) == DUE, due
    with ResultsStore(repo, push=False) as store:
        store.read("claims")  # start git cat-file once, as the first lookup of a tick does
        claims_s, found = _timed(
            lambda: [store.read(claim_path(name, slot)) for name, slot in due], rounds
        )
    assert all(found), "the due slots should be claimed already"
    return {"load_s": load_s, "slot_math_s": slots_s, "claim_checks_s": claims_s}


def claim_check_us(repo: Path, rounds: int = 200) -> float:
    """Microseconds for one claim lookup on this repository's results branch."""
    with ResultsStore(repo, push=False) as store:
        path = claim_path("p000", DUE_SLOT)
        store.read(path)
        seconds, found = _timed(lambda: store.read(path), rounds)
    assert found is not None
    return seconds * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipelines", type=int, default=500)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-tick-") as scratch:
        big, small = Path(scratch) / "big", Path(scratch) / "small"
        started = time.perf_counter()
        names = make_repo(big, args.pipelines)
        build_results(big, names, args.runs)
        build_s = time.perf_counter() - started
        make_repo(small, DUE)
        build_results(small, names[:DUE], 0)
        result: dict[str, Any] = {
            "pipelines": args.pipelines,
            "runs": args.runs,
            "build_s": build_s,
            "tick_wall_s": tick_wall(big, args.rounds),
            **startup_wall(args.rounds),
            **phases(big, args.rounds),
            f"claim_check_us_{args.runs}_runs": claim_check_us(big),
            "claim_check_us_0_runs": claim_check_us(small),
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"sluice tick: {args.pipelines} cron pipelines, {args.runs} runs on the branch")
    print(f"  (results branch built in {build_s:.2f}s with git fast-import)")
    parts = ("startup_imports_s", "load_s", "slot_math_s", "claim_checks_s")
    rest = result["tick_wall_s"] - sum(result[k] for k in parts)
    rows = [
        ("tick, wall (subprocess, median)", result["tick_wall_s"]),
        ("  python start-up + imports a tick needs", result["startup_imports_s"]),
        (f"  load {args.pipelines} pipelines", result["load_s"]),
        ("  slot math (every cron trigger)", result["slot_math_s"]),
        (f"  claim checks ({DUE} due slots)", result["claim_checks_s"]),
        ("  the rest (git, config, first-call warm-up)", rest),
        ("for comparison: `sluice --help`", result["startup_help_s"]),
    ]
    for label, value in rows:
        print(f"{label:<44} {value * 1000:9.1f} ms")
    for runs in (args.runs, 0):
        value = result[f"claim_check_us_{runs}_runs"]
        print(f"{f'one claim check, {runs} runs on the branch':<44} {value:9.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
