"""`sluice tick` as runners use it: real git clones of one bare origin, real Docker runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import git, make_repo, sluice

import engine

pytestmark = pytest.mark.docker

# The tree under test, whichever copy of the package an editable install points at.
SOURCE = Path(engine.__file__).resolve().parents[1]
BRANCH = "sluice-results"
SLOT_NOW = "2026-11-25T02:05:00Z"  # a Wednesday; `0 2 * * *` is due, `0 3 * * 1` is not


def pipeline(name: str, cron: str, image: str, run: str = "echo ran") -> str:
    return textwrap.dedent(
        f"""\
        name: {name}
        triggers:
          - cron: "{cron}"
        params: {{greeting: hello}}
        steps:
          - name: work
            image: {image}
            env: {{GREETING: "${{{{ params.greeting }}}}"}}
            run: '{run}'
        """
    )


def make_origin(root: Path, pipelines: dict[str, str]) -> Path:
    """A bare origin holding one commit with these pipeline files."""
    make_repo(
        root, {f"{name}.yaml": text for name, text in pipelines.items()}, name="seed", origin=True
    )
    return root / "origin.git"


def clone(origin: Path, dest: Path) -> Path:
    git(origin.parent, "clone", "-q", str(origin), str(dest))
    return dest


def command(repo: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "engine", "--repo", str(repo), "tick", *args]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SOURCE), "NO_COLOR": "1"}


def tick(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return sluice("tick", *args, repo=repo, env={"NO_COLOR": "1"}, process=True)


def manifests(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    found = json.loads(done.stdout)
    assert isinstance(found, list)
    return found


def on_origin(origin: Path, folder: str) -> list[str]:
    """Names in `folder` on origin's results branch ([] when the branch or folder is absent)."""
    done = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{BRANCH}:{folder}"],
        cwd=origin,
        capture_output=True,
        text=True,
    )
    return done.stdout.split() if done.returncode == 0 else []


def test_a_due_slot_runs_once_credited_to_its_slot(tmp_path: Path, busybox_image: str) -> None:
    origin = make_origin(
        tmp_path,
        {
            "nightly": pipeline("nightly", "0 2 * * *", busybox_image, 'echo "$GREETING"'),
            "weekly": pipeline("weekly", "0 3 * * 1", busybox_image),
        },
    )
    repo = clone(origin, tmp_path / "runner-a")

    only_weekly = tick(repo, "--now", SLOT_NOW, "--pipeline", "weekly", "--json")
    assert only_weekly.returncode == 0, only_weekly.stderr
    assert manifests(only_weekly) == []

    first = tick(repo, "--now", SLOT_NOW, "--json")
    assert first.returncode == 0, first.stderr
    [manifest] = manifests(first)
    assert manifest["pipeline"] == "nightly"
    assert manifest["status"] == "succeeded"
    assert manifest["params"] == {"greeting": "hello"}
    assert manifest["trigger"] == {
        "kind": "cron",
        "event": "0 2 * * *",
        "scheduled_for": "2026-11-25T02:00:00Z",
        "payload": {},
    }
    assert "[work] hello" in first.stderr
    assert on_origin(origin, "runs/nightly") == [manifest["run_id"]]
    assert on_origin(origin, "runs/weekly") == []
    assert on_origin(origin, "claims/cron/nightly") == ["20261125T0200Z"]
    claim = json.loads(git(origin, "show", f"{BRANCH}:claims/cron/nightly/20261125T0200Z"))
    assert claim["slot"] == "nightly@20261125T0200Z"
    assert claim["claimed_by"]["pid"] > 0

    again = tick(repo, "--now", SLOT_NOW, "--json")
    assert again.returncode == 0, again.stderr
    assert manifests(again) == []
    assert "already claimed" in again.stderr

    # Two hours late, on another runner that never saw the results branch: still claimed.
    late = tick(clone(origin, tmp_path / "runner-b"), "--now", "2026-11-25T04:05:00Z", "--json")
    assert late.returncode == 0, late.stderr
    assert manifests(late) == []
    assert on_origin(origin, "runs/nightly") == [manifest["run_id"]]


def test_a_late_tick_runs_the_slot_it_missed(tmp_path: Path, busybox_image: str) -> None:
    origin = make_origin(tmp_path, {"nightly": pipeline("nightly", "0 2 * * *", busybox_image)})
    repo = clone(origin, tmp_path / "runner")

    too_late = tick(repo, "--now", "2026-11-25T04:05:00Z", "--json")  # default window: 1h
    assert too_late.returncode == 0, too_late.stderr
    assert manifests(too_late) == []
    assert "nothing due" in too_late.stderr

    late = tick(repo, "--now", "2026-11-25T04:05:00Z", "--window", "6h", "--json")
    assert late.returncode == 0, late.stderr
    [manifest] = manifests(late)
    assert manifest["trigger"]["scheduled_for"] == "2026-11-25T02:00:00Z"


def test_a_pipeline_not_due_runs_nothing_and_records_nothing(
    tmp_path: Path, busybox_image: str
) -> None:
    origin = make_origin(tmp_path, {"nightly": pipeline("nightly", "0 2 * * *", busybox_image)})
    done = tick(clone(origin, tmp_path / "runner"), "--now", "2026-11-25T03:30:00Z", "--json")
    assert done.returncode == 0, done.stderr
    assert manifests(done) == []
    assert git(tmp_path, "ls-remote", str(origin), BRANCH) == ""  # no claim, no run


def test_a_failed_run_exits_1_and_its_slot_is_not_run_again(
    tmp_path: Path, busybox_image: str
) -> None:
    origin = make_origin(
        tmp_path, {"nightly": pipeline("nightly", "0 2 * * *", busybox_image, "exit 3")}
    )
    repo = clone(origin, tmp_path / "runner")
    failed = tick(repo, "--now", SLOT_NOW, "--json")
    assert failed.returncode == 1, failed.stderr
    assert [m["status"] for m in manifests(failed)] == ["failed"]
    again = tick(repo, "--now", SLOT_NOW, "--json")
    assert again.returncode == 0, again.stderr
    assert manifests(again) == []


def test_an_invalid_pipeline_exits_2_and_runs_nothing(tmp_path: Path, busybox_image: str) -> None:
    origin = make_origin(
        tmp_path,
        {
            "nightly": pipeline("nightly", "0 2 * * *", busybox_image),
            "broken": pipeline("broken", "0 25 * * *", busybox_image),
        },
    )
    done = tick(clone(origin, tmp_path / "runner"), "--now", SLOT_NOW, "--json")
    assert done.returncode == 2
    assert "pipelines/broken.yaml:3: invalid cron expression '0 25 * * *'" in done.stderr
    assert "Traceback" not in done.stderr
    assert git(tmp_path, "ls-remote", str(origin), BRANCH) == ""


def test_two_racing_ticks_run_each_slot_exactly_once(tmp_path: Path, busybox_image: str) -> None:
    origin = make_origin(
        tmp_path,
        {
            "alpha": pipeline("alpha", "0 2 * * *", busybox_image),
            "beta": pipeline("beta", "*/5 * * * *", busybox_image),
        },
    )
    runners = [clone(origin, tmp_path / f"runner-{n}") for n in ("a", "b")]
    procs = [
        subprocess.Popen(
            command(repo, "--now", SLOT_NOW, "--json"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(),
        )
        for repo in runners
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err  # the loser of a claim is not a failure
        if len(json.loads(out)) < 2:  # it lost a claim: at the push, or seen when it fetched
            assert "another runner has it" in err or "already claimed" in err, err
    ran = [m for out, _ in outputs for m in json.loads(out)]
    assert sorted((m["pipeline"], m["trigger"]["scheduled_for"]) for m in ran) == [
        ("alpha", "2026-11-25T02:00:00Z"),
        ("beta", "2026-11-25T02:05:00Z"),
    ]
    for name in ("alpha", "beta"):
        assert len(on_origin(origin, f"runs/{name}")) == 1, name
        assert len(on_origin(origin, f"claims/cron/{name}")) == 1, name


def test_claims_older_than_a_week_leave_the_tip_and_their_slots_stay_claimed(
    tmp_path: Path, busybox_image: str
) -> None:
    every_slot = pipeline("nightly", "0 2 * * *", busybox_image).replace(
        '- cron: "0 2 * * *"', '- cron: {schedule: "0 2 * * *", catchup: all}'
    )
    origin = make_origin(tmp_path, {"nightly": every_slot})
    repo = clone(origin, tmp_path / "runner")
    for day in ("2026-11-10", "2026-11-11", "2026-11-20"):
        done = tick(repo, "--now", f"{day}T02:05:00Z", "--json")
        assert done.returncode == 0, done.stderr
        assert len(manifests(done)) == 1
    # The 20th's claim removed those of the 10th and 11th (more than 7 days before it).
    assert on_origin(origin, "claims/cron/nightly") == ["20261120T0200Z"]
    assert on_origin(origin, "claims/cron-floor/nightly") == ["20261113T0205Z"]

    # A tick that catches up every slot of a window reaching back past the floor runs the
    # slots after the floor nobody claimed (the 14th to the 19th), never the pruned ones,
    # and keeps every claim of its window.
    wide = tick(repo, "--now", "2026-11-20T03:00:00Z", "--window", "30d", "--json")
    assert wide.returncode == 0, wide.stderr
    ran = [m["trigger"]["scheduled_for"][:10] for m in manifests(wide)]
    assert ran == [f"2026-11-{day}" for day in range(14, 20)]
    assert len(on_origin(origin, "claims/cron/nightly")) == 7

    # The next slot's claim moves the floor forward and drops the older floor's file.
    done = tick(repo, "--now", "2026-11-29T02:05:00Z", "--json")
    assert done.returncode == 0, done.stderr
    assert on_origin(origin, "claims/cron/nightly") == ["20261129T0200Z"]
    assert on_origin(origin, "claims/cron-floor/nightly") == ["20261122T0205Z"]
    assert len(on_origin(origin, "runs/nightly")) == 10
