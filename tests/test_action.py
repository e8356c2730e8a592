"""The GitHub Action: its entrypoint's decisions, and the engine image run as the runner runs it."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import conftest
import docker
import pytest
from conftest import S3Bucket, poll

from engine.action import git_env, hand_back, has_checkout_credentials
from engine.cli.action_inputs import (
    Inputs,
    command_argv,
    output_names,
    read_inputs,
    settings,
    unused_inputs,
)
from engine.core.manifest import overall_status
from engine.errors import ActionError

ROOT = Path(__file__).resolve().parent.parent
RUNNER_UID = 1001  # the user GitHub's hosted runners run jobs as
SOCKET = "/var/run/docker.sock"


def git(cwd: Path, *args: str) -> str:
    # safe.directory: the test (root) works in a workspace that the runner's user owns
    return conftest.git(cwd, "-c", "safe.directory=*", *args)


# --- the entrypoint's decisions (no Docker) ------------------------------------------------


def test_inputs_come_from_input_variables_with_dashes_kept() -> None:
    inputs = read_inputs(
        {"INPUT_COMMAND": "retry", "INPUT_RUN-ID": " 20261124T100000Z-a1b2c3 ", "INPUT_PUSH": ""}
    )
    assert inputs == Inputs(command="retry", run_id="20261124T100000Z-a1b2c3", push="true")
    assert read_inputs({}) == Inputs()


@pytest.mark.parametrize(
    ("given", "argv"),
    [
        ({}, ["trigger", "--json"]),
        ({"command": "tick"}, ["tick", "--json"]),
        ({"command": "tick", "pipeline": "nightly"}, ["tick", "--json", "--pipeline", "nightly"]),
        ({"command": "validate"}, ["validate"]),
        ({"command": "validate", "pipeline": "pipelines/a.yaml"}, ["validate", "pipelines/a.yaml"]),
        ({"command": "run", "pipeline": "churn"}, ["run", "churn", "--json"]),
        (
            {"command": "run", "pipeline": "churn", "params": '{"n": 2}'},
            ["run", "churn", "--json", "--params-json", '{"n": 2}'],
        ),
        ({"command": "retry", "run_id": "r1"}, ["retry", "r1", "--json"]),
        ({"command": "approve", "run_id": "r1"}, ["approve", "r1"]),
        ({"command": "reject", "run_id": "r1", "step": "deploy"}, ["reject", "r1"]),
        (
            {"command": "drift", "params": '{"reference": "a.csv", "features": ["x", "y"]}'},
            ["drift", "compute", "--features", "x", "--features", "y", "--reference", "a.csv"],
        ),
        ({"command": "plan", "pipeline": "churn"}, ["plan", "churn"]),
        ({"command": "step", "run_id": "r1", "step": "train"}, ["step", "r1", "train"]),
        (
            {"command": "finish", "run_id": "r1", "jobs": '{"plan": {}}'},
            ["finish", "r1", '--jobs={"plan": {}}'],
        ),
        (
            {"command": "finish", "run_id": "r1", "jobs": "--push"},
            ["finish", "r1", "--jobs=--push"],
        ),
    ],
)
def test_each_command_becomes_a_sluice_command_line(given: dict[str, str], argv: list[str]) -> None:
    assert command_argv(Inputs(**given)) == argv


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"command": "deploy"}, "use one of trigger, run"),
        ({"command": "run"}, "needs the input pipeline"),
        ({"command": "approve"}, "needs the input run-id"),
        ({"command": "step", "run_id": "r1"}, "needs the input step"),
        ({"command": "plan"}, "needs the input pipeline"),
        ({"command": "run", "pipeline": "--no-cache"}, "may not start with '-'"),
        ({"command": "run", "pipeline": "p", "params": "[1]"}, "must be a JSON object"),
        ({"command": "run", "pipeline": "p", "params": "{"}, "not valid JSON"),
        ({"command": "drift", "params": '{"Bad Key": 1}'}, "not an option name"),
    ],
)
def test_inputs_that_make_no_command_are_refused(given: dict[str, str], message: str) -> None:
    with pytest.raises(ActionError, match=message):
        command_argv(Inputs(**given))


def test_inputs_a_command_ignores_are_named() -> None:
    assert unused_inputs(Inputs(command="trigger", pipeline="p", run_id="r")) == [
        "pipeline",
        "run-id",
    ]
    assert unused_inputs(Inputs(command="approve", run_id="r", step="s")) == []


def test_settings_put_the_inputs_over_the_repository_s_sluice_yaml() -> None:
    user = {"pipelines": "ml/", "results": {"remote": "upstream"}, "max_parallel": 8}
    merged = settings(
        Inputs(results_branch="ml-runs", artifacts="s3://b/x", push="false", max_parallel="2"),
        user,
    )
    assert merged == {
        "pipelines": "ml/",
        "results": {"remote": "upstream", "branch": "ml-runs", "push": False},
        "artifacts": "s3://b/x",
        "max_parallel": 2,
    }
    assert settings(Inputs(), None) == {"results": {"push": True}}
    assert settings(Inputs(push="auto"), None)["results"]["push"] == "auto"
    for bad in (Inputs(push="maybe"), Inputs(results_branch="-x"), Inputs(max_parallel="two")):
        with pytest.raises(ActionError):
            settings(bad, None)


def test_git_env_trusts_the_workspace_without_writing_any_config(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the workspace must belong to another user")
    repo = tmp_path / "ws"
    repo.mkdir()
    git(repo, "init", "-q")
    for path in [repo, *repo.rglob("*")]:
        os.lchown(path, RUNNER_UID, RUNNER_UID)
    plain = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    refused = subprocess.run(["git", "status"], cwd=repo, env=plain, capture_output=True)
    assert refused.returncode != 0 and b"dubious ownership" in refused.stderr
    env = git_env(plain, repo, has_credentials=False)
    assert subprocess.run(["git", "status"], cwd=repo, env=env, capture_output=True).returncode == 0
    assert not (tmp_path / ".gitconfig").exists()
    assert "safe" not in (repo / ".git" / "config").read_text()


def test_git_env_adds_the_token_only_where_the_checkout_kept_none() -> None:
    base = {"GITHUB_TOKEN": "t0k", "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "a.b"}
    env = git_env(base, Path("/github/workspace"), has_credentials=False)
    assert env["GIT_CONFIG_COUNT"] == "3"
    assert env["GIT_CONFIG_KEY_0"] == "a.b"  # the caller's own entry stays
    assert env["GIT_CONFIG_KEY_1"] == "safe.directory"
    assert env["GIT_CONFIG_VALUE_1"] == "/github/workspace"
    assert env["GIT_CONFIG_KEY_2"] == "http.https://github.com/.extraheader"
    assert env["GIT_CONFIG_VALUE_2"] == "AUTHORIZATION: basic eC1hY2Nlc3MtdG9rZW46dDBr"
    kept = git_env(base, Path("/w"), has_credentials=True)
    assert kept["GIT_CONFIG_COUNT"] == "2"  # two auth headers make GitHub refuse


def test_credentials_the_checkout_kept_are_noticed(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    assert not has_checkout_credentials(tmp_path, {"PATH": os.environ["PATH"]})
    git(tmp_path, "config", "http.https://github.com/.extraheader", "AUTHORIZATION: basic x")
    assert has_checkout_credentials(tmp_path, {"PATH": os.environ["PATH"]})


def test_output_names_read_both_forms() -> None:
    text = "a=1\nb<<ghadelimiter_x\nline=1\nc=2\nghadelimiter_x\nd=\n"
    assert output_names(text) == {"a", "b", "d"}


def test_overall_status_orders_the_runs_like_trigger() -> None:
    assert overall_status(["succeeded", "waiting_approval"]) == "waiting_approval"
    assert overall_status(["succeeded", "failed", "waiting_approval"]) == "failed"
    assert overall_status(["failed", "cancelled"]) == "cancelled"
    assert overall_status([]) == "skipped"


def test_hand_back_gives_root_s_files_to_the_owner_and_follows_no_link(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create files another user must get back")
    outside = tmp_path / "outside"
    outside.write_text("root's")
    ws = tmp_path / "ws"
    (ws / ".sluice" / "runs").mkdir(parents=True)
    (ws / ".sluice" / "runs" / "m.json").write_text("{}")
    (ws / "link").symlink_to(outside)
    os.chown(ws, RUNNER_UID, RUNNER_UID)
    assert hand_back(ws) == 4
    for path in ws.rglob("*"):
        assert path.lstat().st_uid == RUNNER_UID, path
    assert outside.stat().st_uid == 0


# --- the image, run as GitHub runs it --------------------------------------------------------
# The image is built from Dockerfile (scripts/build-engine-image.sh: offline, cached), then
# `docker run` as GitHub runs a Docker action: the workspace, owned by another user as the
# runner's is, at /github/workspace; the Docker socket mounted; inputs as INPUT_*; GitHub's
# file commands in a mounted folder; a bare repository on disk, mounted at the same path,
# as `origin`.


@dataclass
class Workspace:
    """A checked-out repository as the runner leaves it, with its origin and runner folders."""

    root: Path
    name: str  # the pipeline, unique per test: its containers are ours alone
    shared_origin: Path | None = None  # another job's: a second runner's clone of its origin

    @property
    def repo(self) -> Path:
        return self.root / "workspace"

    @property
    def origin(self) -> Path:
        return self.shared_origin or self.root / "origin.git"

    @property
    def files(self) -> Path:
        return self.root / "file_commands"

    def outputs(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for line in (self.files / "set_output").read_text().splitlines():
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
        return found

    def summary(self) -> str:
        return (self.files / "step_summary").read_text()

    def results(self, path: str) -> str:
        return git(self.origin, "show", f"sluice-results:{path}")

    def manifest(self, run_id: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.results(f"runs/{self.name}/{run_id}/manifest.json"))
        return data

    def commit(self, path: str, text: str) -> str:
        (self.repo / path).parent.mkdir(parents=True, exist_ok=True)
        (self.repo / path).write_text(text)
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-qm", f"change {path}")
        git(self.repo, "push", "-q", "origin", "main")
        _give_to_runner(self.repo)
        return git(self.repo, "rev-parse", "HEAD")


def _give_to_runner(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        os.lchown(path, RUNNER_UID, RUNNER_UID)


PIPELINE = """\
name: {name}
triggers:
  - push: {{paths: ["src/**"]}}
  - webhook: {{event: say-{name}}}
  - cron: "* * * * *"
  - drift: {{monitor: mon-{name}}}
params: {{greeting: hi}}
defaults: {{image: "{image}"}}
steps:
  - name: greet
    env: {{GREETING: "${{{{ params.greeting }}}}"}}
    run: |
      echo "greeting=$GREETING"
      echo '{{"words": 1}}' > /sluice/outputs/metrics.json
  - name: count
    needs: [greet]
    run: ls /sluice/inputs/greet
"""
SLOW = """\
name: slow-{name}
steps:
  - name: wait
    image: "{image}"
    run: sleep 300
"""
GATED = """\
name: gated-{name}
steps:
  - name: build
    image: "{image}"
    run: echo built
  - name: ship
    image: "{image}"
    needs: [build]
    approval: true
    run: echo shipped
"""


@pytest.fixture
def workspace(tmp_path: Path, busybox_image: str) -> Iterator[Workspace]:
    if os.geteuid() != 0:
        pytest.skip("needs root: the workspace must belong to the runner's user")
    ws = Workspace(tmp_path, f"hello-{secrets.token_hex(3)}")
    ws.repo.mkdir()
    for template, file in ((PIPELINE, "hello"), (SLOW, "slow"), (GATED, "gated")):
        text = template.format(name=ws.name, image=busybox_image)
        (ws.repo / "pipelines").mkdir(exist_ok=True)
        (ws.repo / "pipelines" / f"{file}.yaml").write_text(text)
    (ws.repo / "src").mkdir()
    (ws.repo / "src" / "app.py").write_text("print('v1')\n")
    git(ws.repo, "init", "-q", "-b", "main")
    git(ws.repo, "add", "-A")
    git(ws.repo, "commit", "-qm", "start")
    git(tmp_path, "init", "-q", "--bare", str(ws.origin))
    git(ws.repo, "remote", "add", "origin", str(ws.origin))
    git(ws.repo, "push", "-q", "origin", "main")
    _runner_folders(ws)
    yield ws


def _runner_folders(ws: Workspace) -> None:
    """The folders the runner makes next to a checkout, and the checkout, as its user's."""
    ws.files.mkdir()
    for name in ("set_output", "step_summary"):  # the runner makes them, as its user
        (ws.files / name).touch()
    (ws.root / "home").mkdir()
    (ws.root / "workflow").mkdir()
    for folder in (ws.repo, ws.files, ws.root / "home"):
        _give_to_runner(folder)


def _argv(
    image: str,
    ws: Workspace,
    event: str,
    payload: dict[str, Any],
    *,
    s3_env: Mapping[str, str] | None = None,
    **inputs: str,
) -> list[str]:
    """`docker run` as the runner runs the Action. `s3_env`: the AWS variables a workflow's
    `env:` would give for an S3 server on the host's loopback; the container then joins the
    host's network to reach it (the steps still get their own network from the engine)."""
    (ws.root / "workflow" / "event.json").write_text(json.dumps(payload))
    env = {
        "HOME": "/github/home",
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": "/github/workspace",
        "GITHUB_EVENT_NAME": event,
        "GITHUB_EVENT_PATH": "/github/workflow/event.json",
        "GITHUB_OUTPUT": "/github/file_commands/set_output",
        "GITHUB_STEP_SUMMARY": "/github/file_commands/step_summary",
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_RUN_ID": "1",
        "GITHUB_ACTOR": "octocat",
        **(s3_env or {}),
        **{f"INPUT_{key.upper().replace('_', '-')}": value for key, value in inputs.items()},
    }
    mounts = {
        SOCKET: SOCKET,
        str(ws.repo): "/github/workspace",
        str(ws.files): "/github/file_commands",
        str(ws.root / "workflow"): "/github/workflow",
        str(ws.root / "home"): "/github/home",
        str(ws.origin): str(ws.origin),  # origin's URL is its path: the same inside
    }
    network = "host" if s3_env else "none"
    argv = ["docker", "run", "--rm", "--network", network, "--cidfile", str(ws.root / "cid")]
    argv += [arg for host, inside in mounts.items() for arg in ("-v", f"{host}:{inside}")]
    argv += [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    return [*argv, "-w", "/github/workspace", image]


def run_action(
    image: str,
    ws: Workspace,
    event: str,
    payload: dict[str, Any],
    *,
    s3_env: Mapping[str, str] | None = None,
    **inputs: str,
) -> subprocess.CompletedProcess[str]:
    (ws.root / "cid").unlink(missing_ok=True)
    return subprocess.run(
        _argv(image, ws, event, payload, s3_env=s3_env, **inputs),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def step_containers_created(
    client: docker.DockerClient, pipeline: str, since: float
) -> list[dict[str, str]]:
    """Labels of the step containers the daemon created for `pipeline` since `since`."""
    events = client.events(
        since=int(since) - 1,
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": f"sluice.pipeline={pipeline}"},
    )
    return [dict(event["Actor"]["Attributes"]) for event in events]


def assert_owned_by_runner(ws: Workspace) -> None:
    for folder in (ws.repo, ws.root / "home", ws.files):
        for path in [folder, *folder.rglob("*")]:
            owner = path.lstat().st_uid
            assert owner == RUNNER_UID, f"{path} belongs to uid {owner}: later steps break"


def _push_event(ws: Workspace, before: str, after: str) -> dict[str, Any]:
    return {
        "ref": "refs/heads/main",
        "before": before,
        "after": after,
        "created": False,
        "deleted": False,
        "forced": False,
        "commits": [{"id": after, "added": [], "modified": ["src/app.py"], "removed": []}],
        "head_commit": {"id": after, "added": [], "modified": ["src/app.py"], "removed": []},
        "pusher": {"name": "octocat", "email": "octocat@example.com"},
        "repository": {"full_name": "o/r", "default_branch": "main"},
        "sender": {"login": "octocat"},
    }


@pytest.mark.docker
@pytest.mark.slow
def test_run_starts_sibling_containers_pushes_results_and_leaves_no_root_files(
    engine_image: str, workspace: Workspace, docker_client: docker.DockerClient
) -> None:
    ws = workspace
    started = time.time()
    head = git(ws.repo, "rev-parse", "HEAD")
    done = run_action(
        engine_image, ws, "workflow_dispatch", {"inputs": {}}, command="run", pipeline=ws.name
    )
    assert done.returncode == 0, done.stderr

    outputs = ws.outputs()
    assert outputs["status"] == ["succeeded"]
    [run_id] = outputs["run-ids"]
    manifest = ws.manifest(run_id)  # pushed to origin's results branch
    assert manifest["status"] == "succeeded"
    assert manifest["commit"] == head and manifest["dirty"] is False  # git trusted the workspace
    assert manifest["steps"]["greet"]["metrics"] == {"words": 1}
    assert "greeting=hi" in ws.results(f"runs/{ws.name}/{run_id}/logs/greet.1.log")

    action_id = (ws.root / "cid").read_text().strip()
    created = step_containers_created(docker_client, ws.name, started)
    assert sorted(labels["sluice.step"] for labels in created) == ["count", "greet"]
    for labels in created:  # made by the engine inside the Action's container, on the host
        assert labels["sluice.run-id"] == run_id
        assert labels["sluice.engine"].startswith(action_id[:12] + ":")
    assert (
        docker_client.containers.list(all=True, filters={"label": f"sluice.run-id={run_id}"}) == []
    )

    assert "```mermaid" in ws.summary() and run_id in ws.summary()
    # issue 13: the record links to its CI run, the summary to the manifest and the run;
    # the default store is in the workspace: warned about, once
    assert manifest["ci"]["run_url"] == "https://github.com/o/r/actions/runs/1"
    assert (
        f"(<https://github.com/o/r/blob/sluice-results/runs/{ws.name}/{run_id}/manifest.json>)"
        in ws.summary()
    )
    assert ws.summary().count("Sluice warning") == 1
    assert done.stderr.count("::warning title=Sluice: outputs will not last::") == 1
    assert_owned_by_runner(ws)
    assert "dubious ownership" not in done.stderr


@pytest.mark.docker
@pytest.mark.slow
def test_a_step_with_image_engine_runs_in_the_actions_own_image(
    engine_image: str, workspace: Workspace, docker_client: docker.DockerClient
) -> None:
    ws = workspace
    name = f"{ws.name}-engine"
    ws.commit(
        "pipelines/engine-step.yaml",
        f"""name: {name}
steps:
  - name: check
    image: "@engine"
    run: |
      sluice --version
      echo '{{"has_sluice": 1}}' > /sluice/outputs/metrics.json
""",
    )
    done = run_action(
        engine_image, ws, "workflow_dispatch", {"inputs": {}}, command="run", pipeline=name
    )
    assert done.returncode == 0, done.stderr
    [run_id] = ws.outputs()["run-ids"]
    manifest = json.loads(ws.results(f"runs/{name}/{run_id}/manifest.json"))
    step = manifest["steps"]["check"]
    assert step["metrics"] == {"has_sluice": 1}  # `run` replaced the engine's entrypoint
    assert step["image_id"] == docker_client.images.get(engine_image).id  # found by itself


@pytest.mark.docker
@pytest.mark.slow
def test_settings_inputs_go_over_the_repository_s_sluice_yaml(
    engine_image: str, workspace: Workspace
) -> None:
    ws = workspace
    (ws.repo / "sluice.yaml").write_text("results: {branch: from-yaml}\nmax_parallel: 1\n")
    ws.commit("sluice.yaml", (ws.repo / "sluice.yaml").read_text())
    done = run_action(
        engine_image,
        ws,
        "workflow_dispatch",
        {},
        command="run",
        pipeline=ws.name,
        results_branch="ml-runs",
        artifacts="file://.sluice/store",
    )
    assert done.returncode == 0, done.stderr
    [run_id] = ws.outputs()["run-ids"]
    manifest = json.loads(git(ws.origin, "show", f"ml-runs:runs/{ws.name}/{run_id}/manifest.json"))
    [pointer] = manifest["steps"]["greet"]["outputs"].values()
    assert pointer["uri"].startswith("file://.sluice/store/sha256/")  # not the runner's path
    assert git(ws.origin, "branch", "--list", "from-yaml") == ""

    kept = run_action(
        engine_image, ws, "workflow_dispatch", {}, command="run", pipeline=ws.name, push="false"
    )
    assert kept.returncode == 0, kept.stderr
    local = ws.outputs()["run-ids"][-1]
    assert git(ws.repo, "cat-file", "-t", f"from-yaml:runs/{ws.name}/{local}/manifest.json")
    assert git(ws.origin, "branch", "--list", "from-yaml") == ""  # not pushed
    assert_owned_by_runner(ws)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_container_removes_the_steps_and_exits_130(
    engine_image: str, workspace: Workspace, docker_client: docker.DockerClient, signum: int
) -> None:
    ws = workspace
    pipeline = f"slow-{ws.name}"
    (ws.root / "cid").unlink(missing_ok=True)
    argv = _argv(engine_image, ws, "workflow_dispatch", {}, command="run", pipeline=pipeline)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def running() -> list[Any]:
        return list(docker_client.containers.list(filters={"label": f"sluice.pipeline={pipeline}"}))

    try:
        poll(lambda: len(running()) == 1, 120, "the step's container to start")
        action_id = (ws.root / "cid").read_text().strip()
        sent = time.monotonic()
        docker_client.api.kill(action_id, signal=signum)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["docker", "rm", "-f", (ws.root / "cid").read_text()], check=False)
    assert proc.returncode == 130, err
    assert took < 7.5, f"took {took:.1f}s: GitHub kills the job 7.5 s after its first signal"
    assert (
        docker_client.containers.list(all=True, filters={"label": f"sluice.pipeline={pipeline}"})
        == []
    )
    [run_id] = ws.outputs()["run-ids"]
    assert ws.outputs()["status"] == ["cancelled"]
    manifest = json.loads(ws.results(f"runs/{pipeline}/{run_id}/manifest.json"))
    assert manifest["status"] == "cancelled"
    assert_owned_by_runner(ws)


@pytest.mark.docker
def test_validate_annotates_problems_and_fails(engine_image: str, workspace: Workspace) -> None:
    ws = workspace
    (ws.repo / "pipelines" / "broken.yaml").write_text("name: Broken\nsteps: []\n")
    _give_to_runner(ws.repo)
    done = run_action(engine_image, ws, "pull_request", {}, command="validate")
    assert done.returncode == 2, done.stderr
    assert "::error file=pipelines/broken.yaml,line=1::" in done.stderr
    assert ws.outputs() == {"run-ids": [""], "status": ["failed"]}
    assert_owned_by_runner(ws)


@pytest.mark.docker
@pytest.mark.slow
def test_approve_checks_the_step_and_continues_the_run(
    engine_image: str, workspace: Workspace
) -> None:
    ws = workspace
    pipeline = f"gated-{ws.name}"
    paused = run_action(engine_image, ws, "workflow_dispatch", {}, command="run", pipeline=pipeline)
    assert paused.returncode == 0, paused.stderr
    assert ws.outputs()["status"] == ["waiting_approval"]
    [run_id] = ws.outputs()["run-ids"]

    wrong = run_action(
        engine_image, ws, "workflow_dispatch", {}, command="approve", run_id=run_id, step="build"
    )
    assert wrong.returncode == 2
    assert "step 'build'" in wrong.stderr and "waiting: ship" in wrong.stderr

    approved = run_action(
        engine_image, ws, "workflow_dispatch", {}, command="approve", run_id=run_id, step="ship"
    )
    assert approved.returncode == 0, approved.stderr
    assert ws.outputs()["status"][-1] == "succeeded"
    assert ws.outputs()["run-ids"][-1] == run_id
    manifest = json.loads(ws.results(f"runs/{pipeline}/{run_id}/manifest.json"))
    assert manifest["steps"]["ship"]["status"] == "succeeded"
    assert_owned_by_runner(ws)


RELEASE = """\
name: {name}
defaults: {{image: "{image}"}}
steps:
  - name: train
    run: 'head -c 16 /dev/urandom | od -An -tx1 | tr -d " \\n" > /sluice/outputs/model.txt'
  - name: deploy
    needs: [train]
    approval: true
    run: 'echo "deploying $(cat /sluice/inputs/train/model.txt)"'
"""


@pytest.mark.docker
@pytest.mark.slow
def test_paused_in_one_job_and_approved_in_another_with_an_s3_store(
    engine_image: str, workspace: Workspace, busybox_image: str, s3_bucket: S3Bucket
) -> None:
    """Issue 13, scenario 1 through the Action: job 1 runs on one runner and pauses; job 2, on
    a fresh runner (another clone of the origin, nothing else shared but the S3 server),
    approves, and `deploy` reads `train`'s model from S3."""
    a = workspace
    name, store = f"release-{a.name}", f"{s3_bucket.url}/runs"
    a.commit("sluice.yaml", f"artifacts: {store}\n")
    a.commit("pipelines/release.yaml", RELEASE.format(name=name, image=busybox_image))
    paused = run_action(
        engine_image, a, "workflow_dispatch", {}, s3_env=s3_bucket.env, command="run", pipeline=name
    )
    assert paused.returncode == 0, paused.stderr
    assert a.outputs()["status"] == ["waiting_approval"]
    assert "outputs will not last" not in paused.stderr  # a lasting store: no warning
    [run_id] = a.outputs()["run-ids"]
    recorded = json.loads(a.results(f"runs/{name}/{run_id}/manifest.json"))
    model = recorded["steps"]["train"]["outputs"]["model.txt"]
    assert model["store"] == store and model["uri"] == f"{store}/{model['key']}"
    assert "file:" not in json.dumps(recorded["steps"])  # no path of the runner that made it
    import fsspec  # lazy: only this test needs the S3 client in the test process

    s3 = fsspec.filesystem("s3", skip_instance_cache=True)  # the AWS variables reach moto
    content = s3.cat_file(model["uri"]).decode()  # in S3, not on runner A
    assert len(content) == 32

    b = Workspace(a.root / "b", a.name, shared_origin=a.origin)
    git(a.root, "clone", "-q", "-b", "main", str(a.origin), str(b.repo))
    _runner_folders(b)
    approved = run_action(
        engine_image,
        b,
        "workflow_dispatch",
        {},
        s3_env=s3_bucket.env,
        command="approve",
        run_id=run_id,
    )
    assert approved.returncode == 0, approved.stderr
    assert b.outputs()["status"] == ["succeeded"] and b.outputs()["run-ids"] == [run_id]
    manifest = json.loads(b.results(f"runs/{name}/{run_id}/manifest.json"))
    assert manifest["status"] == "succeeded"
    assert manifest["steps"]["deploy"]["status"] == "succeeded"
    assert f"deploying {content}" in b.results(f"runs/{name}/{run_id}/logs/deploy.1.log")
    assert not (b.repo / ".sluice" / "artifacts").exists()  # B never had a local store
    assert_owned_by_runner(b)


# --- `sluice trigger` through the Action, with GitHub-shaped events ----------------------------


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "kind", "greeting"),
    [
        ("push", "push", "hi"),
        ("workflow_dispatch", "workflow_dispatch", "hey"),
        ("webhook", "webhook", "yo"),
        ("sluice-run", "repository_dispatch", "hello"),
        ("sluice-drift", "drift", "hi"),
        ("schedule", "cron", "hi"),
    ],
)
def test_trigger_runs_what_the_event_calls_for(
    engine_image: str, workspace: Workspace, case: str, kind: str, greeting: str
) -> None:
    ws = workspace
    before = git(ws.repo, "rev-parse", "HEAD")
    after = ws.commit("src/app.py", "print('v2')\n")
    where = {"repository": {"full_name": "o/r"}, "sender": {"login": "octocat"}}
    event, payload = {
        "push": ("push", _push_event(ws, before, after)),
        "workflow_dispatch": (
            "workflow_dispatch",
            {
                "ref": "refs/heads/main",
                "inputs": {"pipeline": ws.name, "params": json.dumps({"greeting": "hey"})},
                "workflow": ".github/workflows/sluice.yml",
            },
        ),
        "webhook": (
            "repository_dispatch",
            {"action": f"say-{ws.name}", "client_payload": {"params": {"greeting": "yo"}}},
        ),
        "sluice-run": (
            "repository_dispatch",
            {
                "action": "sluice-run",
                "client_payload": {"pipeline": ws.name, "params": {"greeting": "hello"}},
            },
        ),
        "sluice-drift": (
            "repository_dispatch",
            {
                "action": "sluice-drift",
                "client_payload": {
                    "monitor": f"mon-{ws.name}",
                    "metrics": {"drift_detected": True},
                },
            },
        ),
        "schedule": ("schedule", {"schedule": "*/15 * * * *"}),
    }[case]
    payload = {**payload, **where} if event != "schedule" else payload
    done = run_action(engine_image, ws, event, payload)  # command: trigger, the default
    assert done.returncode == 0, done.stderr

    outputs = ws.outputs()
    assert outputs["status"] == ["succeeded"], "outputs written once, by trigger or the Action"
    [run_ids] = outputs["run-ids"]
    [run_id] = run_ids.split()
    manifest = ws.manifest(run_id)
    assert manifest["trigger"]["kind"] == kind
    assert manifest["commit"] == after
    assert f"greeting={greeting}" in ws.results(f"runs/{ws.name}/{run_id}/logs/greet.1.log")
    assert ws.name in ws.summary()
    assert_owned_by_runner(ws)


@pytest.mark.docker
def test_a_push_that_touches_no_watched_path_runs_nothing(
    engine_image: str, workspace: Workspace
) -> None:
    ws = workspace
    before = git(ws.repo, "rev-parse", "HEAD")
    after = ws.commit("README.md", "docs only\n")
    payload = _push_event(ws, before, after)
    payload["commits"][0]["modified"] = payload["head_commit"]["modified"] = ["README.md"]
    done = run_action(engine_image, ws, "push", payload)
    assert done.returncode == 0, done.stderr
    assert ws.outputs() == {"run-ids": [""], "status": ["skipped"]}
    assert_owned_by_runner(ws)
