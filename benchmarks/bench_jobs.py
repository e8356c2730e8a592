"""Jobs mode (issue 14): the engine's overhead in each GitHub job, and a 6-step diamond on 3
emulated runners against 1.

python benchmarks/bench_jobs.py [--sleep 2] [--repeat 3] [--json]

The generated jobs-mode workflow runs in the test emulator (tests/ghemu: GitHub's own
expression evaluator, a fresh clone per job, the engine as `docker://` the image published to
a loopback registry and pulled by digest, artifacts on a local moto S3 server). The pipeline:
prep -> (left, middle, right) -> join -> publish, each a busybox step that sleeps `--sleep`
seconds. Per step job, from the emulator's record and the daemon's container events:

- job start -> step container start: checkout, pulling the engine image (present: a
  manifest check), the engine's start, reading the record, fetching inputs from S3;
- step container exit -> recorded: outputs to S3, the step's record pushed to the results
  branch, the engine's exit (the job's end).

Then the run's wall time with the ubuntu-latest pool at 3 runners and at 1, and a
single-runner `sluice run` of the same pipeline for reference. Needs Docker,
sluice-test/busybox:1, docker-registry (scripts/registry-up.sh), node with the test tools
(scripts/node-tools.sh) and moto.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bench_store import moto  # noqa: E402  (one S3 server helper for the benchmarks)
from ghemu import Evaluator, Options, RunRecord, WorkflowRun, load  # noqa: E402
from ghemu import registry as registries  # noqa: E402

PIPELINE = """\
name: bench-diamond
defaults: {{image: "sluice-test/busybox:1", cache: false}}
steps:
  - name: prep
    run: sleep {s}; echo prepared > /sluice/outputs/data.txt
  - name: left
    needs: [prep]
    run: sleep {s}; cat /sluice/inputs/prep/data.txt > /sluice/outputs/l.txt
  - name: middle
    needs: [prep]
    run: sleep {s}; cat /sluice/inputs/prep/data.txt > /sluice/outputs/m.txt
  - name: right
    needs: [prep]
    run: sleep {s}; cat /sluice/inputs/prep/data.txt > /sluice/outputs/r.txt
  - name: join
    needs: [left, middle, right]
    run: sleep {s}; cat /sluice/inputs/*/*.txt > /sluice/outputs/all.txt
  - name: publish
    needs: [join]
    run: sleep {s}; wc -l /sluice/inputs/join/all.txt
"""
SETTINGS = """\
artifacts: s3://{bucket}/store
workflow:
  mode: jobs
  image: "{image}"
  env:
    AWS_ENDPOINT_URL: "{endpoint}"
    AWS_DEFAULT_REGION: us-east-1
    AWS_ACCESS_KEY_ID: bench
    AWS_SECRET_ACCESS_KEY: bench
"""


def sh(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip()


def bucket(endpoint: str) -> str:
    import urllib.request

    name = f"bench-{os.urandom(4).hex()}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{name}", method="PUT")).close()
    return name


def git(cwd: Path, *args: str) -> str:
    return sh("git", "-c", "user.name=b", "-c", "user.email=b@example.com", *args, cwd=cwd)


def project(root: Path, sleep: float, image: str, endpoint: str) -> Path:
    repo = root / "repo"
    (repo / "pipelines").mkdir(parents=True)
    (repo / "pipelines" / "bench.yaml").write_text(PIPELINE.format(s=sleep))
    settings = SETTINGS.format(bucket=bucket(endpoint), image=image, endpoint=endpoint)
    (repo / "sluice.yaml").write_text(settings)
    git(root, "init", "-q", "--bare", "-b", "main", str(root / "origin.git"))
    git(root, "init", "-q", "-b", "main", str(repo))
    sh(sys.executable, "-m", "engine", "--repo", str(repo), "workflow", "generate")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "bench")
    git(repo, "remote", "add", "origin", str(root / "origin.git"))
    git(repo, "push", "-q", "origin", "main")
    return repo


class StepEvents:
    """The step containers' start and die events, read live from the daemon (its buffer of
    past events is short on a busy daemon): step -> {"start": t, "die": t} per run id."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.seen: dict[str, dict[str, dict[str, float]]] = {}
        self.stream = client.events(
            decode=True,
            filters={"type": "container", "label": "sluice.pipeline=bench-diamond"},
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.stream:
                action = event.get("Action") or event.get("status")
                if action in ("start", "die"):
                    labels = event["Actor"]["Attributes"]
                    steps = self.seen.setdefault(labels.get("sluice.run-id", "?"), {})
                    steps.setdefault(labels.get("sluice.step", "?"), {})[action] = (
                        event["timeNano"] / 1e9
                    )
        except Exception:  # the stream closed
            return

    def close(self) -> None:
        self.stream.close()


def overheads(record: RunRecord, events: dict[str, dict[str, float]]) -> list[dict[str, float]]:
    rows = []
    for name, job in record.jobs.items():
        step = name.removeprefix("step-")
        if not name.startswith("step-") or step not in events or job.started is None:
            continue
        engine = job.steps[-1].container
        rows.append(
            {
                "to_engine_start": engine["started"] - job.started,
                "to_step_start": events[step]["start"] - job.started,
                "exit_to_recorded": engine["finished"] - events[step]["die"],
                "exit_to_job_end": (job.ended or 0) - events[step]["die"],
            }
        )
    return rows


def run_once(
    repo: Path, root: Path, evaluator: Evaluator, runners: int, events: StepEvents
) -> tuple[float, RunRecord, list[dict[str, float]]]:
    origin = root / "origin.git"
    options = Options(
        origin=origin,
        work=root / f"runners-{os.urandom(3).hex()}",
        event={"inputs": {"params": "{}"}, "ref": "refs/heads/main"},
        pools={"ubuntu-latest": runners},
    )
    workflow = load(repo / ".github" / "workflows" / "sluice-bench-diamond.yml")
    started = time.monotonic()
    record = WorkflowRun(workflow, evaluator, options).run(timeout=900)
    wall = time.monotonic() - started
    if record.result != "success":
        raise SystemExit(record.describe())
    run_id = record.jobs["plan"].outputs["run-id"]
    deadline = time.monotonic() + 10
    while len(events.seen.get(run_id, {})) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)  # poll: the last events reach the reader
    return wall, record, overheads(record, events.seen.get(run_id, {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sleep", type=float, default=2.0, help="seconds each step sleeps")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    client = docker.from_env()
    engine = sh("bash", str(ROOT / "scripts" / "build-engine-image.sh")).splitlines()[-1]
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp, moto() as endpoint:
        work = Path(tmp)
        served = registries.start(work / "registry")
        evaluator = Evaluator.start()
        events = StepEvents(client)
        os.environ.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
        )
        try:
            image = served.push(engine, "sluice")
            sh("docker", "pull", "-q", image)
            repo = project(work / "p", args.sleep, image, endpoint)
            walls: dict[str, list[float]] = {"3 runners": [], "1 runner": [], "single": []}
            rows: list[dict[str, float]] = []
            for _ in range(args.repeat):
                for runners in (3, 1):
                    wall, _, found = run_once(repo, work / "p", evaluator, runners, events)
                    walls[f"{runners} runner{'s' if runners > 1 else ''}"].append(wall)
                    rows += found
                started = time.monotonic()
                sh(sys.executable, "-m", "engine", "--repo", str(repo), "run", "bench-diamond",
                   "-q", "--no-push")  # fmt: skip
                walls["single"].append(time.monotonic() - started)
        finally:
            events.close()
            evaluator.close()
            served.stop()
    med = {key: statistics.median(values) for key, values in walls.items()}
    figures = {
        "sleep_s": args.sleep,
        "repeat": args.repeat,
        "wall_s": med,
        "ratio_1_over_3": med["1 runner"] / med["3 runners"],
        "per_job": {
            key: {
                "median": statistics.median(r[key] for r in rows),
                "max": max(r[key] for r in rows),
            }
            for key in rows[0]
        },
        "jobs_measured": len(rows),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"6-step diamond, steps sleep {args.sleep:g} s, median of {args.repeat}:")
    for key, value in med.items():
        print(f"  {key:>10}: {value:6.1f} s")
    print(f"  1 runner / 3 runners: {figures['ratio_1_over_3']:.2f}x")
    print(f"per step job ({len(rows)} jobs): median / max")
    for key, stats in figures["per_job"].items():
        print(f"  {key:>17}: {stats['median']:5.2f} s / {stats['max']:5.2f} s")


if __name__ == "__main__":
    main()
