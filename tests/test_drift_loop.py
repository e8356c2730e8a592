"""The drift loop closed with real parts: a cron tick runs a monitor in the engine image on
drifted data, the bound pipeline retrains, cooldowns hold, and outside signals count too.

Everything goes through the `sluice` command line, against clones of a bare origin.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import FakeGitHub, git, sluice

import engine

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SOURCE = Path(engine.__file__).resolve().parents[1]
BRANCH = "sluice-results"

MONITOR = """\
name: churn-drift
triggers:
  - cron: "0 * * * *"
steps:
  - name: check
    image: "@engine"
    run: sluice drift compute --reference data/reference.csv --current data/current.csv
"""


def retrain(name: str, monitor: str, image: str) -> str:
    return textwrap.dedent(
        f"""\
        name: {name}
        triggers:
          - drift: {{monitor: {monitor}, when: "metrics.drift_detected", cooldown: 6h}}
        steps:
          - name: train
            image: {image}
            run: |
              echo "retraining on drift from $MONITOR"
              echo '{{"trained": 1}}' > /sluice/outputs/metrics.json
            env: {{MONITOR: "${{{{ trigger.payload.monitor }}}}"}}
        """
    )


def table(shift: float, seed: int) -> str:
    """500 rows of three features; `shift` standard deviations added to feature `a`."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(500, 3))
    rows[:, 0] += shift
    lines = ["a,b,c", *(",".join(f"{v:.6f}" for v in row) for row in rows)]
    return "\n".join(lines) + "\n"


def commit(repo: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", message)


@pytest.fixture
def repo(tmp_path: Path, busybox_image: str) -> Path:
    """A runner's clone of a bare origin with a monitor and two pipelines bound to monitors."""
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(origin), str(work))
    commit(
        work,
        {
            "pipelines/churn-drift.yaml": MONITOR,
            "pipelines/retrain.yaml": retrain("retrain", "churn-drift", busybox_image),
            "pipelines/retrain-vendor.yaml": retrain(
                "retrain-vendor", "vendor-drift", busybox_image
            ),
            "data/reference.csv": table(0.0, seed=1),
            "data/current.csv": table(2.0, seed=2),  # feature a moved by 2 sigma
        },
        "pipelines and data",
    )
    git(work, "push", "-q", "origin", "main")
    return work


def cli(
    repo: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return sluice(*args, repo=repo, env={"NO_COLOR": "1", **(env or {})}, process=True, timeout=600)


def manifests(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert isinstance(found, list)
    return found


def signals(repo: Path, pipeline: str, monitor: str) -> list[dict[str, Any]]:
    """The signal records on origin's results branch, oldest first."""
    origin = repo.parent / "origin.git"
    folder = f"drift/{pipeline}/{monitor}/signals"
    listing = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{BRANCH}:{folder}"],
        cwd=origin,
        capture_output=True,
        text=True,
    )
    names = listing.stdout.split() if listing.returncode == 0 else []
    return [json.loads(git(origin, "show", f"{BRANCH}:{folder}/{n}")) for n in sorted(names)]


def test_a_monitor_tick_on_drifted_data_retrains_once_per_cooldown(
    repo: Path, engine_image: str, tmp_path: Path
) -> None:
    env = {"SLUICE_ENGINE_IMAGE": engine_image}
    # `--now` times the cooldowns too, and the dispatches of step 4 read the wall clock:
    # tick two hours ago and one, so that the cooldown still holds for them (and the
    # signals recorded sort as they happened).
    hour = (datetime.now(UTC) - timedelta(hours=2)).replace(minute=5, second=0, microsecond=0)
    stamp = f"{hour:%Y-%m-%dT%H:%M:%SZ}"
    later = f"{hour + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}"

    # 1. The hourly tick runs the monitor in the engine image; it finds drift in `a`.
    first = manifests(cli(repo, "tick", "--now", stamp, "--json", env=env))
    assert [m["pipeline"] for m in first] == ["churn-drift", "retrain"]
    monitor, retrained = first
    assert monitor["trigger"]["kind"] == "cron"
    metrics = monitor["steps"]["check"]["metrics"]
    assert metrics["drift_detected"] is True
    assert metrics["feature_a"] >= 0.1 > max(metrics["feature_b"], metrics["feature_c"])
    # 2. The bound pipeline ran with kind drift, naming the monitor and its run.
    assert retrained["status"] == "succeeded"
    assert retrained["trigger"]["kind"] == "drift"
    assert retrained["trigger"]["payload"]["monitor"] == "churn-drift"
    assert retrained["trigger"]["payload"]["monitor_run"] == monitor["run_id"]
    assert retrained["trigger"]["payload"]["metrics"]["drift_detected"] is True
    log = cli(repo, "logs", retrained["run_id"], "train")
    assert "retraining on drift from churn-drift" in log.stdout

    # 3. New drifted data an hour later: the monitor runs, the retrain is suppressed.
    commit(repo, {"data/current.csv": table(3.0, seed=3)}, "more drift")
    second = manifests(cli(repo, "tick", "--now", later, "--json", env=env))
    assert [m["pipeline"] for m in second] == ["churn-drift"]
    assert second[0]["steps"]["check"]["metrics"]["drift_detected"] is True
    records = signals(repo, "retrain", "churn-drift")
    assert [r["decision"] for r in records] == ["fired", "suppressed"]
    assert records[0]["run_id"] == retrained["run_id"]
    assert records[1]["monitor_run"] == second[0]["run_id"]
    assert records[1]["run_id"] is None

    # 4. Outside monitors dispatch sluice-drift: a monitor with no binding in its cooldown
    # starts its pipeline; the cooled-down one is suppressed as the tick's was.
    def dispatch(monitor_name: str) -> list[dict[str, Any]]:
        event = tmp_path / f"{monitor_name}.json"
        event.write_text(
            json.dumps(
                {
                    "action": "sluice-drift",
                    "client_payload": {
                        "monitor": monitor_name,
                        "monitor_run": "vendor-42",
                        "metrics": {"drift_detected": True, "drift_score": 0.8},
                    },
                }
            )
        )
        done = cli(
            repo,
            "trigger",
            "--event-name",
            "repository_dispatch",
            "--event-path",
            str(event),
            "--json",
        )
        return manifests(done)

    outside = dispatch("vendor-drift")
    assert [m["pipeline"] for m in outside] == ["retrain-vendor"]
    assert outside[0]["trigger"]["kind"] == "drift"
    assert outside[0]["trigger"]["payload"]["monitor_run"] == "vendor-42"
    assert outside[0]["status"] == "succeeded"
    assert dispatch("churn-drift") == []
    last = signals(repo, "retrain", "churn-drift")[-1]
    assert last["decision"] == "suppressed" and last["source"] == "repository_dispatch"

    # 5. `sluice drift signals` reads it all back, newest first.
    listed = cli(repo, "drift", "signals", "--json")
    assert listed.returncode == 0, listed.stderr
    newest_first = [(r["pipeline"], r["decision"]) for r in json.loads(listed.stdout)]
    assert newest_first == [
        ("retrain", "suppressed"),
        ("retrain-vendor", "fired"),
        ("retrain", "suppressed"),
        ("retrain", "fired"),
    ]
    text = cli(repo, "drift", "signals", "--pipeline", "retrain", "--limit", "1").stdout
    assert "churn-drift -> retrain" in text and "suppressed" in text
    assert "retrain-vendor" not in text


def test_a_monitor_without_drift_starts_nothing(repo: Path, engine_image: str) -> None:
    commit(repo, {"data/current.csv": table(0.0, seed=4)}, "calm data")
    done = cli(repo, "run", "churn-drift", "--json", env={"SLUICE_ENGINE_IMAGE": engine_image})
    assert done.returncode == 0, done.stderr
    monitor = json.loads(done.stdout)
    assert monitor["steps"]["check"]["metrics"]["drift_detected"] is False
    listed = manifests(cli(repo, "runs", "--json"))
    assert [m["pipeline"] for m in listed] == ["churn-drift"]
    assert signals(repo, "retrain", "churn-drift") == []  # quiet signals leave no record


def test_dispatch_mode_sends_one_sluice_drift_event_instead_of_running(
    repo: Path, busybox_image: str, github: FakeGitHub
) -> None:
    signal = textwrap.dedent(
        f"""\
        name: churn-drift
        steps:
          - name: check
            image: {busybox_image}
            run: |
              echo '{{"drift_detected": true, "drift_score": 0.7}}' > /sluice/outputs/metrics.json
        """
    )
    commit(
        repo,
        {"pipelines/churn-drift.yaml": signal, "sluice.yaml": "drift: {start: dispatch}\n"},
        "dispatch drift signals",
    )
    env = {
        "GITHUB_API_URL": github.url,
        "GITHUB_REPOSITORY": "octo/churn",
        "GITHUB_TOKEN": "t0ken",
        "SLUICE_DISPATCH_HOPS": "0",
    }
    done = cli(repo, "run", "churn-drift", "--json", env=env)
    assert done.returncode == 0, done.stderr
    monitor = json.loads(done.stdout)
    assert "sent sluice-drift to octo/churn" in done.stderr
    [request] = github.requests
    assert request.path == "/repos/octo/churn/dispatches"
    body = request.json()
    assert isinstance(body, dict)
    assert body["event_type"] == "sluice-drift"
    assert body["client_payload"]["monitor"] == "churn-drift"
    assert body["client_payload"]["monitor_run"] == monitor["run_id"]
    assert body["client_payload"]["metrics"] == {"drift_detected": True, "drift_score": 0.7}
    assert body["client_payload"]["sluice_hops"] == 1
    # Nothing ran here: the receiving workflow runs the bound pipeline.
    listed = manifests(cli(repo, "runs", "--json"))
    assert [m["pipeline"] for m in listed] == ["churn-drift"]
