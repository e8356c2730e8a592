"""Jobs mode (issue 14): `sluice workflow generate --jobs` writes one workflow per pipeline,
each step its own job; and the tick derived from the cron triggers (issue 15 item 7)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import make_repo, sluice
from croniter import croniter

from engine.core.gh_tick import FALLBACK, derive

ROOT = Path(__file__).resolve().parent.parent
DIGEST = "sha256:" + "c" * 64
IMAGE = f"ghcr.io/my-org/sluice@{DIGEST}"
ACTION = "my-org/sluice@" + "a" * 40

DIAMOND = """
    name: diamond
    triggers:
      - cron: "0 3 * * *"
      - push: {paths: ["src/**"]}
      - webhook: {event: retrain}
    defaults:
      image: python:3.11-slim
      secrets: [SHARED]
    steps:
      - name: prepare
        run: "true"
      - name: left
        needs: [prepare]
        run: "true"
        secrets: [LEFT_TOKEN]
        timeout: 20m
        retries: {limit: 2, backoff: 30s}
      - name: train
        needs: [prepare]
        run: "true"
        runs_on: [self-hosted, gpu]
      - name: deploy
        needs: [left, train]
        run: "true"
        approval: true
        environment: model-release
        runs_on: ubuntu-22.04
    finally:
      - name: notify
        run: "true"
        secrets: [SLACK]
        timeout: 5m
"""
OTHER = """
    name: other
    steps: [{name: only, image: x, run: "true"}]
"""


def cli(repo: Path, *args: str) -> tuple[int, str]:
    done = sluice("workflow", *args, repo=repo)
    return done.returncode, done.stdout + done.stderr


def load(path: Path) -> dict[str, Any]:
    data: dict[Any, Any] = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True)
    return data


def flow(repo: Path, name: str) -> dict[str, Any]:
    return load(repo / ".github" / "workflows" / f"sluice-{name}.yml")


def generated(tmp_path: Path, *args: str, settings: str = "") -> Path:
    files = {"sluice.yaml": settings} if settings else {}
    repo = make_repo(tmp_path, {"diamond.yaml": DIAMOND, "other.yaml": OTHER}, files)
    code, out = cli(repo, "generate", "--jobs", *args)
    assert code == 0, out
    return repo


# --- the contract -------------------------------------------------------------------------


def test_one_workflow_per_pipeline_with_the_events_of_that_pipeline(tmp_path: Path) -> None:
    repo = generated(tmp_path)
    names = sorted(p.name for p in (repo / ".github" / "workflows").iterdir())
    assert names == ["sluice-diamond.yml", "sluice-other.yml"]  # no single-mode sluice.yml
    on = flow(repo, "diamond")["on"]
    assert on["push"]["paths"] == ["pipelines/diamond.yaml", "src/**"]
    assert on["schedule"] == [{"cron": "0 3 * * *"}]
    assert list(on["workflow_dispatch"]["inputs"]) == ["params"]
    assert on["repository_dispatch"]["types"] == ["retrain", "sluice-drift", "sluice-run"]
    other = flow(repo, "other")["on"]
    assert "schedule" not in other and other["push"]["paths"] == ["pipelines/other.yaml"]
    assert other["repository_dispatch"]["types"] == ["sluice-drift", "sluice-run"]


def test_jobs_plan_steps_finish_as_the_contract_says(tmp_path: Path) -> None:
    data = flow(generated(tmp_path), "diamond")
    assert data["permissions"] == {}
    jobs = data["jobs"]
    assert list(jobs) == [
        "plan",
        "step-prepare",
        "step-left",
        "step-train",
        "step-deploy",
        "finish",
    ]  # finally steps get no job of their own

    plan = jobs["plan"]
    assert plan["runs-on"] == "ubuntu-latest"
    assert plan["outputs"] == {
        "run-id": "${{ steps.plan.outputs.run-id }}",
        "steps": "${{ steps.plan.outputs.steps }}",
    }
    checkout, engine = plan["steps"]
    assert checkout["with"] == {"fetch-depth": 1, "persist-credentials": False}
    assert engine["id"] == "plan"
    assert engine["with"] == {"command": "plan", "pipeline": "diamond"}
    assert engine["env"] == {"GITHUB_TOKEN": "${{ github.token }}"}

    left = jobs["step-left"]
    assert left["needs"] == ["plan", "step-prepare"]
    assert left["if"] == (
        "${{ !cancelled() && needs.plan.outputs.run-id != '' && "
        "fromJSON(needs.plan.outputs.steps)['left'] == 'run' && "
        "!contains(needs.*.result, 'failure') }}"
    )
    assert left["runs-on"] == "ubuntu-latest"
    assert left["permissions"] == {"contents": "write"}
    assert "environment" not in left
    step = left["steps"][-1]
    assert step["with"] == {
        "command": "step",
        "run-id": "${{ needs.plan.outputs.run-id }}",
        "step": "left",
    }
    assert step["env"] == {
        "GITHUB_TOKEN": "${{ github.token }}",
        "LEFT_TOKEN": "${{ secrets.LEFT_TOKEN }}",
        "SHARED": "${{ secrets.SHARED }}",
    }  # only this step's secrets: not SLACK, not another step's
    assert jobs["step-train"]["runs-on"] == ["self-hosted", "gpu"]
    deploy = jobs["step-deploy"]
    assert deploy["needs"] == ["plan", "step-left", "step-train"]
    assert deploy["runs-on"] == "ubuntu-22.04"
    assert deploy["environment"] == "model-release"
    assert deploy["permissions"] == {"contents": "write", "actions": "read"}

    finish = jobs["finish"]
    assert finish["needs"] == ["plan", "step-prepare", "step-left", "step-train", "step-deploy"]
    assert finish["if"] == "${{ always() && needs.plan.outputs.run-id != '' }}"
    assert finish["runs-on"] == "ubuntu-latest"
    step = finish["steps"][-1]
    assert step["with"] == {
        "command": "finish",
        "run-id": "${{ needs.plan.outputs.run-id }}",
        "jobs": "${{ toJSON(needs) }}",
    }
    assert step["env"] == {
        "GITHUB_TOKEN": "${{ github.token }}",
        "SHARED": "${{ secrets.SHARED }}",
        "SLACK": "${{ secrets.SLACK }}",
    }
    for job in jobs.values():  # every action pinned by a full commit, or the placeholder
        for one in job["steps"]:
            assert "@" in one["uses"] and len(one["uses"].split("@")[1]) == 40


def test_defaults_runs_on_places_plan_finish_and_steps(tmp_path: Path) -> None:
    text = DIAMOND.replace("defaults:\n", "defaults:\n      runs_on: [self-hosted, linux]\n")
    repo = make_repo(tmp_path, {"diamond.yaml": text})
    assert cli(repo, "generate", "--jobs")[0] == 0
    jobs = flow(repo, "diamond")["jobs"]
    assert jobs["plan"]["runs-on"] == ["self-hosted", "linux"]
    assert jobs["finish"]["runs-on"] == ["self-hosted", "linux"]
    assert jobs["step-prepare"]["runs-on"] == ["self-hosted", "linux"]
    assert jobs["step-train"]["runs-on"] == ["self-hosted", "gpu"]  # the step's own wins


# --- timeout-minutes ------------------------------------------------------------------------


def test_timeout_minutes_from_timeout_attempts_and_backoff(tmp_path: Path) -> None:
    repo = generated(tmp_path)
    jobs = flow(repo, "diamond")["jobs"]
    # left: 20m x 3 attempts + (30s + 60s) backoff = 61.5m -> 62, + 20m margin
    assert jobs["step-left"]["timeout-minutes"] == 82
    assert jobs["step-prepare"]["timeout-minutes"] == 60 + 20  # the 1h default timeout
    assert jobs["finish"]["timeout-minutes"] == 5 + 20  # its finally step
    assert jobs["plan"]["timeout-minutes"] == 20
    text = (repo / ".github/workflows/sluice-diamond.yml").read_text()
    assert "timeout-minutes: 82  # 20m x 3 attempts + 1m30s backoff + 20m margin" in text


def test_a_hosted_job_is_capped_at_360_minutes_a_self_hosted_one_is_not(tmp_path: Path) -> None:
    text = DIAMOND.replace("timeout: 20m", "timeout: 3h").replace(
        "runs_on: [self-hosted, gpu]",
        "runs_on: [self-hosted, gpu]\n        timeout: 3h\n        retries: 2",
    )
    repo = make_repo(tmp_path, {"diamond.yaml": text})
    assert cli(repo, "generate", "--jobs")[0] == 0
    jobs = flow(repo, "diamond")["jobs"]
    assert jobs["step-left"]["timeout-minutes"] == 360
    assert jobs["step-train"]["timeout-minutes"] == 3 * 180 + 1 + 20  # 10s + 20s backoff
    written = (repo / ".github/workflows/sluice-diamond.yml").read_text()
    assert "# capped: GitHub-hosted runners stop a job after 360 minutes" in written


def test_a_step_that_cannot_fit_in_a_hosted_job_is_refused_with_the_fix(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"diamond.yaml": DIAMOND.replace("timeout: 20m", "timeout: 6h")})
    code, out = cli(repo, "generate", "--jobs")
    assert code == 2, out
    assert "pipelines/diamond.yaml:" in out and "steps.left.timeout" in out
    assert "360 minutes" in out and "at most 5h40m" in out and "self-hosted" in out
    assert not (repo / ".github").exists()
    assert cli(repo, "generate")[0] == 0  # single mode has no such limit


def test_more_than_256_jobs_is_refused(tmp_path: Path) -> None:
    steps = "\n".join(f"      - {{name: s{i}, run: 'true'}}" for i in range(255))
    text = f"name: wide\ndefaults: {{image: x}}\nsteps:\n{steps}\n"
    repo = make_repo(tmp_path, {"wide.yaml": text})
    code, out = cli(repo, "generate", "--jobs")
    assert code == 2 and "257 jobs" in out and "at most 256" in out, out
    # 254 steps (256 jobs) fit
    (repo / "pipelines/wide.yaml").write_text(
        text.replace("      - {name: s254, run: 'true'}\n", "")
    )
    code, out = cli(repo, "generate", "--jobs")
    assert code == 0, out
    assert len(flow(repo, "wide")["jobs"]) == 256


# --- the engine step: uses, image -----------------------------------------------------------


def test_placeholder_until_sluice_yaml_names_the_action(tmp_path: Path) -> None:
    repo = generated(tmp_path)
    path = repo / ".github/workflows/sluice-other.yml"
    assert "is a placeholder that cannot run" in path.read_text()
    (repo / "sluice.yaml").write_text(f'workflow: {{mode: jobs, uses: "{ACTION}  # v1.2.0"}}\n')
    assert cli(repo, "check")[0] == 1  # the setting changes the files
    assert cli(repo, "generate")[0] == 0
    text = path.read_text()
    assert "placeholder" not in text
    assert f"uses: {ACTION}  # v1.2.0" in text
    # Dependabot bumps the file: generating again keeps the bump (same Action)
    bumped = "my-org/sluice@" + "b" * 40 + "  # v1.3.0"
    path.write_text(text.replace(f"{ACTION}  # v1.2.0", bumped))
    assert cli(repo, "check")[0] == 0
    assert cli(repo, "generate")[0] == 0 and bumped in path.read_text()
    # another Action in sluice.yaml wins over the file's
    (repo / "sluice.yaml").write_text(f"workflow: {{mode: jobs, uses: 'fork/sluice@{'d' * 40}'}}\n")
    assert cli(repo, "generate")[0] == 0
    assert f"uses: fork/sluice@{'d' * 40}\n" in path.read_text()


def test_single_mode_takes_the_action_from_sluice_yaml_too(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path, {"other.yaml": OTHER}, {"sluice.yaml": f"workflow: {{uses: '{ACTION}'}}\n"}
    )
    assert cli(repo, "generate")[0] == 0
    text = (repo / ".github/workflows/sluice.yml").read_text()
    assert f"uses: {ACTION}\n" in text and "placeholder" not in text


def test_a_published_image_makes_the_engine_step_a_docker_uses(tmp_path: Path) -> None:
    repo = generated(tmp_path, settings=f"workflow: {{image: '{IMAGE}'}}\n")
    for job in flow(repo, "diamond")["jobs"].values():
        assert job["steps"][-1]["uses"] == f"docker://{IMAGE}"
    assert "placeholder" not in (repo / ".github/workflows/sluice-diamond.yml").read_text()
    other = f"127.0.0.1:5000/sluice:v1@{DIGEST}"
    code, out = cli(repo, "generate", "--jobs", "--image", other)
    assert code == 0, out
    assert flow(repo, "other")["jobs"]["plan"]["steps"][-1]["uses"] == f"docker://{other}"


def test_images_not_pinned_by_digest_are_refused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"other.yaml": OTHER})
    code, out = cli(repo, "generate", "--jobs", "--image", "ghcr.io/my-org/sluice:v1")
    assert code == 2 and "pinned by digest" in out, out
    (repo / "sluice.yaml").write_text("workflow: {image: 'ghcr.io/my-org/sluice:latest'}\n")
    code, out = cli(repo, "generate", "--jobs")
    assert code == 2 and "sluice.yaml" in out and "sha256" in out, out
    (repo / "sluice.yaml").write_text(f"workflow: {{uses: 'docker://{IMAGE}'}}\n")
    code, out = cli(repo, "generate", "--jobs")
    assert code == 2 and "image:" in out, out


# --- mode, check, stale files ----------------------------------------------------------------


def test_mode_from_sluice_yaml_and_the_flags(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"other.yaml": OTHER}, {"sluice.yaml": "workflow: {mode: jobs}\n"})
    workflows = repo / ".github" / "workflows"
    assert cli(repo, "generate")[0] == 0
    assert sorted(p.name for p in workflows.iterdir()) == ["sluice-other.yml"]
    code, out = cli(repo, "generate", "--single")
    assert code == 0 and "removed .github/workflows/sluice-other.yml" in out, out
    assert sorted(p.name for p in workflows.iterdir()) == ["sluice.yml"]
    code, out = cli(repo, "check")  # sluice.yaml says jobs
    assert code == 1
    assert "sluice-other.yml is missing" in out
    assert "sluice.yml is stale (it was generated for single mode)" in out


def test_check_reports_each_missing_changed_and_stale_file(tmp_path: Path) -> None:
    repo = generated(tmp_path)
    workflows = repo / ".github" / "workflows"
    (workflows / "sluice-approve.yml").write_text("name: hand-written\n")  # not generated: kept
    assert cli(repo, "check", "--jobs")[0] == 0
    (repo / "pipelines" / "other.yaml").unlink()
    diamond = repo / "pipelines" / "diamond.yaml"
    diamond.write_text(diamond.read_text().replace('"src/**"', '"lib/**"'))
    (repo / "pipelines" / "third.yaml").write_text(OTHER.replace("other", "third"))
    code, out = cli(repo, "check", "--jobs")
    assert code == 1
    assert "sluice-diamond.yml is out of date" in out and '+      - "lib/**"' in out
    assert "sluice-other.yml is stale (its pipeline no longer exists)" in out
    assert "sluice-third.yml is missing" in out
    code, out = cli(repo, "generate", "--jobs")
    assert code == 0 and "removed .github/workflows/sluice-other.yml" in out
    assert sorted(p.name for p in workflows.iterdir()) == [
        "sluice-approve.yml",
        "sluice-diamond.yml",
        "sluice-third.yml",
    ]
    assert cli(repo, "check", "--jobs")[0] == 0


def test_a_hand_written_file_of_the_same_name_is_never_overwritten(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"approve.yaml": OTHER.replace("other", "approve")})
    hand = repo / ".github" / "workflows" / "sluice-approve.yml"
    hand.parent.mkdir(parents=True)
    hand.write_text("name: Sluice approval\n")
    for command in ("generate", "check"):
        code, out = cli(repo, command, "--jobs")
        assert code == 2, out
        assert "sluice-approve.yml was not written by `sluice workflow generate`" in out
        assert "rename the pipeline or the file" in out
    assert hand.read_text() == "name: Sluice approval\n"


def test_generate_to_stdout_prints_every_file(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"diamond.yaml": DIAMOND, "other.yaml": OTHER})
    code, out = cli(repo, "generate", "--jobs", "-o", "-")
    assert code == 0
    assert "# --- .github/workflows/sluice-diamond.yml" in out
    assert "# --- .github/workflows/sluice-other.yml" in out
    assert not (repo / ".github").exists()


def test_tick_option_applies_to_each_file(tmp_path: Path) -> None:
    repo = generated(tmp_path, "--tick", "*/30 * * * *")
    assert flow(repo, "diamond")["on"]["schedule"] == [{"cron": "*/30 * * * *"}]


# --- the tick (issue 15 item 7) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedules", "crons", "per_day"),
    [
        ([("0 2 * * *", "UTC")], ("0 2 * * *",), 1.0),
        ([("0 3 * * 1", "UTC"), ("0 3 * * 4", "UTC")], ("0 3 * * 1", "0 3 * * 4"), 0.29),
        # hourly and nightly: one hourly tick (24 a day) beats both lines (25)
        ([("0 * * * *", "UTC"), ("0 2 * * *", "UTC")], ("0 * * * *",), 24.0),
        # a zone: the UTC hours of its winter and summer time
        ([("30 6 * * *", "Europe/Berlin")], ("30 4,5 * * *",), 2.0),
        ([("15 2 * * *", "Asia/Kolkata")], ("45 20 * * *",), 1.0),
        ([("*/15 * * * *", "UTC")], (FALLBACK,), 96.0),
    ],
)
def test_the_tick_is_derived_from_the_schedules(
    schedules: list[tuple[str, str]], crons: tuple[str, ...], per_day: float
) -> None:
    tick = derive(schedules)
    assert tick is not None
    assert (tick.crons, tick.jobs_per_day) == (crons, per_day)


def test_many_odd_times_become_one_line_that_covers_them_all() -> None:
    times = [(7, 1), (13, 2), (22, 3), (41, 4), (55, 5)]
    schedules = [(f"{minute} {hour} * * *", "UTC") for minute, hour in times]
    tick = derive(schedules)
    assert tick is not None
    # five lines would each be exact (5 a day) but more than MAX_LINES: one line, 25 a day
    assert (tick.crons, tick.jobs_per_day) == (("7,13,22,41,55 1-5 * * *",), 25.0)
    for expr, _ in schedules:  # every slot is a tick
        slot = croniter(expr, datetime(2026, 3, 1)).get_next(datetime)
        assert any(croniter.match(cron, slot) for cron in tick.crons), (expr, tick.crons)
    assert derive([]) is None
